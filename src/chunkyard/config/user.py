"""`user.cfg`: `user: <name@realm>` and `token: <name@realm!token>` sections (PBS `User`,
`ApiToken`). Secrets are not here: passwords live in `shadow.json`, token secrets in
`token.shadow` (see `shadow`)."""

from __future__ import annotations

import time

from chunkyard.config.section import Section, SectionConfig, SectionSchema, SectionType
from chunkyard.config.types import COMMENT, NAME_FIELD, TOKENID, USERID, BoolType, IntType, Prop
from chunkyard.names import Authid

FILENAME = "user.cfg"

_ENABLE = Prop(BoolType(), "enable the account (default); false disables it", default=True)
_EXPIRE = Prop(IntType(minimum=0), "expiry (seconds since the epoch); 0 means never",
               default=0)

USER = SectionType("user", USERID, {
    "comment": Prop(COMMENT, "comment"),
    "enable": _ENABLE,
    "expire": _EXPIRE,
    "firstname": Prop(NAME_FIELD, "first name"),
    "lastname": Prop(NAME_FIELD, "last name"),
    "email": Prop(NAME_FIELD, "e-mail address"),
}, "a user")


TOKEN = SectionType("token", TOKENID, {
    "comment": Prop(COMMENT, "comment"),
    "enable": _ENABLE,
    "expire": _EXPIRE,
}, "an API token of a user")

SCHEMA = SectionSchema(FILENAME, {"user": USER, "token": TOKEN})


def is_active(section: Section, now: float | None = None) -> bool:
    """PBS's `is_active`: enabled (the default) and not expired (expire 0 never expires)."""
    if section.props.get("enable", True) is False:
        return False
    expire = section.props.get("expire", 0)
    if isinstance(expire, int) and not isinstance(expire, bool) and expire > 0:
        return expire > (time.time() if now is None else now)
    return True


def tokens_of(config: SectionConfig, userid: str) -> list[Section]:
    """The token sections of `userid`, in file order."""
    return [s for s in config.of_type("token") if Authid.parse(s.id).userid == userid]


def auth_active(config: SectionConfig, authid: Authid, now: float | None = None) -> bool:
    """True if the user (and for a token, the token too) exists and is active."""
    user = config.get(authid.userid)
    if user is None or user.type != "user" or not is_active(user, now):
        return False
    if authid.token is None:
        return True
    token = config.get(str(authid))
    return token is not None and token.type == "token" and is_active(token, now)
