"""Tokens and passwords: the edits that span user.cfg and a shadow file, in PBS's order.

A token's secret goes to token.shadow before its section goes to user.cfg (both under the
user.cfg lock), as PBS does: a crash in between leaves an unused hash, never a token without
a secret. Verification does the same scrypt work whether or not the account exists.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

from chunkyard.config.errors import ConfigError
from chunkyard.config.hashing import hash_secret, new_token_secret, verify_secret
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.store import ConfigDir
from chunkyard.config.types import Value
from chunkyard.config.user import auth_active, tokens_of
from chunkyard.errors import AlreadyExists, NotFound
from chunkyard.names import Authid


def _token_id(tokenid: Authid) -> str:
    if tokenid.token is None:
        raise ConfigError(f"'{tokenid}' is not an API token id (user@realm!token)")
    return str(tokenid)


def create_token(cfg: ConfigDir, tokenid: Authid, *, comment: str | None = None,
                 enable: bool | None = None, expire: int | None = None) -> str:
    """Add an API token to an existing user; returns its secret (shown once, stored hashed)."""
    key = _token_id(tokenid)
    secret = new_token_secret()

    def edit(users: SectionConfig) -> None:
        owner = users.get(tokenid.userid)
        if owner is None or owner.type != "user":
            raise NotFound(f"no such user '{tokenid.userid}'")
        if key in users:
            raise AlreadyExists(f"token '{key}' already exists")
        props: dict[str, Value] = {}
        if comment is not None:
            props["comment"] = comment
        if enable is not None:
            props["enable"] = enable
        if expire is not None:
            props["expire"] = expire
        users.add(Section("token", key, props))
        cfg.update_token_shadow(lambda secrets: {**secrets, key: hash_secret(secret)})

    cfg.update_user(edit)
    return secret


def regenerate_token_secret(cfg: ConfigDir, tokenid: Authid) -> str:
    """Give an existing token a new secret; the old one stops working at once."""
    key = _token_id(tokenid)
    secret = new_token_secret()

    def edit(users: SectionConfig) -> None:
        users.lookup("token", key)
        cfg.update_token_shadow(lambda secrets: {**secrets, key: hash_secret(secret)})

    cfg.update_user(edit)
    return secret


def delete_token(cfg: ConfigDir, tokenid: Authid) -> None:
    """Remove a token's section and secret (its ACL entries are the caller's to remove)."""
    key = _token_id(tokenid)

    def edit(users: SectionConfig) -> None:
        users.lookup("token", key)
        users.remove(key)
        cfg.update_token_shadow(lambda secrets: {k: v for k, v in secrets.items() if k != key})

    cfg.update_user(edit)


def verify_token(cfg: ConfigDir, tokenid: Authid, secret: str) -> bool:
    """True if the token and its user exist, are enabled and unexpired, and `secret` matches."""
    accounts = ConfigAccounts(cfg)
    matches = accounts.verify_token_secret(tokenid, secret)  # first: same work either way
    return matches and accounts.is_active(tokenid, int(time.time()))


def set_password(cfg: ConfigDir, userid: Authid, password: str) -> None:
    """Store a password hash for `userid` (the pbs realm's passwords live in shadow.json)."""
    if userid.token is not None:
        raise ConfigError(f"'{userid}' is a token id; tokens have secrets, not passwords")
    if not password:
        raise ConfigError("the password must not be empty")
    hashed = hash_secret(password)
    cfg.update_shadow(lambda shadow: {**shadow, str(userid): hashed})


def remove_password(cfg: ConfigDir, userid: Authid) -> None:
    cfg.update_shadow(lambda shadow: {k: v for k, v in shadow.items() if k != str(userid)})


def verify_password(cfg: ConfigDir, userid: Authid, password: str) -> bool:
    """True if `userid` is an active user whose stored password is `password`."""
    accounts = ConfigAccounts(cfg)
    matches = accounts.verify_password(userid, password)  # first: same work either way
    return matches and accounts.is_active(userid, int(time.time()))


def delete_user(cfg: ConfigDir, userid: Authid) -> list[str]:
    """Remove a user, its tokens, their secrets and its password; returns the removed ids.
    (ACL entries are the caller's to remove, under the acl.cfg lock.)"""
    if userid.token is not None:
        raise ConfigError(f"'{userid}' is a token id, not a user id")
    removed: list[str] = []

    def edit(users: SectionConfig) -> None:
        users.lookup("user", userid.userid)
        ids = [s.id for s in tokens_of(users, userid.userid)]
        for section_id in [userid.userid, *ids]:
            users.remove(section_id)
        removed[:] = [userid.userid, *ids]
        cfg.update_token_shadow(lambda secrets: {k: v for k, v in secrets.items()
                                                 if k not in ids})
        remove_password(cfg, userid)

    cfg.update_user(edit)
    return removed


class ConfigAccounts:
    """The user and token database over a `ConfigDir`, in the shape the server's
    authentication asks for (`is_active`, `verify_password`, `verify_token_secret`).

    The verify methods check the secret only; `is_active` checks enable/expire (a token's user
    too), so the caller can tell "wrong secret" from "disabled account" if it wants to."""

    def __init__(self, cfg: ConfigDir) -> None:
        self.cfg = cfg

    def is_active(self, authid: Authid, now: int) -> bool:
        users, _ = self.cfg.read_user()
        return auth_active(users, authid, now)

    def verify_password(self, userid: Authid, password: str) -> bool:
        shadow, _ = self.cfg.read_shadow()
        stored = shadow.get(str(userid)) if userid.token is None else None
        return verify_secret(password, stored)

    def verify_token_secret(self, tokenid: Authid, secret: str) -> bool:
        """Token secrets are checked on every API call, and the memory-hard hash costs tens of
        milliseconds; a secret verified once against the stored hash is remembered (its SHA-256,
        keyed by that hash, so a regenerated or deleted token is checked afresh). Token secrets
        are random UUIDs, so their SHA-256 in memory reveals nothing usable."""
        secrets, _ = self.cfg.read_token_shadow()
        stored = secrets.get(str(tokenid)) if tokenid.token is not None else None
        if stored is None:
            return verify_secret(secret, stored)  # the same work as a real check
        key = (stored, hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())
        with _VERIFIED_LOCK:
            if key in _VERIFIED:
                _VERIFIED.move_to_end(key)
                return True
        if not verify_secret(secret, stored):
            return False
        with _VERIFIED_LOCK:
            _VERIFIED[key] = None
            while len(_VERIFIED) > _VERIFIED_MAX:
                _VERIFIED.popitem(last=False)
        return True


_VERIFIED: OrderedDict[tuple[str, bytes], None] = OrderedDict()
_VERIFIED_LOCK = threading.Lock()
_VERIFIED_MAX = 1024
