"""`/access/users` (users and their API tokens) and `/access/password` (PBS `api2/access/
user.rs`, `api2/access/mod.rs`).

Privileges are asked for on `/access/users`: Sys.Audit to read others, Permissions.Modify to
change others. A user may always read and edit itself and manage its own tokens (PBS's
`Permission::UserParam`, which an API token never matches: a token needs the privileges),
but not its own `enable`/`expire` (chunkyard's rule: a user cannot re-enable itself).
Passwords exist for the `pbs` realm only (shadow.json); other realms are refused.

Every edit is one `update_user` under the user.cfg lock, with the optional `digest` checked
there; secondary files follow in `ConfigDir`'s lock order (acl.cfg, token.shadow,
shadow.json) inside it, before user.cfg is written. Deleting a user or a token removes its
ACL entries too (a user: its tokens' as well); the secret of a new or regenerated token is
returned once and stored hashed.
"""

from __future__ import annotations

import re
from typing import Any

from chunkyard.config.accounts import remove_password
from chunkyard.config.acl import AclConfig
from chunkyard.config.errors import ConfigError
from chunkyard.config.hashing import hash_secret, new_token_secret
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.types import COMMENT, NAME_FIELD, Value
from chunkyard.config.user import tokens_of
from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.server.app import Call, Endpoint, Result
from chunkyard.server.auth import PermissionDenied, Privilege
from chunkyard.server.endpoints.common import SAFE_ID_RE, bool_param
from chunkyard.server.params import ApiError, Param

USERS_ACL_PATH = "/access/users"
PBS_REALM = "pbs"

DIGEST = Param(pattern=re.compile(r"[0-9a-fA-F]{64}"))


def parse_authid(text: str) -> Authid:
    """An auth id exactly as written: no `,` (acl.cfg's separator), and nothing
    `Authid.parse` would drop (its `$` lets a trailing newline through)."""
    if "," in text:
        raise ValueError(f"auth id {text!r} contains ','")
    authid = Authid.parse(text)
    if str(authid) != text:
        raise ValueError(f"auth id {text!r} is not of the form user@realm[!token]")
    return authid


def parse_userid(text: str) -> Authid:
    """A user id (`name@realm`, no token part)."""
    authid = parse_authid(text)
    if authid.token is not None:
        raise ValueError(f"'{text}' is an API token id, not a user id")
    return authid


def _check_text(kind: Any) -> Any:
    def check(text: str) -> str:
        value: str = kind.parse(text)
        return value

    return check


USERID = Param(optional=False, max_length=64, check=parse_userid)
TOKEN_NAME = Param(optional=False, min_length=1, max_length=64, pattern=SAFE_ID_RE)
PASSWORD = Param(min_length=5, max_length=64)
COMMENT_PARAM = Param(max_length=4096, check=_check_text(COMMENT))
NAME_PARAM = Param(check=_check_text(NAME_FIELD))
ENABLE = Param("boolean")
EXPIRE = Param("integer", minimum=0)

USER_FIELDS = ("comment", "firstname", "lastname", "email")
USER_DELETABLE = frozenset(USER_FIELDS)
TOKEN_DELETABLE = frozenset({"comment"})


