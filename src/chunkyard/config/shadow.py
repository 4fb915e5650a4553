"""`shadow.json` (user passwords) and `token.shadow` (API token secrets): JSON maps from an
auth id to a hash (see `hashing`), as PBS keeps them (PBS: a crypt(3) hash; here: scrypt).

Written one entry per line with sorted keys, so a diff shows which entry changed and errors
can name a line. Error messages never quote a stored value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from chunkyard.config.errors import ConfigError
from chunkyard.config.hashing import parse_hash
from chunkyard.config.section import decode
from chunkyard.config.types import ws_strip
from chunkyard.errors import InvalidName
from chunkyard.names import Authid

SHADOW_FILENAME = "shadow.json"
TOKEN_SHADOW_FILENAME = "token.shadow"


@dataclass(frozen=True)
class ShadowFormat:
    """One of the two files: its name and which auth ids it may hold."""

    filename: str
    tokens: bool  # True: token ids only; False: user ids only

    def check_key(self, key: str) -> str:
        try:
            authid = Authid.parse(key)
        except InvalidName as e:
            raise ValueError(str(e)) from None
        if self.tokens and authid.token is None:
            raise ValueError(f"{key!r} is not a token id")
        if not self.tokens and authid.token is not None:
            raise ValueError(f"{key!r} is a token id, not a user id")
        return str(authid)

    def parse(self, raw: bytes, filename: str | None = None) -> dict[str, str]:
        """The map; ConfigError naming the file (and the line when it can be told)."""
        name = filename or self.filename
        text = decode(raw, name)
        if not ws_strip(text):
            return {}
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as e:
            raise self._fail(name, e.lineno, f"invalid JSON ({e.msg})") from None
        except _Duplicate as e:
            raise self._fail(name, _line_of(text, e.key), f"duplicate entry {e.key!r}"
                             ) from None
        except (RecursionError, ValueError):  # nesting, or an over-long integer
            raise self._fail(name, None, "invalid JSON") from None
        if not isinstance(data, dict):
            raise self._fail(name, None, "expected a JSON object")
        out: dict[str, str] = {}
        for key, value in data.items():
            try:
                self.check_key(key)
                if not isinstance(value, str):
                    raise ValueError("the value is not a string")
                parse_hash(value)
            except ValueError as e:
                raise self._fail(name, _line_of(text, key), f"entry {key!r}: {e}") from None
            out[key] = value
        return out

    def write(self, data: dict[str, str]) -> bytes:
        for key, value in data.items():
            try:
                self.check_key(key)
                parse_hash(value)
            except ValueError as e:
                raise ConfigError(f"writing '{self.filename}' failed: entry {key!r}: {e}"
                                  ) from None
        return (json.dumps(dict(sorted(data.items())), indent=1) + "\n").encode("utf-8")

    @staticmethod
    def _fail(name: str, line: int | None, message: str) -> ConfigError:
        where = f": line {line} - " if line else ": "
        return ConfigError(f"parsing '{name}' failed{where}{message}")


SHADOW = ShadowFormat(SHADOW_FILENAME, tokens=False)
TOKEN_SHADOW = ShadowFormat(TOKEN_SHADOW_FILENAME, tokens=True)


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _line_of(text: str, key: str) -> int | None:
    """The line where `key` appears as a JSON string, if it can be found."""
    at = text.find(json.dumps(key))
    if at < 0:
        at = text.find(json.dumps(key, ensure_ascii=False))
    return text.count("\n", 0, at) + 1 if at >= 0 else None

