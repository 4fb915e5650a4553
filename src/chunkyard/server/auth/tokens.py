"""Parsing the credentials of a request: the API token header and the ticket cookie.

`Authorization: PBSAPIToken=<user>@<realm>!<tokenname>:<secret>` (or a space instead of `=`);
the secret is percent-decoded (PBS clients send UUIDs, which need no encoding). Tickets come
in cookie `__Host-PBSAuthCookie` (preferred) or `PBSAuthCookie`, percent-encoded by browsers.
Anything malformed raises `AuthError`; parsing never verifies a secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.tickets import credential_text

TOKEN_PREFIX = "PBSAPIToken"
AUTH_COOKIE = "PBSAuthCookie"
HOST_AUTH_COOKIE = f"__Host-{AUTH_COOKIE}"


@dataclass(frozen=True)
class ApiTokenCredentials:
    """A token id and the secret offered for it (not yet verified)."""

    tokenid: Authid
    secret: str = field(repr=False)


def _percent_decode(text: str, what: str) -> str:
    """Rust's `percent_decode_str(..).decode_utf8()`: bad `%` escapes stay as they are."""
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(f"{what} is not UTF-8 after percent-decoding") from None


def parse_api_token_header(value: object) -> ApiTokenCredentials:
    """The token id and secret of an `Authorization: PBSAPIToken...` header value."""
    text = credential_text(value, "Authorization header")
    if not text.startswith(TOKEN_PREFIX) or text[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + 1] not in (
            "=", " "):
        raise AuthError("Authorization header is not of the form PBSAPIToken=<tokenid>:<secret>")
    tokenid_text, sep, secret_text = text[len(TOKEN_PREFIX) + 1:].partition(":")
    if not sep:
        raise AuthError("API token header has no ':' between token id and secret")
    try:
        tokenid = Authid.parse(tokenid_text)
    except InvalidName as err:
        raise AuthError(f"API token header: {err}") from None
    if tokenid.token is None:
        raise AuthError(f"API token header names the user {tokenid}, not one of its tokens")
    secret = _percent_decode(secret_text, "API token secret")
    if not secret:
        raise AuthError("API token header has an empty secret")
    return ApiTokenCredentials(tokenid, secret)


def is_api_token_header(value: object) -> bool:
    """True if an Authorization header is meant as a PBS API token (PBS ignores others)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return isinstance(value, str) and (value.startswith(TOKEN_PREFIX + "=")
                                       or value.startswith(TOKEN_PREFIX + " "))


def extract_cookie(header: object, name: str) -> str | None:
    """The percent-decoded value of cookie `name` in one `Cookie:` header, or None.

    Like PBS: pairs split at `;`, name and value trimmed, a value that does not decode as
    UTF-8 is skipped. Malformed headers yield None rather than an error, as a browser may
    send cookies of other applications on the same host.
    """
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not isinstance(header, str):
        return None
    for pair in header.split(";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip() == name:
            try:
                return unquote_to_bytes(val.strip()).decode("utf-8")
            except UnicodeDecodeError:
                continue
    return None


def find_ticket(cookie_headers: Iterable[object]) -> str | None:
    """The ticket among all `Cookie:` headers: `__Host-PBSAuthCookie` wins over the plain one."""
    fallback = None
    for header in cookie_headers:
        host = extract_cookie(header, HOST_AUTH_COOKIE)
        if host is not None:
            return host
        plain = extract_cookie(header, AUTH_COOKIE)
        if plain is not None:
            fallback = plain
    return fallback