def delete_list(allowed: frozenset[str]) -> Param:
    def check(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        for name in names:
            if name not in allowed:
                raise ValueError(f"value '{name}' is not a deletable property "
                                 f"({', '.join(sorted(allowed))})")
        return names

    return Param("array", default=[], check=check)


def flat_deletes(value: list[Any] | None) -> set[str]:
    out: set[str] = set()
    for item in value or []:
        out.update(item if isinstance(item, list) else [item])
    return out


# -- privilege rules --------------------------------------------------------------------------

def is_self(call: Call, userid: Authid) -> bool:
    """The caller is the user itself (a token of the user is not)."""
    return call.caller.token is None and call.caller.userid == userid.userid


def has_priv(call: Call, priv: Privilege, path: str = USERS_ACL_PATH) -> bool:
    return bool(call.acl.privileges(call.caller, path) & priv)


def require(call: Call, priv: Privilege, userid: Authid | None = None) -> None:
    """`priv` on /access/users, or (with `userid`) being that user."""
    if userid is not None and is_self(call, userid):
        return
    if not has_priv(call, priv):
        name = "Sys.Audit" if priv == Privilege.SYS_AUDIT else "Permissions.Modify"
        raise PermissionDenied(f"missing permissions '{name}' on '{USERS_ACL_PATH}'")


def check_password_change(call: Call, userid: Authid) -> None:
    """PBS `change_password`: tokens never; users for themselves; others with
    Permissions.Modify on /access/users. Only the pbs realm stores passwords."""
    if call.caller.token is not None:
        raise PermissionDenied("API tokens cannot access this API endpoint")
    if not is_self(call, userid) and not has_priv(call, Privilege.PERMISSIONS_MODIFY):
        raise PermissionDenied("you are not authorized to change the password.")
    if userid.realm != PBS_REALM:
        raise ApiError(f"realm '{userid.realm}' does not support changing passwords "
                       "(only 'pbs' users have passwords here)")


def set_password_hash(call: Call, userid: Authid, password: str) -> None:
    hashed = hash_secret(password)
    call.state.config.update_shadow(lambda shadow: {**shadow, userid.userid: hashed})


# -- result shapes -------------------------------------------------------------------------------

def user_entry(section: Section) -> dict[str, Any]:
    return {"userid": section.id, **section.props}


def token_entry(section: Section) -> dict[str, Any]:
    return {"tokenid": section.id, **section.props}


# -- users ---------------------------------------------------------------------------------------

def list_users(call: Call) -> Result:
    users, digest = call.state.config.read_user()
    see_all = has_priv(call, Privilege.SYS_AUDIT)
    own = call.caller.userid
    rows: list[dict[str, Any]] = []
    for section in users.of_type("user"):
        if not see_all and section.id != own:
            continue
        row = user_entry(section)
        if call.params["include_tokens"]:
            tokens = [token_entry(t) for t in tokens_of(users, section.id)]
            if tokens:
                row["tokens"] = tokens
        rows.append(row)
    return Result(rows, {"digest": digest})


def _user_props(params: dict[str, Any]) -> dict[str, Value]:
    props: dict[str, Value] = {}
    comment = params.get("comment")
    if comment is not None and comment.strip():
        props["comment"] = comment.strip()
    if params.get("enable") is False:
        props["enable"] = False
    expire = params.get("expire")
    if expire:
        props["expire"] = expire
    for key in ("firstname", "lastname", "email"):
        if params.get(key) is not None:
            props[key] = params[key]
    return props


def create_user(call: Call) -> None:
    params = call.params
    userid: Authid = params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY)
    password = params["password"]
    if password is not None and userid.realm != PBS_REALM:
        raise ApiError(f"realm '{userid.realm}' does not support passwords here")
    cfg = call.state.config
    props = _user_props(params)

    def edit(users: SectionConfig) -> None:
        if userid.userid in users:
            raise ApiError(f"user '{userid}' already exists.")
        users.add(Section("user", userid.userid, props))
        if password is not None:  # before the user exists, as accounts.set_password
            set_password_hash(call, userid, password)

    cfg.update_user(edit)


def read_user(call: Call) -> Result:
    userid: Authid = call.params["userid"]
    require(call, Privilege.SYS_AUDIT, userid)
    users, digest = call.state.config.read_user()
    return Result(user_entry(users.lookup("user", userid.userid)), {"digest": digest})


def update_user(call: Call) -> None:
    params = call.params
    userid: Authid = params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY, userid)
    modify = has_priv(call, Privilege.PERMISSIONS_MODIFY)
    if not modify and (params["enable"] is not None or params["expire"] is not None):
        raise PermissionDenied("changing 'enable' or 'expire' needs Permissions.Modify on "
                               f"'{USERS_ACL_PATH}'")
    password = params["password"]
    if password is not None:
        check_password_change(call, userid)
    deletes = flat_deletes(params["delete"])

    def edit(users: SectionConfig) -> None:
        section = users.lookup("user", userid.userid)
        props = dict(section.props)
        for key in deletes:
            props.pop(key, None)
        _account_props(params, props)
        for key in ("firstname", "lastname", "email"):
            if params[key] is not None:
                props[key] = params[key]
        if password is not None:
            set_password_hash(call, userid, password)
        users.put(Section("user", section.id, props))

    call.state.config.update_user(edit, params["digest"])


