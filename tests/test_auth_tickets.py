"""Tickets and CSRF prevention tokens: round trips, lifetime and clock skew, tampering with
every field, wrong keys, key files, and malformed input of any kind."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.errors import CryptError
from chunkyard.names import Authid
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.keys import AuthKey, AuthKeys, CsrfSecret
from chunkyard.server.auth.tickets import (
    CLOCK_SKEW,
    TICKET_LIFETIME,
    create_csrf_token,
    create_ticket,
    verify_csrf_token,
    verify_ticket,
)

NOW = 1_700_000_000
KEY = AuthKey.generate()
SECRET = CsrfSecret(b"k" * 32)
ALICE = Authid.parse("alice@pbs")


@pytest.fixture(scope="module")
def rsa_key() -> AuthKey:
    """An RSA key as an older PBS wrote it (small, for speed)."""
    return AuthKey(rsa.generate_private_key(public_exponent=65537, key_size=1024))


# --- tickets -------------------------------------------------------------------------------

def test_ticket_round_trip_and_format() -> None:
    ticket = create_ticket(KEY, "alice@pbs", now=NOW)
    prefix, user, hextime, empty, signature = ticket.split(":")
    assert (prefix, user, hextime, empty) == ("PBS", "alice@pbs", f"{NOW:08X}", "")
    assert "=" not in signature
    assert len(base64.b64decode(signature + "==")) == 64  # Ed25519
    assert verify_ticket(KEY, ticket, now=NOW) == ALICE
    assert verify_ticket(KEY, ticket.encode(), now=NOW) == ALICE
    assert verify_ticket(KEY, create_ticket(KEY, ALICE, now=NOW), now=NOW) == ALICE


def test_rsa_keys_of_older_pbs_servers(rsa_key: AuthKey) -> None:
    ticket = create_ticket(rsa_key, "root@pam", now=NOW)
    assert verify_ticket(rsa_key, ticket, now=NOW) == Authid.parse("root@pam")
    again = AuthKey.from_pem(rsa_key.private_pem())
    assert rsa_key.private_pem().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert verify_ticket(again, ticket, now=NOW).userid == "root@pam"
    with pytest.raises(AuthError, match="invalid signature"):
        verify_ticket(KEY, ticket, now=NOW)


@pytest.mark.parametrize(("age", "ok"), [
    (0, True), (TICKET_LIFETIME, True), (TICKET_LIFETIME + 1, False),
    (-CLOCK_SKEW, True), (-CLOCK_SKEW - 1, False), (10 * TICKET_LIFETIME, False),
])
def test_ticket_lifetime_and_skew(age: int, ok: bool) -> None:
    ticket = create_ticket(KEY, ALICE, now=NOW - age)
    if ok:
        assert verify_ticket(KEY, ticket, now=NOW) == ALICE
    else:
        with pytest.raises(AuthError, match="expired" if age > 0 else "newer than expected"):
            verify_ticket(KEY, ticket, now=NOW)


def _swap(text: str, index: int) -> str:
    return text[:index] + ("B" if text[index] != "B" else "C") + text[index + 1:]


def test_ticket_tampering_of_every_field() -> None:
    ticket = create_ticket(KEY, ALICE, now=NOW)
    _, user, hextime, _, signature = ticket.split(":")
    forged = [
        f"PBX:{user}:{hextime}::{signature}",                 # prefix
        f"PMG:{user}:{hextime}::{signature}",
        f"PBS:mallory@pbs:{hextime}::{signature}",            # user
        f"PBS:root@pam:{hextime}::{signature}",
        f"PBS:{user}:{NOW + 1:08X}::{signature}",             # time
        f"PBS:{user}:{NOW - 1:08X}::{signature}",
        f"PBS:{user}:{hextime}::{_swap(signature, 0)}",       # signature
        f"PBS:{user}:{hextime}::{_swap(signature, len(signature) // 2)}",
        f"PBS:{user}:{hextime}::{signature[:-4]}",            # truncated signature
        f"PBS:{user}:{hextime}::{signature}AAAA",
        f"PBS:{user}:{hextime}:{signature}",                  # one colon
        f"PBS:{user}:{hextime}:::{signature}",
        f"PBS:{user}:{hextime.lower()}::{signature}",         # PBS never writes lower case
        f"PBS:{user}:0{hextime}::{signature}",
        f"PBS:{user}!tok:{hextime}::{signature}",             # a token is no user
        f"PBS:{user}:{hextime}::{signature}=",                # padding
        f" {ticket}", f"{ticket}\n", ticket[:-1], "",
    ]
    for bad in forged:
        with pytest.raises(AuthError):
            verify_ticket(KEY, bad, now=NOW)


def test_wrong_key_and_key_rollover() -> None:
    old = AuthKey.generate()
    ticket = create_ticket(old, ALICE, now=NOW)
    with pytest.raises(AuthError, match="invalid signature"):
        verify_ticket(KEY, ticket, now=NOW)
    both = KEY.accepting(old)
    assert verify_ticket(both, ticket, now=NOW) == ALICE
    new_ticket = create_ticket(both, ALICE, now=NOW)  # signed by KEY, not by the old key
    assert verify_ticket(KEY, new_ticket, now=NOW) == ALICE
    with pytest.raises(AuthError, match="invalid signature"):
        verify_ticket(old, new_ticket, now=NOW)


def test_ticket_creation_refuses_tokens_and_bad_ids() -> None:
    with pytest.raises(AuthError, match="API token"):
        create_ticket(KEY, "alice@pbs!tok", now=NOW)
    with pytest.raises(AuthError):
        create_ticket(KEY, "alice", now=NOW)


def test_partial_tfa_tickets_are_refused() -> None:
    data = "PBS:!tfa!%7B%22challenge%22%7D:" + f"{NOW:08X}"
    signature = base64.b64encode(KEY.sign(data.encode())).decode().rstrip("=")
    with pytest.raises(AuthError):
        verify_ticket(KEY, f"{data}::{signature}", now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), st.none(), st.integers(),
                 st.from_regex(r"\APBS:[a-z]{1,8}@pbs:[0-9A-F]{8}::[A-Za-z0-9+/]{0,90}\Z")))
def test_any_input_is_a_valid_ticket_or_an_auth_error(value: object) -> None:
    with contextlib.suppress(AuthError):
        assert isinstance(verify_ticket(KEY, value, now=NOW), Authid)


VALID = create_ticket(KEY, ALICE, now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.characters(codec="ascii"))
def test_every_one_character_change_of_a_ticket_is_refused(index: int, char: str) -> None:
    forged = VALID[:index] + char + VALID[index + 1:]
    if forged != VALID:
        with pytest.raises(AuthError):
            verify_ticket(KEY, forged, now=NOW)


# --- CSRF prevention tokens ----------------------------------------------------------------

def test_csrf_round_trip_and_format() -> None:
    token = create_csrf_token(SECRET, ALICE, now=NOW)
    hextime, mac = token.split(":")
    assert hextime == f"{NOW:08X}"
    expected = hmac.new(b"k" * 32, f"{NOW:08X}:alice@pbs:".encode(), hashlib.sha3_256).digest()
    assert mac == base64.b64encode(expected).decode().rstrip("=")
    verify_csrf_token(SECRET, ALICE, token, now=NOW)
    verify_csrf_token(SECRET, "alice@pbs", token.encode(), now=NOW + TICKET_LIFETIME)
    # PBS parses the time as any hex number and MACs its %08X form
    verify_csrf_token(SECRET, ALICE, token.lower().split(":")[0] + ":" + mac, now=NOW)


@pytest.mark.parametrize(("age", "ok"), [
    (TICKET_LIFETIME, True), (TICKET_LIFETIME + 1, False), (-CLOCK_SKEW, True),
    (-CLOCK_SKEW - 1, False),
])
def test_csrf_lifetime(age: int, ok: bool) -> None:
    token = create_csrf_token(SECRET, ALICE, now=NOW - age)
    if ok:
        verify_csrf_token(SECRET, ALICE, token, now=NOW)
    else:
        with pytest.raises(AuthError, match="CSRF"):
            verify_csrf_token(SECRET, ALICE, token, now=NOW)


def test_csrf_wrong_user_secret_or_tampering() -> None:
    token = create_csrf_token(SECRET, ALICE, now=NOW)
    hextime, mac = token.split(":")
    with pytest.raises(AuthError, match="invalid CSRF"):
        verify_csrf_token(SECRET, "bob@pbs", token, now=NOW)
    with pytest.raises(AuthError, match="invalid CSRF"):
        verify_csrf_token(CsrfSecret(b"x" * 32), ALICE, token, now=NOW)
    for bad in (f"{NOW + 1:08X}:{mac}", f"{hextime}:{_swap(mac, 3)}", f"{hextime}:{mac[:-2]}",
                f"{hextime}:{mac}:", f"{hextime}{mac}", f":{mac}", f"{hextime}:", "",
                f"{hextime}:{mac}=", f"x{hextime}:{mac}"):
        with pytest.raises(AuthError):
            verify_csrf_token(SECRET, ALICE, bad, now=NOW)
    with pytest.raises(AuthError, match="API token"):
        verify_csrf_token(SECRET, "alice@pbs!tok", token, now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=100), st.text(max_size=100), st.none(), st.floats()))
def test_any_input_is_a_valid_csrf_token_or_an_auth_error(value: object) -> None:
    with contextlib.suppress(AuthError):
        verify_csrf_token(SECRET, ALICE, value, now=NOW)


# --- key files -----------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        keys = AuthKeys.load_or_create(tmp_path)
    finally:
        os.umask(old_umask)
    for name in ("authkey.key", "csrf.key"):
        assert _mode(tmp_path / name) == 0o600
    assert (tmp_path / "authkey.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = AuthKeys.load_or_create(tmp_path)
    ticket = create_ticket(keys.signing, ALICE, now=NOW)
    assert verify_ticket(again.signing, ticket, now=NOW) == ALICE
    verify_csrf_token(again.csrf, ALICE, create_csrf_token(keys.csrf, ALICE, now=NOW), now=NOW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["authkey.key", "csrf.key"]


def test_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "authkey.key"
    keys: list[AuthKey] = []
    threads = [threading.Thread(target=lambda: keys.append(AuthKey.load_or_create(path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pems = {k.private_pem() for k in keys}
    assert len(keys) == 8 and pems == {path.read_bytes()}
    assert [p.name for p in tmp_path.iterdir()] == ["authkey.key"]


def test_unusable_key_files(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_bytes(b"not a key")
    with pytest.raises(CryptError, match="unusable ticket signing key"):
        AuthKey.load_or_create(tmp_path / "bad.key")
    with pytest.raises(CryptError, match="cannot create key file"):
        AuthKey.load_or_create(tmp_path / "missing-dir" / "authkey.key")
    with pytest.raises(CryptError, match="too short"):
        CsrfSecret(b"short")


def test_csrf_secret_file_contents() -> None:
    raw = os.urandom(32)
    assert CsrfSecret.from_file_content(base64.b64encode(raw) + b"\n").key == raw
    assert CsrfSecret.from_file_content(base64.b64encode(raw).rstrip(b"=")).key == raw
    legacy = b"-----BEGIN RSA PRIVATE KEY-----\nMIIB...\n-----END RSA PRIVATE KEY-----\n"
    assert CsrfSecret.from_file_content(legacy).key == legacy  # PBS's legacy fallback
    assert "k" not in repr(SECRET)
