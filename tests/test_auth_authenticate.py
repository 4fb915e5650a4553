"""A request's caller (ticket with CSRF token, or API token) and the password login that
issues tickets, against an in-memory account database."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chunkyard.names import Authid
from chunkyard.server.auth.authenticate import (
    Authenticated,
    NoCredentials,
    authenticate_request,
    login,
)
from chunkyard.server.auth.errors import AuthError, LoginRateLimited
from chunkyard.server.auth.keys import AuthKeys
from chunkyard.server.auth.ratelimit import LoginRateLimiter
from chunkyard.server.auth.tickets import create_csrf_token, create_ticket, verify_ticket

NOW = 1_700_000_000
KEYS = AuthKeys.generate()
ALICE = Authid.parse("alice@pbs")
TOKEN = Authid.parse("alice@pbs!client")
SECRET = "0b5a7e14-7c83-4a0e-9c41-2b5a0d7f3e11"


@dataclass
class FakeAccounts:
    passwords: dict[str, str] = field(default_factory=lambda: {
        "alice@pbs": "correct horse", "bob@pbs": "hunter2", "PBS:odd@pbs": "x"})
    tokens: dict[str, str] = field(default_factory=lambda: {"alice@pbs!client": SECRET})
    inactive: set[str] = field(default_factory=set)

    def is_active(self, authid: Authid, now: int) -> bool:
        assert now == NOW
        user = f"{authid.user}@{authid.realm}"
        known = str(authid) in self.tokens if authid.token else user in self.passwords
        return known and user not in self.inactive and str(authid) not in self.inactive

    def verify_password(self, userid: Authid, password: str) -> bool:
        return self.passwords.get(str(userid)) == password

    def verify_token_secret(self, tokenid: Authid, secret: str) -> bool:
        return self.tokens.get(str(tokenid)) == secret


def request(method: str = "GET", cookies: list[str] | None = None,
            authorization: str | None = None, csrf: str | None = None,
            accounts: FakeAccounts | None = None) -> Authenticated:
    return authenticate_request(method=method, cookie_headers=cookies or [],
                                authorization=authorization, csrf_token=csrf, keys=KEYS,
                                accounts=accounts or FakeAccounts(), now=NOW)


def ticket_cookie(user: str = "alice@pbs", now: int = NOW) -> str:
    return f"__Host-PBSAuthCookie={create_ticket(KEYS.signing, user, now=now)}"


# --- requests ------------------------------------------------------------------------------

def test_ticket_get_needs_no_csrf_token() -> None:
    assert request(cookies=[ticket_cookie()]) == Authenticated(ALICE, "ticket")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "post", "HEAD"])
def test_ticket_non_get_needs_the_users_csrf_token(method: str) -> None:
    csrf = create_csrf_token(KEYS.csrf, ALICE, now=NOW)
    assert request(method, [ticket_cookie()], csrf=csrf).authid == ALICE
    with pytest.raises(AuthError, match="missing CSRF"):
        request(method, [ticket_cookie()])
    with pytest.raises(AuthError, match="invalid CSRF"):
        request(method, [ticket_cookie()], csrf=create_csrf_token(KEYS.csrf, "bob@pbs", now=NOW))
    with pytest.raises(AuthError, match="CSRF prevention token expired"):
        request(method, [ticket_cookie()], csrf=create_csrf_token(KEYS.csrf, ALICE, now=0))


def test_bad_tickets_and_inactive_users() -> None:
    with pytest.raises(AuthError, match="expired"):
        request(cookies=[ticket_cookie(now=NOW - 7201)])
    with pytest.raises(AuthError, match="malformed"):
        request(cookies=["PBSAuthCookie=garbage"])
    with pytest.raises(AuthError, match="disabled or expired"):
        request(cookies=[ticket_cookie()], accounts=FakeAccounts(inactive={"alice@pbs"}))
    with pytest.raises(AuthError, match="disabled or expired"):
        request(cookies=[ticket_cookie("carol@pbs")])  # unknown user, validly signed


def test_api_tokens() -> None:
    header = f"PBSAPIToken={TOKEN}:{SECRET}"
    assert request("POST", authorization=header) == Authenticated(TOKEN, "token")  # no CSRF
    assert request(authorization=f"PBSAPIToken {TOKEN}:{SECRET}").authid == TOKEN
    with pytest.raises(AuthError, match="invalid secret"):
        request(authorization=f"PBSAPIToken={TOKEN}:{SECRET[:-1]}0")
    with pytest.raises(AuthError, match="disabled or expired"):
        request(authorization=header, accounts=FakeAccounts(inactive={"alice@pbs!client"}))
    with pytest.raises(AuthError, match="disabled or expired"):  # the token's user
        request(authorization=header, accounts=FakeAccounts(inactive={"alice@pbs"}))
    with pytest.raises(AuthError, match="not one of its tokens"):
        request(authorization=f"PBSAPIToken=alice@pbs:{SECRET}")


def test_the_ticket_cookie_wins_and_other_schemes_are_no_credentials() -> None:
    both = request(cookies=[ticket_cookie()], authorization="PBSAPIToken=x@pbs!t:bad")
    assert both == Authenticated(ALICE, "ticket")
    for header in (None, "Bearer abc", "Basic YTpi"):
        with pytest.raises(NoCredentials) as err:
            request(cookies=["other=1"], authorization=header)
        assert err.value.http_status == 401


# --- login ---------------------------------------------------------------------------------

def do_login(user: object, password: object, limiter: LoginRateLimiter | None = None,
             accounts: FakeAccounts | None = None, source: str = "192.0.2.1") -> object:
    return login(user, password, source, keys=KEYS, accounts=accounts or FakeAccounts(),
                 limiter=limiter or LoginRateLimiter(), now=NOW)


def test_login_issues_a_ticket_and_csrf_token() -> None:
    result = login("alice@pbs", "correct horse", "192.0.2.1", keys=KEYS,
                   accounts=FakeAccounts(), limiter=LoginRateLimiter(), now=NOW)
    assert verify_ticket(KEYS.signing, result.ticket, now=NOW) == ALICE
    api = result.to_api()
    assert set(api) == {"username", "ticket", "CSRFPreventionToken"}
    assert api["username"] == "alice@pbs"
    assert request("POST", [f"PBSAuthCookie={api['ticket']}"],
                   csrf=api["CSRFPreventionToken"]).authid == ALICE
    assert result.ticket not in repr(result)


@pytest.mark.parametrize(("user", "password", "reason"), [
    ("alice@pbs", "wrong", "wrong password"),
    ("bob@pbs", "correct horse", "wrong password"),
    ("carol@pbs", "x", "disabled or expired"),
    ("alice@pbs!client", SECRET, "API tokens cannot log in"),
    ("alice", "correct horse", "auth id"),
    ("alice@pbs", "", "empty or too long"),
    ("alice@pbs", "x" * 5000, "empty or too long"),
    (None, "x", "must be strings"),
    ("alice@pbs", b"correct horse", "must be strings"),
])
def test_login_failures(user: object, password: object, reason: str) -> None:
    with pytest.raises(AuthError, match=reason) as err:
        do_login(user, password)
    assert err.value.public_message == "authentication failure"


def test_ticket_renewal_through_the_password_field() -> None:
    old = create_ticket(KEYS.signing, ALICE, now=NOW - 3600)
    renewed = login("alice@pbs", old, "192.0.2.1", keys=KEYS, accounts=FakeAccounts(),
                    limiter=LoginRateLimiter(), now=NOW)
    assert renewed.ticket.split(":")[2] == f"{NOW:08X}"
    with pytest.raises(AuthError, match="wrong userid"):
        do_login("bob@pbs", old)
    with pytest.raises(AuthError, match="disabled"):
        do_login("alice@pbs", old, accounts=FakeAccounts(inactive={"alice@pbs"}))
    with pytest.raises(AuthError, match="wrong password"):  # expired: tried as a password
        do_login("alice@pbs", create_ticket(KEYS.signing, ALICE, now=NOW - 7201))


def test_a_password_that_looks_like_a_ticket_still_works() -> None:
    accounts = FakeAccounts(passwords={"alice@pbs": "PBS:not:a::ticket"})
    do_login("alice@pbs", "PBS:not:a::ticket", accounts=accounts)


def test_login_rate_limiting() -> None:
    limiter = LoginRateLimiter()
    for _ in range(5):
        with pytest.raises(AuthError, match="wrong password"):
            do_login("alice@pbs", "guess", limiter)
    # now even the right password is not looked at
    with pytest.raises(LoginRateLimited) as err:
        do_login("alice@pbs", "correct horse", limiter)
    assert err.value.retry_after > 0
    do_login("alice@pbs", "correct horse", limiter, source="192.0.2.99")
    do_login("bob@pbs", "hunter2", limiter)


def test_success_resets_the_pair() -> None:
    limiter = LoginRateLimiter()
    for _ in range(4):
        with pytest.raises(AuthError):
            do_login("alice@pbs", "guess", limiter)
    do_login("alice@pbs", "correct horse", limiter)
    for _ in range(4):
        with pytest.raises(AuthError, match="wrong password"):
            do_login("alice@pbs", "guess", limiter)


def test_invalid_usernames_count_against_the_source() -> None:
    limiter = LoginRateLimiter(max_failures_per_source=3)
    for name in ("a", "b", "c"):
        with pytest.raises(AuthError):
            do_login(name, "x", limiter)
    with pytest.raises(LoginRateLimited):
        do_login("alice@pbs", "correct horse", limiter)