def delete_user(call: Call) -> None:
    userid: Authid = call.params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY)
    cfg = call.state.config

    def edit(users: SectionConfig) -> None:
        users.lookup("user", userid.userid)
        ids = [userid.userid, *(s.id for s in tokens_of(users, userid.userid))]

        def drop_acl(acl: AclConfig) -> None:
            for ugid in ids:
                acl.remove_ugid(ugid)

        cfg.update_acl(drop_acl)
        cfg.update_token_shadow(lambda secrets: {k: v for k, v in secrets.items()
                                                 if k not in ids})
        remove_password(cfg, userid)
        for section_id in ids:
            users.remove(section_id)

    cfg.update_user(edit, call.params["digest"])


# -- tokens --------------------------------------------------------------------------------------

def _tokenid(call: Call) -> Authid:
    userid: Authid = call.params["userid"]
    try:
        return Authid.parse(f"{userid.userid}!{call.params['token_name']}")
    except InvalidName as e:
        raise ApiError(str(e)) from None


def list_tokens(call: Call) -> Result:
    userid: Authid = call.params["userid"]
    require(call, Privilege.SYS_AUDIT, userid)
    users, digest = call.state.config.read_user()
    users.lookup("user", userid.userid)
    rows = [{**token_entry(t), "token-name": Authid.parse(t.id).token}
            for t in tokens_of(users, userid.userid)]
    return Result(rows, {"digest": digest})


def read_token(call: Call) -> Result:
    userid: Authid = call.params["userid"]
    require(call, Privilege.SYS_AUDIT, userid)
    tokenid = _tokenid(call)
    users, digest = call.state.config.read_user()
    return Result(token_entry(users.lookup("token", str(tokenid))), {"digest": digest})


def _account_props(params: dict[str, Any], props: dict[str, Value]) -> dict[str, Value]:
    """`comment`, `enable` and `expire` of a user or token update (unset: removed)."""
    comment = params["comment"]
    if comment is not None:
        if comment.strip():
            props["comment"] = comment.strip()
        else:
            props.pop("comment", None)
    if params["enable"] is not None:
        if params["enable"]:
            props.pop("enable", None)
        else:
            props["enable"] = False
    if params["expire"] is not None:
        if params["expire"] > 0:
            props["expire"] = params["expire"]
        else:
            props.pop("expire", None)
    return props


def _store_secret(call: Call, key: str, secret: str) -> None:
    hashed = hash_secret(secret)
    call.state.config.update_token_shadow(lambda secrets: {**secrets, key: hashed})


def create_token(call: Call) -> dict[str, str]:
    params = call.params
    userid: Authid = params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY, userid)
    tokenid = _tokenid(call)
    key = str(tokenid)
    secret = new_token_secret()

    def edit(users: SectionConfig) -> None:
        users.lookup("user", userid.userid)
        if key in users:
            raise ApiError(f"token '{tokenid.token}' for user '{userid}' already exists.")
        users.add(Section("token", key, _account_props(params, {})))
        _store_secret(call, key, secret)  # the secret before the token, as PBS

    call.state.config.update_user(edit, params["digest"])
    return {"tokenid": key, "value": secret}


def update_token(call: Call) -> dict[str, str] | None:
    params = call.params
    userid: Authid = params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY, userid)
    tokenid = _tokenid(call)
    key = str(tokenid)
    secret = new_token_secret() if params["regenerate"] else None
    deletes = flat_deletes(params["delete"])

    def edit(users: SectionConfig) -> None:
        section = users.lookup("token", key)
        props = dict(section.props)
        for name in deletes:
            props.pop(name, None)
        users.put(Section("token", key, _account_props(params, props)))
        if secret is not None:
            _store_secret(call, key, secret)

    call.state.config.update_user(edit, params["digest"])
    return None if secret is None else {"tokenid": key, "secret": secret}


