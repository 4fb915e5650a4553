"""PBS's section-config files (proxmox-section-config): parse, validate, write.

    datastore: store1
    <TAB>path /backup/store1
    <TAB>comment My store

    datastore: store2
    <TAB>path /mnt/x

Reading follows proxmox-section-config's default syntax exactly:
- a header is a line starting with an alphabetic character, split at the first `:` into type
  and id (both trimmed); the type must be one the schema knows, the id must pass its check;
- a property line starts with whitespace and is split at the first whitespace run into key and
  value (both trimmed); a property line without a value is a syntax error;
- a blank line ends a section; a header may only follow a blank line (or the start);
- properties must be in the schema, each at most once, and required ones present.
Two additions, both refusing what PBS would accept silently or never write: an id may appear
only once (PBS would keep the last section and write it twice), and lines whose first
non-blank character is `#` are comments (PBS reads none; a rewrite drops them).

Writing is PBS's too: sections in their order, one blank line between them, a header
`type: id`, then `<TAB>key value` lines sorted by key (PBS serialises through a sorted JSON
map), booleans as `true`/`false`. Every value is validated on the way out, so nothing is
written that would not read back as the same configuration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from chunkyard.config.errors import ConfigError
from chunkyard.config.types import WHITE_SPACE, FieldType, Prop, Value, has_control, ws_strip
from chunkyard.errors import NotFound


@dataclass(frozen=True)
class SectionType:
    """A section type (`datastore`, `user`, `token`): how its id and properties look.

    `check` validates a whole section after its properties parsed (cross-property rules)."""

    name: str
    id_type: FieldType
    properties: Mapping[str, Prop]
    description: str = ""
    check: Callable[[str, Mapping[str, Value]], None] | None = None


@dataclass(frozen=True)
class SectionSchema:
    """The section types one file may hold; `filename` names the file in messages."""

    filename: str
    types: Mapping[str, SectionType]

    def type_of(self, name: str) -> SectionType:
        try:
            return self.types[name]
        except KeyError:
            raise ConfigError(f"{self.filename}: unknown section type {name!r}") from None


@dataclass
class Section:
    """One section: its type, its id and its properties (the id is not among them)."""

    type: str
    id: str
    props: dict[str, Value] = field(default_factory=dict)


class SectionConfig:
    """The sections of one file in their order, by id (ids are unique across types)."""

    def __init__(self, sections: list[Section] | None = None) -> None:
        self._sections: dict[str, Section] = {}
        for section in sections or []:
            self.add(section)

    def __iter__(self) -> Iterator[Section]:
        return iter(list(self._sections.values()))

    def __len__(self) -> int:
        return len(self._sections)

    def __contains__(self, section_id: object) -> bool:
        return section_id in self._sections

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SectionConfig):
            return NotImplemented
        return list(self._sections.values()) == list(other._sections.values())

    def __repr__(self) -> str:
        return f"SectionConfig({list(self._sections.values())!r})"

    def get(self, section_id: str) -> Section | None:
        return self._sections.get(section_id)

    def lookup(self, type_name: str, section_id: str) -> Section:
        """The section `section_id` of type `type_name`: NotFound if there is none,
        ConfigError if it has another type (PBS's words in both)."""
        section = self._sections.get(section_id)
        if section is None:
            raise NotFound(f"no such {type_name} '{section_id}'")
        if section.type != type_name:
            raise ConfigError(f"got unexpected type '{section.type}' for {type_name} "
                              f"'{section_id}'")
        return section

    def of_type(self, type_name: str) -> list[Section]:
        return [s for s in self._sections.values() if s.type == type_name]

    def add(self, section: Section) -> None:
        """Append a new section; ConfigError if its id is taken."""
        if section.id in self._sections:
            raise ConfigError(f"duplicate section id '{section.id}'")
        self._sections[section.id] = section

    def put(self, section: Section) -> None:
        """Insert or replace (keeping the replaced section's place)."""
        self._sections[section.id] = section

    def remove(self, section_id: str) -> bool:
        return self._sections.pop(section_id, None) is not None

    def copy(self) -> SectionConfig:
        return SectionConfig([Section(s.type, s.id, {k: dict(v) if isinstance(v, dict) else v
                                                     for k, v in s.props.items()})
                              for s in self._sections.values()])


def digest(raw: bytes) -> str:
    """PBS's `ConfigDigest`: hex SHA-256 of the file's bytes, as read (a missing file is b"")."""
    return hashlib.sha256(raw).hexdigest()


def decode(raw: bytes, filename: str) -> str:
    """The file as text; ConfigError naming the line of the first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"parsing '{filename}' failed: line {line} - not valid UTF-8") from None


def text_lines(text: str) -> list[str]:
    """Rust's `str::lines`: split at `\\n` only, drop one `\\r` before it, no final empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _is_blank(line: str) -> bool:
    return ws_strip(line) == ""


def _is_comment(line: str) -> bool:
    return line.lstrip(WHITE_SPACE).startswith("#")


def _header(line: str) -> tuple[str, str] | None:
    if not line or not line[0].isalpha() or ":" not in line:
        return None
    type_name, section_id = line.split(":", 1)
    type_name = ws_strip(type_name)
    return (type_name, ws_strip(section_id)) if type_name else None


def _property(line: str) -> tuple[str, str] | None:
    if not line or line[0] not in WHITE_SPACE:
        return None
    rest = line.lstrip(WHITE_SPACE)
    for i, c in enumerate(rest):
        if c in WHITE_SPACE:
            key, value = ws_strip(rest[:i]), ws_strip(rest[i + 1:])
            return (key, value) if key else None
    return None  # a key without a value


class _Parser:
    """One pass over the lines, PBS's two states: before a header, inside a section."""

    def __init__(self, schema: SectionSchema, filename: str) -> None:
        self.schema = schema
        self.filename = filename
        self.config = SectionConfig()
        self.current: tuple[SectionType, str, dict[str, Value], int] | None = None

    def fail(self, line_no: int, message: str) -> ConfigError:
        return ConfigError(f"parsing '{self.filename}' failed: line {line_no} - "
                           f"{message}")

    def feed(self, line_no: int, line: str) -> None:
        if _is_comment(line):
            return
        if self.current is None:
            if _is_blank(line):
                return
            self.start(line_no, line)
        elif _is_blank(line):
            self.finish()
        else:
            self.prop(line_no, line)

    def start(self, line_no: int, line: str) -> None:
        header = _header(line)
        if header is None:
            raise self.fail(line_no, "syntax error (expected header)")
        type_name, section_id = header
        section_type = self.schema.types.get(type_name)
        if section_type is None:
            raise self.fail(line_no, f"unknown section type '{type_name}'")
        try:
            section_type.id_type.parse(section_id)
        except ValueError as e:
            raise self.fail(line_no, f"syntax error in section identifier: {e}") from None
        if section_id in self.config:
            raise self.fail(line_no, f"duplicate section id '{section_id}'")
        self.current = (section_type, section_id, {}, line_no)

    def prop(self, line_no: int, line: str) -> None:
        assert self.current is not None
        section_type, _, props, _ = self.current
        kv = _property(line)
        if kv is None:
            raise self.fail(line_no, "syntax error (expected section properties)")
        key, text = kv
        prop = section_type.properties.get(key)
        if prop is None:
            raise self.fail(line_no, f"unknown property '{key}'")
        if key in props:
            raise self.fail(line_no, f"duplicate property '{key}'")
        try:
            props[key] = prop.type.parse(text)
        except ValueError as e:
            raise self.fail(line_no, f"property '{key}': {e}") from None

    def finish(self) -> None:
        if self.current is None:
            return
        section_type, section_id, props, header_line = self.current
        try:
            check_section(section_type, section_id, props)
        except ValueError as e:
            raise self.fail(header_line, f"section '{section_id}': {e}") from None
        self.config.add(Section(section_type.name, section_id, props))
        self.current = None


def check_section(section_type: SectionType, section_id: str, props: Mapping[str, Value]
                  ) -> None:
    """Required properties and the type's own check; ValueError with the reason."""
    for key, prop in section_type.properties.items():
        if prop.required and key not in props:
            raise ValueError(f"property '{key}' is missing and it is not optional.")
    if section_type.check is not None:
        section_type.check(section_id, props)


def parse_text(schema: SectionSchema, text: str, filename: str | None = None) -> SectionConfig:
    """Parse a whole file; ConfigError naming the file (`filename`, else the schema's) and
    the line on the first problem."""
    parser = _Parser(schema, filename or schema.filename)
    line_no = 0
    for line_no, line in enumerate(text_lines(text), start=1):
        parser.feed(line_no, line)
    parser.finish()
    return parser.config


def parse(schema: SectionSchema, raw: bytes, filename: str | None = None) -> SectionConfig:
    name = filename or schema.filename
    return parse_text(schema, decode(raw, name), name)


def write_text(schema: SectionSchema, config: SectionConfig) -> str:
    """The file's text; ConfigError ("writing 'x' failed: ...") if any value is invalid."""
    out: list[str] = []
    for section in config:
        try:
            out.append(_format_section(schema, section))
        except ValueError as e:
            raise ConfigError(f"writing '{schema.filename}' failed: {e}") from None
    return "\n".join(out)


def write(schema: SectionSchema, config: SectionConfig) -> bytes:
    return write_text(schema, config).encode("utf-8")


def _format_section(schema: SectionSchema, section: Section) -> str:
    section_type = schema.types.get(section.type)
    if section_type is None:
        raise ValueError(f"section '{section.id}': unknown section type '{section.type}'")
    if not isinstance(section.id, str):
        raise ValueError(f"section id {section.id!r} is not a string")
    if has_control(section.id):
        raise ValueError("detected unexpected control character in section ID.")
    bad = [key for key in section.props if not isinstance(key, str)]
    if bad:
        raise ValueError(f"section '{section.id}': property name {bad[0]!r} is not a string")
    try:
        section_type.id_type.parse(section.id)
    except ValueError as e:
        raise ValueError(f"syntax error in section identifier: {e}") from None
    lines = [f"{section.type}: {section.id}\n"]
    for key in sorted(section.props):
        prop = section_type.properties.get(key)
        if prop is None:
            raise ValueError(f"section '{section.id}': unknown property '{key}'")
        try:
            text = prop.type.format(section.props[key])
        except ValueError as e:
            raise ValueError(f"section '{section.id}': property '{key}': {e}") from None
        lines.append(f"\t{key} {text}\n")
    try:
        check_section(section_type, section.id, section.props)
    except ValueError as e:
        raise ValueError(f"section '{section.id}': {e}") from None
    return "".join(lines)


def effective(section: Section, section_type: SectionType, key: str) -> Value | None:
    """The value of `key` in `section`, or the schema's default when it is not set."""
    if key in section.props:
        return section.props[key]
    return section_type.properties[key].default
