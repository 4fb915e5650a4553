"""User and token ids: `name@realm` and `name@realm!token` (spec section 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chunkyard.errors import InvalidName
from chunkyard.names.patterns import SAFE_ID

_AUTHID_RE = re.compile(rf"^([^\s:/\x00-\x1f\x7f]+)@({SAFE_ID})(?:!({SAFE_ID}))?\Z")


@dataclass(frozen=True, slots=True)
class Authid:
    user: str
    realm: str
    token: str | None = None

    @classmethod
    def parse(cls, text: str) -> Authid:
        m = _AUTHID_RE.match(text) if isinstance(text, str) else None
        if not m or len(text) > 64:
            raise InvalidName(f"auth id {text!r} is not of the form user@realm[!token]")
        return cls(m.group(1), m.group(2), m.group(3))

    @property
    def userid(self) -> str:
        return f"{self.user}@{self.realm}"

    def __str__(self) -> str:
        return self.userid + (f"!{self.token}" if self.token else "")
