"""PBS authentication tickets and CSRF prevention tokens (spec section 11.2).

Ticket: `PBS:<userid>:<epoch as %08X>::<base64 (no padding) signature>`, the signature over
`PBS:<userid>:<HEXTIME>`. CSRF token: `<HEXTIME>:<base64 (no padding) HMAC-SHA3-256(secret,
"<HEXTIME>:<userid>:")>`. Both live 2 hours and may be up to 300 s in the future (clock skew
between cluster nodes); older or newer ones are refused.

Every input that is not a well-formed, validly signed, current ticket or token raises
`AuthError`, whatever its type or content. Comparisons of MACs are constant-time.

Where chunkyard is stricter than PBS: a ticket's time must be upper-case hex of 8 to 16
digits (what PBS writes) and its signature covers the exact text received (PBS re-formats the
parsed fields); the user id is not percent-decoded, as a valid user id never needs encoding.
Partial (second factor) tickets (`PBS:!tfa!...`) are refused: chunkyard has no TFA.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time

from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.keys import AuthKey, CsrfSecret

TICKET_PREFIX = "PBS"
TICKET_LIFETIME = 2 * 3600
CLOCK_SKEW = 300
MAX_CREDENTIAL_LENGTH = 4096

_TICKET_RE = re.compile(r"^(PBS:([^:]+):([0-9A-F]{8,16}))::([A-Za-z0-9+/]+)\Z")
_CSRF_RE = re.compile(r"^([0-9A-Fa-f]{1,16}):([A-Za-z0-9+/]+)\Z")


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str, what: str) -> bytes:
    if len(text) % 4 == 1:
        raise AuthError(f"{what}: bad base64 length")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(f"{what}: bad base64") from None
    if _b64encode(data) != text:  # unused bits set, as Rust's base64 refuses too
        raise AuthError(f"{what}: non-canonical base64")
    return data


def credential_text(value: object, what: str) -> str:
    """Credentials arrive as header text or bytes; anything non-ASCII is malformed."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise AuthError(f"{what} is not ASCII") from None
    if not isinstance(value, str):
        raise AuthError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > MAX_CREDENTIAL_LENGTH:
        raise AuthError(f"{what} is too long")
    if not value.isascii() or not value.isprintable():
        raise AuthError(f"{what} contains non-printable or non-ASCII characters")
    return value


def _userid(value: Authid | str) -> Authid:
    """The user a ticket or CSRF token is for: a user, never a token."""
    try:
        authid = value if isinstance(value, Authid) else Authid.parse(value)
    except InvalidName as err:
        raise AuthError(str(err)) from None
    if authid.token is not None:
        raise AuthError(f"{authid} is an API token, not a user")
    return authid


def _check_age(stamp: int, now: int, what: str) -> None:
    age = now - stamp
    if age < -CLOCK_SKEW:
        raise AuthError(f"{what} timestamp newer than expected")
    if age > TICKET_LIFETIME:
        raise AuthError(f"{what} expired")


def create_ticket(key: AuthKey, userid: Authid | str, *, now: float | None = None) -> str:
    """A new ticket for `userid`, valid for `TICKET_LIFETIME` seconds from `now`."""
    user = _userid(userid)
    signed = f"{TICKET_PREFIX}:{user}:{_now(now):08X}"
    return f"{signed}::{_b64encode(key.sign(signed.encode('ascii')))}"


def verify_ticket(key: AuthKey, ticket: object, *, now: float | None = None) -> Authid:
    """The user a valid, current ticket was issued to; AuthError for anything else."""
    text = credential_text(ticket, "ticket")
    match = _TICKET_RE.match(text)
    if match is None:
        raise AuthError("ticket is malformed (expected PBS:<userid>:<HEXTIME>::<signature>)")
    signed, user_text, hextime, signature = match.groups()
    _check_age(int(hextime, 16), _now(now), "ticket")
    if not key.verify(_b64decode(signature, "ticket signature"), signed.encode("ascii")):
        raise AuthError("ticket with invalid signature")
    return _userid(user_text)


def _csrf_data(stamp: int, user: Authid) -> bytes:
    return f"{stamp:08X}:{user}:".encode("ascii")


def create_csrf_token(secret: CsrfSecret, userid: Authid | str, *,
                      now: float | None = None) -> str:
    """The CSRFPreventionToken that goes with a ticket for `userid`."""
    user = _userid(userid)
    stamp = _now(now)
    return f"{stamp:08X}:{_b64encode(secret.mac(_csrf_data(stamp, user)))}"


def verify_csrf_token(secret: CsrfSecret, userid: Authid | str, token: object, *,
                      now: float | None = None) -> None:
    """Accept a current token issued for `userid`; AuthError for anything else."""
    user = _userid(userid)
    text = credential_text(token, "CSRF prevention token")
    match = _CSRF_RE.match(text)
    if match is None:
        raise AuthError("CSRF prevention token is malformed (expected <HEXTIME>:<mac>)")
    stamp = int(match.group(1), 16)
    mac = _b64decode(match.group(2), "CSRF prevention token")
    if not hmac.compare_digest(mac, secret.mac(_csrf_data(stamp, user))):
        raise AuthError("invalid CSRF prevention token")
    _check_age(stamp, _now(now), "CSRF prevention token")
