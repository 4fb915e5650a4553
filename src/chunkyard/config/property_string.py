"""PBS property strings: `key=value,key="quoted, value"` inside one config value.

`tuning`, `maintenance-mode`, `backend` and `notify` of datastore.cfg are property strings
(proxmox-schema `ApiStringFormat::PropertyString`). A value may be double-quoted, with `\\"` and
`\\\\` as escapes, to hold commas; a schema may name a default key whose `key=` may be left out.
Parsed values keep their order, because PBS stores these strings as the client sent them and a
rewrite should not reorder them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chunkyard.config.types import Prop, Scalar, Value, has_control

_NEEDS_QUOTES = frozenset(',"\\')


def split_property_string(text: str) -> list[tuple[str | None, str]]:
    """The `(key, value)` items of `text`, unquoted; key None for a bare value."""
    items: list[tuple[str | None, str]] = []
    i, n = 0, len(text)
    while i < n:
        key: str | None = None
        j = i
        while j < n and text[j] not in ",=\"":
            j += 1
        if j < n and text[j] == "=":
            key = text[i:j]
            if not key:
                raise ValueError(f"empty key at position {i + 1}")
            i = j + 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i)
        else:
            j = i
            while j < n and text[j] not in ',"':
                j += 1
            if j < n and text[j] == '"':
                raise ValueError(f"unexpected '\"' at position {j + 1}")
            value, i = text[i:j], j
            if key is None and not value:
                raise ValueError(f"empty item at position {i + 1}")
        items.append((key, value))
        if i < n:  # text[i] is ','
            i += 1
            if i == n:
                raise ValueError("trailing ','")
    return items


def _quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n or text[i + 1] not in '"\\':
                raise ValueError(f"invalid escape in quoted value at position {i + 1}")
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            i += 1
            if i < n and text[i] != ",":
                raise ValueError(f"expected ',' after the quoted value at position {i + 1}")
            return "".join(out), i
        else:
            out.append(c)
            i += 1
    raise ValueError("unterminated quoted value")


def quote_value(text: str) -> str:
    """`text` as it appears after `key=`: quoted only when it must be."""
    if not any(c in _NEEDS_QUOTES for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PropertyStringType:
    """A property string with a schema: known keys only, each once, required ones present."""

    schema: Mapping[str, Prop]
    default_key: str | None = None
    what: str = "property string"

    def parse(self, text: str) -> dict[str, Scalar]:
        if has_control(text):
            raise ValueError("contains a control character")
        values: dict[str, Scalar] = {}
        for key, raw in split_property_string(text):
            if key is None:
                if self.default_key is None:
                    raise ValueError(f"value {raw!r} has no key")
                key = self.default_key
            prop = self.schema.get(key)
            if prop is None:
                raise ValueError(f"unknown key {key!r} (known: {', '.join(self.schema)})")
            if key in values:
                raise ValueError(f"duplicate key {key!r}")
            try:
                parsed = prop.type.parse(raw)
            except ValueError as e:
                raise ValueError(f"key {key!r}: {e}") from None
            if isinstance(parsed, dict):
                raise ValueError(f"key {key!r}: nested property strings are not supported")
            values[key] = parsed
        self._required(values)
        return values

    def format(self, value: object) -> str:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected key/value pairs, got {type(value).__name__}")
        parts: list[str] = []
        for key, item in value.items():
            prop = self.schema.get(key) if isinstance(key, str) else None
            if prop is None:
                raise ValueError(f"unknown key {key!r} (known: {', '.join(self.schema)})")
            try:
                text = prop.type.format(item)
            except ValueError as e:
                raise ValueError(f"key {key!r}: {e}") from None
            parts.append(f"{key}={quote_value(text)}")
        self._required(value)
        return ",".join(parts)

    def _required(self, values: Mapping[str, object]) -> None:
        for key, prop in self.schema.items():
            if prop.required and key not in values:
                raise ValueError(f"key {key!r} is required")

    def describe(self) -> str:
        return self.what


def effective(values: Mapping[str, Value] | None, schema: Mapping[str, Prop], key: str
              ) -> Value | None:
    """The value of `key`, or its schema default when it is not set."""
    if values is not None and key in values:
        return values[key]
    return schema[key].default
