"""Value types of configuration properties, with PBS's parsing rules (proxmox-schema).

A type turns the text of a config line into a value (`parse`) and back (`format`); both raise
`ValueError` with a short reason, which the callers wrap with the file, line and key.
`format` validates too, so a value built in code is checked exactly like one read from disk.

Text rules follow Rust, not Python, because PBS reads the same files: whitespace is Unicode
`White_Space` (what `str::trim` strips), control characters are category Cc (`char::is_control`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from chunkyard.config.calendar import MAX_LENGTH as CALENDAR_EVENT_MAX_LENGTH
from chunkyard.config.calendar import CalendarEvent
from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.names.patterns import SAFE_ID as _SAFE_ID_RX

# Rust's `char::is_whitespace` (Unicode White_Space). Python's `str.isspace` differs (it also
# counts U+001C..U+001F), so the set is spelled out.
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INT_RE = re.compile(r"^[+-]?[0-9]+\Z")  # Rust's i64::from_str: no spaces, no underscores
_I64 = (-(2**63), 2**63 - 1)
_TRUE = frozenset({"1", "on", "yes", "true"})
_FALSE = frozenset({"0", "off", "no", "false"})

Scalar = str | int | bool
# A property's value: a scalar, or the key/value pairs of a property string in their order.
Value = Scalar | dict[str, Scalar]


def ws_strip(text: str) -> str:
    """Rust's `str::trim`."""
    return text.strip(WHITE_SPACE)


def has_control(text: str) -> bool:
    """True if `text` has a character Rust's `char::is_control` flags (category Cc)."""
    return _CONTROL_RE.search(text) is not None


class FieldType(Protocol):
    """What a property's value is; `describe` is for error messages and documentation."""

    def parse(self, text: str) -> Value: ...

    def format(self, value: object) -> str: ...

    def describe(self) -> str: ...


def _check_text(value: str) -> None:
    if has_control(value):
        raise ValueError("contains a control character")
    if ws_strip(value) != value:
        raise ValueError("has leading or trailing whitespace, which a rewrite would lose")


@dataclass(frozen=True)
class StrType:
    """A single-line string, optionally with a regex, length bounds and an extra check."""

    pattern: str | None = None
    min_length: int = 0
    max_length: int | None = None
    check: Callable[[str], None] | None = None
    what: str = "string"

    def parse(self, text: str) -> str:
        self._validate(text)
        return text

    def format(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a {self.what}, got {type(value).__name__}")
        self._validate(value)
        return value

    def _validate(self, value: str) -> None:
        _check_text(value)
        if len(value) < self.min_length:
            raise ValueError(f"value must be at least {self.min_length} characters long")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"value must be at most {self.max_length} characters long")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise ValueError(f"value does not match the {self.what} format")
        if self.check is not None:
            self.check(value)

    def describe(self) -> str:
        return self.what


@dataclass(frozen=True)
class IntType:
    """An integer as proxmox-schema parses it (`[+-]digits`), with optional bounds."""

    minimum: int | None = None
    maximum: int | None = None

    def parse(self, text: str) -> int:
        if not _INT_RE.match(text):
            raise ValueError(f"value {text!r} is not an integer")
        return self._validate(int(text))

    def format(self, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        return str(self._validate(value))

    def _validate(self, value: int) -> int:
        low = self.minimum if self.minimum is not None else _I64[0]
        high = self.maximum if self.maximum is not None else _I64[1]
        if not low <= value <= high:
            raise ValueError(f"value must be in the range {low}..{high}")
        return value

    def describe(self) -> str:
        if self.minimum is None and self.maximum is None:
            return "integer"
        low = "" if self.minimum is None else str(self.minimum)
        high = "" if self.maximum is None else str(self.maximum)
        return f"integer ({low}..{high})"


@dataclass(frozen=True)
class BoolType:
    """A boolean: read as 1/on/yes/true or 0/off/no/false (any case), written true/false."""

    def parse(self, text: str) -> bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"value {text!r} is not a boolean")

    def format(self, value: object) -> str:
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {type(value).__name__}")
        return "true" if value else "false"

    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True)
class EnumType:
    """One of a fixed list of strings; `hint` explains a restriction chunkyard adds."""

    values: Sequence[str]
    hint: str = ""

    def parse(self, text: str) -> str:
        if text not in self.values:
            extra = f" ({self.hint})" if self.hint else ""
            raise ValueError(f"value {text!r} is not one of {', '.join(self.values)}{extra}")
        return text

    def format(self, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return self.parse(value)

    def describe(self) -> str:
        return "|".join(self.values)


@dataclass(frozen=True)
class Prop:
    """One property of a schema: its type, whether it is required, its documented default."""

    type: FieldType
    description: str = ""
    required: bool = False
    default: Scalar | None = None


# -- the string types PBS's config files use ----------------------------------------------

def _userid(text: str) -> None:
    try:
        authid = Authid.parse(text)
    except InvalidName as e:
        raise ValueError(str(e)) from None
    if authid.token is not None:
        raise ValueError(f"{text!r} is a token id, not a user id")


def _tokenid(text: str) -> None:
    try:
        authid = Authid.parse(text)
    except InvalidName as e:
        raise ValueError(str(e)) from None
    if authid.token is None:
        raise ValueError(f"{text!r} is a user id, not a token id (user@realm!token)")


def _calendar_event(text: str) -> None:
    CalendarEvent.parse(text)  # ValueError naming the bad part


def _absolute(text: str) -> None:
    if not text.startswith("/"):
        raise ValueError(f"path {text!r} is not absolute")


COMMENT = StrType(what="single-line comment")
SAFE_ID = StrType(pattern=_SAFE_ID_RX, what="identifier (SAFE_ID)")
STORE_NAME = StrType(pattern=_SAFE_ID_RX, min_length=3, max_length=32,
                     what="datastore name")
USERID = StrType(check=_userid, what="user id (name@realm)")
TOKENID = StrType(check=_tokenid, what="token id (name@realm!token)")
ABSOLUTE_PATH = StrType(min_length=1, max_length=4096, check=_absolute, what="absolute path")
# Calendar events (`daily`, `mon..fri 8..17,22:0/15`): PBS's grammar, `config/calendar.py`.
CALENDAR_EVENT = StrType(min_length=1, max_length=CALENDAR_EVENT_MAX_LENGTH,
                         check=_calendar_event, what="calendar event")
NAME_FIELD = StrType(min_length=2, max_length=64, what="single-line name (2..64 characters)")
