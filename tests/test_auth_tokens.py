"""Parsing the API token header and the ticket cookie: valid forms, percent-encoding,
malformed headers, and any byte string either parsing or raising AuthError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.names import Authid
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.tokens import (
    ApiTokenCredentials,
    extract_cookie,
    find_ticket,
    is_api_token_header,
    parse_api_token_header,
)

SECRET = "0b5a7e14-7c83-4a0e-9c41-2b5a0d7f3e11"


@pytest.mark.parametrize(("header", "tokenid", "secret"), [
    (f"PBSAPIToken=alice@pbs!client:{SECRET}", "alice@pbs!client", SECRET),
    (f"PBSAPIToken alice@pbs!client:{SECRET}", "alice@pbs!client", SECRET),
    (f"PBSAPIToken=root@pam!backup-1.x:{SECRET}", "root@pam!backup-1.x", SECRET),
    ("PBSAPIToken=a@pbs!t:s%3Acret%20x", "a@pbs!t", "s:cret x"),     # percent-decoded
    ("PBSAPIToken=a@pbs!t:%E2%82%AC", "a@pbs!t", "\u20ac"),          # UTF-8
    ("PBSAPIToken=a@pbs!t:50%", "a@pbs!t", "50%"),                    # a lone % stays
    ("PBSAPIToken=a@pbs!t:x:y", "a@pbs!t", "x:y"),                    # split at the first :
    (f"PBSAPIToken=a@pbs!t:{SECRET}".encode(), "a@pbs!t", SECRET),     # bytes
])
def test_valid_token_headers(header: str | bytes, tokenid: str, secret: str) -> None:
    parsed = parse_api_token_header(header)
    assert parsed == ApiTokenCredentials(Authid.parse(tokenid), secret)
    assert is_api_token_header(header)
    assert secret not in repr(parsed)


@pytest.mark.parametrize("header", [
    "", "PBSAPIToken", "PBSAPIToken=", f"Bearer {SECRET}", f"PBSAPITokenX=a@pbs!t:{SECRET}",
    f"pbsapitoken=a@pbs!t:{SECRET}", f"PBSAPIToken:a@pbs!t:{SECRET}",
    f"PBSAPIToken=a@pbs:{SECRET}",             # a user, not a token
    f"PBSAPIToken=a!t:{SECRET}",               # no realm
    f"PBSAPIToken=a@pbs!:{SECRET}",            # empty token name
    f"PBSAPIToken=a@pbs!-t:{SECRET}",          # token name not a SAFE_ID
    f"PBSAPIToken= a@pbs!t:{SECRET}",          # two separators
    "PBSAPIToken=a@pbs!t", "PBSAPIToken=a@pbs!t:", "PBSAPIToken=a@pbs!t:%FF%FE",
    f"PBSAPIToken=a@pbs!t:{SECRET}\n", f"PBSAPIToken=a@pbs!t:{SECRET}\x00",
    f"PBSAPIToken=\u00e4@pbs!t:{SECRET}", b"PBSAPIToken=a@pbs!t:\xff", None, 42,
    "PBSAPIToken=a@pbs!t:" + "x" * 5000,
])
def test_malformed_token_headers(header: object) -> None:
    with pytest.raises(AuthError):
        parse_api_token_header(header)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=120), st.text(max_size=120),
                 st.text(max_size=60).map(lambda t: "PBSAPIToken=" + t),
                 st.binary(max_size=60).map(lambda b: b"PBSAPIToken " + b)))
def test_any_header_parses_or_raises_auth_error(header: str | bytes) -> None:
    with contextlib.suppress(AuthError):
        parsed = parse_api_token_header(header)
        assert parsed.tokenid.token is not None and parsed.secret


def test_extract_cookie_like_pbs() -> None:
    ticket = "PBS:alice@pbs:6553F100::c2ln+/x"
    encoded = "PBS%3Aalice%40pbs%3A6553F100%3A%3Ac2ln%2B%2Fx"
    assert extract_cookie(f"PBSAuthCookie={encoded}", "PBSAuthCookie") == ticket
    assert extract_cookie(f"a=b; PBSAuthCookie = {ticket} ;c=d", "PBSAuthCookie") == ticket
    assert extract_cookie("PBSAuthCookie=%FF; PBSAuthCookie=ok", "PBSAuthCookie") == "ok"
    assert extract_cookie("PBSAuthCookieX=1; xPBSAuthCookie=2", "PBSAuthCookie") is None
    assert extract_cookie("PBSAuthCookie", "PBSAuthCookie") is None
    assert extract_cookie(b"PBSAuthCookie=v", "PBSAuthCookie") == "v"
    assert extract_cookie(None, "PBSAuthCookie") is None


def test_find_ticket_prefers_the_host_cookie() -> None:
    assert find_ticket([]) is None
    assert find_ticket(["other=1"]) is None
    assert find_ticket(["PBSAuthCookie=plain"]) == "plain"
    assert find_ticket(["PBSAuthCookie=plain; __Host-PBSAuthCookie=host"]) == "host"
    assert find_ticket(["PBSAuthCookie=plain", "__Host-PBSAuthCookie=host"]) == "host"
    assert find_ticket(["__Host-PBSAuthCookie=host", "PBSAuthCookie=plain"]) == "host"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60), st.text(max_size=60)), max_size=3))
def test_cookie_parsing_never_raises(headers: list[object]) -> None:
    result = find_ticket(headers)
    assert result is None or isinstance(result, str)