def delete_token(call: Call) -> None:
    userid: Authid = call.params["userid"]
    require(call, Privilege.PERMISSIONS_MODIFY, userid)
    key = str(_tokenid(call))
    cfg = call.state.config

    def drop_acl(acl: AclConfig) -> None:
        acl.remove_ugid(key)

    def edit(users: SectionConfig) -> None:
        users.lookup("token", key)
        cfg.update_acl(drop_acl)
        cfg.update_token_shadow(lambda secrets: {k: v for k, v in secrets.items()
                                                 if k != key})
        users.remove(key)

    cfg.update_user(edit, call.params["digest"])


# -- /access/password -----------------------------------------------------------------------

def change_password(call: Call) -> None:
    userid: Authid = call.params["userid"]
    check_password_change(call, userid)
    password: str = call.params["password"]

    def edit(users: SectionConfig) -> None:
        users.lookup("user", userid.userid)
        set_password_hash(call, userid, password)

    try:
        call.state.config.update_user(edit)
    except ConfigError as e:  # pragma: no cover - a corrupt user.cfg
        raise ApiError(str(e)) from None


# -- the table --------------------------------------------------------------------------------

USERS = "/access/users"
USER = USERS + "/{userid}"
TOKENS = USER + "/token"
TOKEN = TOKENS + "/{token_name}"

_USER_UPDATE = {
    "comment": COMMENT_PARAM, "enable": ENABLE, "expire": EXPIRE,
    "firstname": NAME_PARAM, "lastname": NAME_PARAM, "email": NAME_PARAM,
}
_TOKEN_UPDATE = {"comment": COMMENT_PARAM, "enable": ENABLE, "expire": EXPIRE,
                 "digest": DIGEST}

ENDPOINTS = [
    Endpoint("GET", USERS, list_users, {"include_tokens": bool_param(False)},
             description="Users (all with Sys.Audit on /access/users, else the caller's)."),
    Endpoint("POST", USERS, create_user, {"userid": USERID, "password": PASSWORD,
                                          **_USER_UPDATE},
             description="Create a user."),
    Endpoint("GET", USER, read_user, {"userid": USERID}, description="Read a user."),
    Endpoint("PUT", USER, update_user, {
        "userid": USERID, "password": PASSWORD, **_USER_UPDATE,
        "delete": delete_list(USER_DELETABLE), "digest": DIGEST,
    }, description="Update a user."),
    Endpoint("DELETE", USER, delete_user, {"userid": USERID, "digest": DIGEST},
             description="Delete a user, its tokens and their ACL entries."),
    Endpoint("GET", TOKENS, list_tokens, {"userid": USERID},
             description="A user's API tokens."),
    Endpoint("GET", TOKEN, read_token, {"userid": USERID, "token_name": TOKEN_NAME},
             description="Read an API token."),
    Endpoint("POST", TOKEN, create_token, {"userid": USERID, "token_name": TOKEN_NAME,
                                           **_TOKEN_UPDATE},
             description="Create an API token; returns its secret (shown once)."),
    Endpoint("PUT", TOKEN, update_token, {
        "userid": USERID, "token_name": TOKEN_NAME, **_TOKEN_UPDATE,
        "regenerate": bool_param(False), "delete": delete_list(TOKEN_DELETABLE),
    }, description="Update an API token (`regenerate`: a new secret, returned once)."),
    Endpoint("DELETE", TOKEN, delete_token, {"userid": USERID, "token_name": TOKEN_NAME,
                                             "digest": DIGEST},
             description="Delete an API token and its ACL entries."),
    Endpoint("PUT", "/access/password", change_password, {
        "userid": USERID, "password": Param(optional=False, min_length=5, max_length=64),
    }, description="Change a user's password (one's own, or others' with "
                   "Permissions.Modify on /access/users)."),
]

__all__ = ["ENDPOINTS", "parse_authid", "parse_userid"]
