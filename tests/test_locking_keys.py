"""Lock keys: file names (rule 4), hashing of over-long names, the global order (rule 3),
the lock directory location and the /proc/locks parser."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.datastore.locking import LockKey, LockManager, Mode, default_lock_dir
from chunkyard.datastore.locking.holders import find_holders, parse_proc_locks
from chunkyard.datastore.locking.keys import NAME_MAX, systemd_escape_path
from chunkyard.datastore.locking.lockfiles import identity_dir_name
from chunkyard.errors import DatastoreError
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace, BackupType

ROOT = BackupNamespace()
AB = BackupNamespace.parse("a/b")
VM100 = BackupGroup.parse("vm/100")
SNAP = BackupDir(VM100, 1651479093)  # 2022-05-02T08:11:33Z


def rel(manager: LockManager, key: LockKey) -> str:
    return os.path.relpath(manager.lock_file_path(key), manager.lock_dir)


def test_escape_matches_the_spec_examples() -> None:
    assert systemd_escape_path("vm/100") == "vm-100"
    assert systemd_escape_path("host/my-host.example_1") == "host-my\\x2dhost.example_1"
    assert systemd_escape_path("vm/100/2022-05-02T08:11:33Z") == (
        "vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z")
    assert systemd_escape_path("/") == "-"
    assert systemd_escape_path(".x/.y") == "\\x2ex-.y"


def test_lock_file_names(tmp_path: Path) -> None:
    m = LockManager(str(tmp_path))
    assert rel(m, LockKey.namespace(ROOT)) == "ns/-/ns"
    assert rel(m, LockKey.namespace(AB)) == "ns/a:b/ns"
    assert rel(m, LockKey.group_access(ROOT, VM100)) == "ns/-/ga-vm-100"
    assert rel(m, LockKey.group_writer(AB, VM100)) == "ns/a:b/gw-vm-100"
    assert rel(m, LockKey.snapshot(AB, SNAP)) == (
        "ns/a:b/sn-vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z")
    assert rel(m, LockKey.manifest(AB, SNAP)) == (
        "ns/a:b/mf-vm-100-2022\\x2d05\\x2d02T08\\x3a11\\x3a33Z")
    assert rel(m, LockKey.journal()) == "journal"
    with pytest.raises(ValueError):
        m.lock_file_path(LockKey.chunk_store())


SAFE = st.builds(lambda head, tail: head + tail, st.sampled_from("aZ9_"),
                 st.text(alphabet="abZ09._-", max_size=12))
LONG_ID = st.builds(
    lambda head, tail: head + tail, st.sampled_from("aZ9_"),
    st.text(alphabet="abcXYZ019._-", min_size=150, max_size=320))
NAMESPACES = st.lists(SAFE, max_size=7).map(lambda c: BackupNamespace.parse("/".join(c)))
GROUPS = st.builds(BackupGroup, st.sampled_from(list(BackupType)), SAFE | LONG_ID)
SNAPS = st.builds(BackupDir, GROUPS, st.integers(1, 253402300799))


@st.composite
def keys(draw: st.DrawFn) -> LockKey:
    ns = draw(NAMESPACES)
    kind = draw(st.sampled_from(["ns", "gw", "ga", "sn", "mf", "jr"]))
    if kind == "ns":
        return LockKey.namespace(ns)
    if kind == "jr":
        return LockKey.journal()
    if kind in ("gw", "ga"):
        g = draw(GROUPS)
        return LockKey.group_writer(ns, g) if kind == "gw" else LockKey.group_access(ns, g)
    s = draw(SNAPS)
    return LockKey.snapshot(ns, s) if kind == "sn" else LockKey.manifest(ns, s)


@settings(max_examples=200, deadline=None)
@given(keys(), keys())
def test_names_are_collision_free_and_short(a: LockKey, b: LockKey) -> None:
    m = LockManager("/nonexistent/locks")
    pa, pb = m.lock_file_path(a), m.lock_file_path(b)
    for p in (pa, pb):
        for part in os.path.relpath(p, m.lock_dir).split("/"):
            assert 0 < len(part.encode()) <= NAME_MAX
    assert (pa == pb) == (a == b)


def test_over_long_group_names_are_hashed_and_stay_apart(tmp_path: Path) -> None:
    m = LockManager(str(tmp_path))
    g1 = BackupGroup(BackupType.HOST, "x" * 300 + "1")
    g2 = BackupGroup(BackupType.HOST, "x" * 300 + "2")
    n1 = os.path.basename(m.lock_file_path(LockKey.snapshot(AB, BackupDir(g1, 5))))
    n2 = os.path.basename(m.lock_file_path(LockKey.snapshot(AB, BackupDir(g2, 5))))
    assert n1 != n2
    assert n1.startswith("sn-#") and len(n1) <= NAME_MAX
    # The files of one group keep one prefix, so a group cleanup still finds them.
    g1_ga = os.path.basename(m.lock_file_path(LockKey.group_access(AB, g1)))
    assert n1.startswith("sn-" + g1_ga[3:] + "-")
    # And they really work as lock files.
    g2_ga = "ga-" + n2[3:].rsplit("-", 1)[0]
    with m.session() as s:
        guard = s.snapshot(AB, BackupDir(g1, 5), Mode.EXCLUSIVE)
        assert sorted(os.listdir(m.namespace_lock_dir(AB))) == sorted(["ns", g1_ga, n1])
        guard.release()
        s.snapshot(AB, BackupDir(g2, 5), Mode.EXCLUSIVE)
        assert sorted(os.listdir(m.namespace_lock_dir(AB))) == sorted(
            ["ns", g1_ga, g2_ga, n2])
    # Snapshot lock files go with their last holder; group and namespace ones stay.
    assert sorted(os.listdir(m.namespace_lock_dir(AB))) == sorted(["ns", g1_ga, g2_ga])


@settings(max_examples=200, deadline=None)
@given(NAMESPACES, NAMESPACES)
def test_namespace_rank_orders_subtrees_contiguously(a: BackupNamespace,
                                                     b: BackupNamespace) -> None:
    ka, kb = LockKey.namespace(a), LockKey.namespace(b)
    if a.is_ancestor_of(b):
        assert ka.rank < kb.rank
    # Everything ranked between an ancestor and one of its descendants is in the subtree.
    if a.contains(b):
        for c in b.ancestors():
            if a.contains(c):
                assert ka.rank <= LockKey.namespace(c).rank <= kb.rank


def test_class_order() -> None:
    deep = BackupNamespace.parse("z/z/z/z/z/z/z")
    snap = BackupDir(BackupGroup.parse("ct/0"), 1)
    chain = [
        LockKey.namespace(ROOT), LockKey.namespace(deep),
        LockKey.group_writer(ROOT, VM100), LockKey.group_access(ROOT, VM100),
        LockKey.group_writer(AB, VM100), LockKey.group_access(AB, VM100),
        LockKey.snapshot(ROOT, SNAP), LockKey.snapshot(ROOT, BackupDir(VM100, SNAP.time + 1)),
        LockKey.snapshot(AB, snap),
        LockKey.manifest(ROOT, SNAP), LockKey.chunk_store(), LockKey.journal(),
    ]
    assert [k.rank for k in chain] == sorted(k.rank for k in chain)
    assert len({k.rank for k in chain}) == len(chain)


def test_default_lock_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHUNKYARD_LOCK_DIR", str(tmp_path))
    assert default_lock_dir("2049:1234") == str(tmp_path / "2049:1234")
    monkeypatch.delenv("CHUNKYARD_LOCK_DIR")
    d = default_lock_dir("2049:1234")
    assert d.endswith("/locks/2049:1234")
    if os.access("/run", os.W_OK):
        assert d == "/run/chunkyard/locks/2049:1234"


def test_identity_is_sanitized_injectively() -> None:
    assert identity_dir_name("2049:1234") == "2049:1234"
    assert identity_dir_name("a/b") == "a\\x2fb"
    assert identity_dir_name("..") == "\\x2e."
    assert identity_dir_name("a\\x2fb") != identity_dir_name("a/b")
    assert len(identity_dir_name("x" * 1000)) <= NAME_MAX
    assert identity_dir_name("x" * 1000) != identity_dir_name("x" * 999)
    with pytest.raises(DatastoreError):
        identity_dir_name("")


def test_proc_locks_parser_finds_flock_and_posix_holders(tmp_path: Path) -> None:
    sample = (
        "1: POSIX  ADVISORY  READ 5371 fe:00:2146450 0 EOF\n"
        "2: FLOCK  ADVISORY  WRITE 5372 00:2a:77 0 EOF\n"
        "3: -> FLOCK  ADVISORY  WRITE 5373 00:2a:77 0 EOF\n"
        "garbage\n"
    )
    lines = parse_proc_locks(sample)
    assert [(ln.kind, ln.pid, ln.major, ln.minor, ln.inode, ln.mode) for ln in lines] == [
        ("POSIX", 5371, 0xFE, 0, 2146450, Mode.SHARED),
        ("FLOCK", 5372, 0, 0x2A, 77, Mode.EXCLUSIVE),
    ]
    # And against the real kernel table.
    a, b = tmp_path / "a", tmp_path / "b"
    fa = os.open(a, os.O_RDWR | os.O_CREAT)
    fb = os.open(b, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fa, fcntl.LOCK_EX)
        fcntl.lockf(fb, fcntl.LOCK_SH)
        for fd, mode in ((fa, Mode.EXCLUSIVE), (fb, Mode.SHARED)):
            st_ = os.fstat(fd)
            holders = find_holders(st_.st_dev, st_.st_ino, None)
            assert [(h.pid, h.mode) for h in holders] == [(os.getpid(), mode)]
    finally:
        os.close(fa)
        os.close(fb)


def test_holders_prefer_the_exact_device() -> None:
    me = os.getpid()
    parent = os.getppid()
    dev = os.makedev(0xFE, 0x01)
    text = (f"1: FLOCK  ADVISORY  WRITE {me} fe:00:77 0 EOF\n"
            f"2: FLOCK  ADVISORY  READ {parent} fe:01:77 0 EOF\n"
            f"3: OFDLCK ADVISORY  READ -1 fe:01:77 0 EOF\n")
    assert [(h.pid, h.mode) for h in find_holders(dev, 77, None, text)] == [
        (parent, Mode.SHARED)]
    # No line on the exact device (a stacked filesystem): fall back to the inode.
    other = os.makedev(0x10, 0x02)
    assert [h.pid for h in find_holders(other, 77, None, text)] == [me, parent]
    assert find_holders(dev, 78, None, text) == []


def test_holders_blocking_one_byte_are_only_the_conflicting_ones() -> None:
    """The chunk-store lock file: GC's exclusive byte 0, backups' shared bytes above 2^32,
    PBS's whole-file locks. A refusal names only the locks that conflict with the wanted
    byte and mode."""
    pids = [os.getpid(), os.getppid(), 1]
    dev = os.makedev(0xFE, 0x01)
    text = (f"1: POSIX  ADVISORY  WRITE {pids[0]} fe:01:77 0 0\n"          # our GC
            f"2: POSIX  ADVISORY  READ {pids[1]} fe:01:77 4294967296 4294967296\n"  # a backup
            f"3: POSIX  ADVISORY  READ {pids[2]} fe:01:77 0 EOF\n")        # PBS's writer
    def blocking(byte: int, mode: Mode) -> list[tuple[int, Mode]]:
        return [(h.pid, h.mode) for h in find_holders(dev, 77, None, text,
                                                          blocking=(byte, mode))]
    assert blocking(0, Mode.EXCLUSIVE) == [(pids[0], Mode.EXCLUSIVE), (pids[2], Mode.SHARED)]
    assert blocking(2 ** 32, Mode.EXCLUSIVE) == [(pids[1], Mode.SHARED), (pids[2], Mode.SHARED)]
    assert blocking(2 ** 32 + 5, Mode.SHARED) == []  # readers never block readers
    assert blocking(0, Mode.SHARED) == [(pids[0], Mode.EXCLUSIVE)]
    assert len(find_holders(dev, 77, None, text)) == 3


def test_tmp_fallback_lock_dir_must_be_private(tmp_path: Path) -> None:
    from chunkyard.datastore.locking.lockfiles import _private_tmp_dir

    fresh = tmp_path / "fresh"
    assert _private_tmp_dir(str(fresh)) == str(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert _private_tmp_dir(str(fresh)) == str(fresh)  # reused when it is ours
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(DatastoreError, match="0700"):
        _private_tmp_dir(str(shared))
    link = tmp_path / "link"
    link.symlink_to(fresh)
    with pytest.raises(DatastoreError):
        _private_tmp_dir(str(link))
