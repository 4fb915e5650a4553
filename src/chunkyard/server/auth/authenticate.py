"""Who is calling: a request's ticket or API token, and the password login that issues tickets.

The user and token database is reached through the `Accounts` protocol, so this module needs
no configuration code. Order of checks, as in PBS (`proxmox-auth-api`):

* A ticket cookie, if present, decides (an Authorization header is then ignored): valid
  signature and age, an active user, and for every method but GET a CSRF token for that user.
* Otherwise `Authorization: PBSAPIToken...`: an active token of an active user whose secret
  verifies. Other Authorization schemes count as no credentials, as in PBS.
* Login (`POST /access/ticket`): rate limit first, then an active user, then either a valid
  ticket of the same user as password (ticket renewal) or the password itself.

Every failure raises `AuthError`; its message is for the log, `public_message` for the client.
A uniform delay on failures (PBS sleeps 3 s) belongs to the HTTP layer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.keys import AuthKeys
from chunkyard.server.auth.ratelimit import LoginRateLimiter
from chunkyard.server.auth.tickets import (
    MAX_CREDENTIAL_LENGTH,
    TICKET_PREFIX,
    create_csrf_token,
    create_ticket,
    verify_csrf_token,
    verify_ticket,
)
from chunkyard.server.auth.tokens import find_ticket, is_api_token_header, parse_api_token_header


class NoCredentials(AuthError):
    """The request carries neither a ticket nor an API token (fine for public endpoints)."""


class Accounts(Protocol):
    """The user and token database (user.cfg, token and password shadows)."""

    def is_active(self, authid: Authid, now: int) -> bool:
        """Enabled and not expired; for a token, its user must be active too."""
        ...

    def verify_password(self, userid: Authid, password: str) -> bool: ...

    def verify_token_secret(self, tokenid: Authid, secret: str) -> bool: ...


@dataclass(frozen=True)
class Authenticated:
    authid: Authid
    method: Literal["ticket", "token"]


def authenticate_request(*, method: str, cookie_headers: Iterable[object],
                         authorization: object | None, csrf_token: object | None,
                         keys: AuthKeys, accounts: Accounts,
                         now: float | None = None) -> Authenticated:
    """The caller of one request, from its `Cookie:`, `Authorization:` and
    `CSRFPreventionToken:` headers."""
    stamp = int(time.time() if now is None else now)
    ticket = find_ticket(cookie_headers)
    if ticket is not None:
        userid = verify_ticket(keys.signing, ticket, now=stamp)
        if not accounts.is_active(userid, stamp):
            raise AuthError(f"user account {userid} disabled or expired")
        if method.upper() != "GET":
            if csrf_token is None:
                raise AuthError("missing CSRF prevention token")
            verify_csrf_token(keys.csrf, userid, csrf_token, now=stamp)
        return Authenticated(userid, "ticket")
    if authorization is not None and is_api_token_header(authorization):
        credentials = parse_api_token_header(authorization)
        if not accounts.is_active(credentials.tokenid, stamp):
            raise AuthError(f"API token {credentials.tokenid} or its user disabled or expired")
        if not accounts.verify_token_secret(credentials.tokenid, credentials.secret):
            raise AuthError(f"invalid secret for API token {credentials.tokenid}")
        return Authenticated(credentials.tokenid, "token")
    raise NoCredentials("no authentication credentials provided")


@dataclass(frozen=True)
class LoginResult:
    username: Authid
    ticket: str = field(repr=False)
    csrf_token: str = field(repr=False)

    def to_api(self) -> dict[str, str]:
        """The `data` of PBS's `POST /access/ticket` answer."""
        return {"username": str(self.username), "ticket": self.ticket,
                "CSRFPreventionToken": self.csrf_token}


def _check_login(username: object, password: object, keys: AuthKeys, accounts: Accounts,
                 stamp: int) -> Authid:
    """The user a login is for, if it succeeds; AuthError saying why not (for the log)."""
    if not isinstance(username, str) or not isinstance(password, str):
        raise AuthError("username and password must be strings")
    if not password or len(password) > MAX_CREDENTIAL_LENGTH:
        raise AuthError("password is empty or too long")
    try:
        userid = Authid.parse(username)
    except InvalidName as err:
        raise AuthError(str(err)) from None
    if userid.token is not None:
        raise AuthError("API tokens cannot log in with a password")
    if not accounts.is_active(userid, stamp):
        raise AuthError("user account disabled or expired")
    if password.startswith(TICKET_PREFIX + ":"):
        try:
            ticket_user = verify_ticket(keys.signing, password, now=stamp)
        except AuthError:
            pass  # not a valid ticket: it may still be the password, as in PBS
        else:
            if ticket_user != userid:
                raise AuthError("ticket login failed - wrong userid")
            return userid
    if not accounts.verify_password(userid, password):
        raise AuthError("wrong password")
    return userid


def login(username: object, password: object, source: str, *, keys: AuthKeys,
          accounts: Accounts, limiter: LoginRateLimiter, now: float | None = None) -> LoginResult:
    """Check a password (or a ticket to renew) and issue a new ticket and CSRF token.

    `source` is the client address, for rate limiting. Raises LoginRateLimited before
    looking at the password if the source failed too often, AuthError on any failure.
    """
    stamp = int(time.time() if now is None else now)
    user_key = username[:128] if isinstance(username, str) else repr(type(username))
    limiter.check(source, user_key)
    try:
        userid = _check_login(username, password, keys, accounts, stamp)
    except AuthError as err:
        limiter.record_failure(source, user_key)
        raise AuthError(f"login of {user_key!r} from {source} failed: {err}") from None
    limiter.record_success(source, user_key)
    return LoginResult(userid, create_ticket(keys.signing, userid, now=stamp),
                       create_csrf_token(keys.csrf, userid, now=stamp))
