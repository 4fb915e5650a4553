"""Names and types of spec section 2: every rule, and a clear error naming the bad part."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkyard.errors import InvalidName
from chunkyard.names import (
    Authid,
    BackupDir,
    BackupGroup,
    BackupNamespace,
    BackupType,
    archive_kind,
    epoch_to_rfc3339,
    parse_rfc3339,
    validate_archive_name,
)

safe_id = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._\-]{0,15}\Z")


@given(st.lists(safe_id, max_size=7))
def test_namespace_round_trips_both_forms(parts: list[str]) -> None:
    text = "/".join(parts)
    ns = BackupNamespace.parse(text)
    assert str(ns) == text
    assert ns.depth == len(parts)
    assert BackupNamespace.from_path("/".join(ns.path_parts())) == ns


def test_namespace_limits() -> None:
    BackupNamespace.parse("/".join("abcdefg"))
    with pytest.raises(InvalidName, match="too deep"):
        BackupNamespace.parse("/".join("abcdefgh"))
    BackupNamespace.parse("x" * 255)
    with pytest.raises(InvalidName, match="longer than 256"):
        BackupNamespace.parse("x" * 256)
    with pytest.raises(InvalidName, match="longer than 256"):
        BackupNamespace.parse("/".join(["y" * 60] * 5))


@pytest.mark.parametrize("bad, part", [
    ("a//b", "''"), ("a/.hidden", "'.hidden'"), ("a/-x", "'-x'"), ("a/b c", "'b c'"),
    ("../etc", "'..'"), ("a/ü", "'ü'"), ("/a", "''"), ("a/", "''"),
])
def test_namespace_errors_name_the_component(bad: str, part: str) -> None:
    with pytest.raises(InvalidName) as err:
        BackupNamespace.parse(bad)
    assert part in str(err.value)


def test_namespace_on_disk_form_errors() -> None:
    with pytest.raises(InvalidName, match="expected 'ns'"):
        BackupNamespace.from_path("ns/a/xx/b")
    with pytest.raises(InvalidName, match="pairs"):
        BackupNamespace.from_path("ns/a/ns")
    assert BackupNamespace.from_path("") == BackupNamespace.root()


def test_namespace_order_puts_subtrees_together() -> None:
    names = ["b", "a/z", "a", "", "a/b/c", "ab", "a/b"]
    ordered = [str(n) for n in sorted(BackupNamespace.parse(x) for x in names)]
    assert ordered == ["", "a", "a/b", "a/b/c", "a/z", "ab", "b"]
    a = BackupNamespace.parse("a")
    assert a.is_ancestor_of(BackupNamespace.parse("a/b/c"))
    assert not a.is_ancestor_of(BackupNamespace.parse("ab"))
    assert BackupNamespace.parse("a/b/c").rebase(a, BackupNamespace.parse("x")) == \
        BackupNamespace.parse("x/b/c")


def test_backup_types_and_groups() -> None:
    assert sorted(BackupType) == [BackupType.CT, BackupType.HOST, BackupType.VM]
    assert str(BackupGroup.parse("vm/100")) == "vm/100"
    for bad in ("vm", "xx/100", "vm/.x", "vm/a/b", "vm/", "vm/a b"):
        with pytest.raises(InvalidName):
            BackupGroup.parse(bad)


@given(st.integers(1, 253402300799))
def test_time_round_trip(epoch: int) -> None:
    text = epoch_to_rfc3339(epoch)
    assert len(text) == 20 and text.endswith("Z")
    assert parse_rfc3339(text) == epoch


def test_time_rules() -> None:
    assert epoch_to_rfc3339(1593179765) == "2020-06-26T13:56:05Z"
    assert parse_rfc3339("2020-06-26T15:56:05+02:00") == 1593179765
    for bad in ("2020-13-01T00:00:00Z", "2020-06-26 13:56:05Z", "2020-06-26T24:00:00Z",
                "2020-06-26T13:56:05"):
        with pytest.raises(InvalidName):
            parse_rfc3339(bad)
    with pytest.raises(InvalidName, match="out of range"):
        epoch_to_rfc3339(253402300800)


def test_snapshot_paths() -> None:
    snap = BackupDir.parse("host/elsa/2020-06-15T05:18:33Z")
    assert str(snap) == "host/elsa/2020-06-15T05:18:33Z"
    with pytest.raises(InvalidName):
        BackupDir.parse("host/elsa/2020-06-15T05:18:33+00:00")
    with pytest.raises(InvalidName, match="at least 1"):
        BackupDir(BackupGroup.parse("vm/1"), 0)


def test_archive_names() -> None:
    assert archive_kind("root.pxar") == "root.pxar.didx"
    assert archive_kind("root.tar") == "root.tar.didx"
    assert archive_kind("drive-scsi0.img") == "drive-scsi0.img.fidx"
    assert archive_kind("qemu-server.conf") == "qemu-server.conf.blob"
    assert archive_kind("index.json.blob") == "index.json.blob"
    for bad in ("../x.blob", "a/b.blob", "x.exe", ".hidden.blob", "noext"):
        with pytest.raises(InvalidName):
            archive_kind(bad)
    with pytest.raises(InvalidName):
        validate_archive_name("root.tar")


def test_authids() -> None:
    assert str(Authid.parse("root@pam")) == "root@pam"
    token = Authid.parse("user@pbs!token1")
    assert token.token == "token1" and token.userid == "user@pbs"
    for bad in ("root", "ro ot@pam", "a@b!", "a@.b", "a:b@pam"):
        with pytest.raises(InvalidName):
            Authid.parse(bad)


@pytest.mark.parametrize("parse, text", [
    (BackupNamespace.parse, "a\n"), (BackupNamespace.parse, "a/b\n"),
    (BackupGroup.parse, "vm/100\n"), (BackupDir.parse, "vm/100/2023-11-14T22:13:20Z\n"),
    (Authid.parse, "user@pbs\n"), (Authid.parse, "user@pbs!tok\n"),
    (validate_archive_name, "root.pxar.didx\n"),
])
def test_a_trailing_newline_is_never_part_of_a_valid_name(parse: Any, text: str) -> None:
    """Python's `$` matches before a final newline (Rust's does not): names must not."""
    with pytest.raises(InvalidName):
        parse(text)
    parse(text[:-1])  # and without it the name is fine
