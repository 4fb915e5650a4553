"""Datastore: create/open, and listing a tree PBS wrote exactly as PBS lists it (spec §1)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from chunkyard.datastore.backend import FilesystemBackend
from chunkyard.datastore.chunk_store import SyncLevel
from chunkyard.datastore.datastore import Datastore, SnapshotInfo
from chunkyard.datastore.layout import (
    file_key,
    group_key,
    index_tmp_name,
    namespace_key,
    snapshot_key,
)
from chunkyard.errors import AlreadyExists, DatastoreError, FormatError, InvalidName, NotFound
from chunkyard.formats.blob import decode_chunk, encode_blob, is_compressed
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import (
    Authid,
    BackupDir,
    BackupGroup,
    BackupNamespace,
    BackupType,
    parse_rfc3339,
)

ZERO_DIGEST = "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
from tests.helpers import PBS_DIDX  # noqa: E402

ROOT = BackupNamespace.root()
VM100 = BackupGroup(BackupType.VM, "100")
ROOT_PAM = Authid.parse("root@pam")


def ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def snap(group: BackupGroup, when: str) -> BackupDir:
    return BackupDir(group, parse_rfc3339(when))


def manifest_for(snapshot: BackupDir, files: list[FileInfo] | None = None) -> BackupManifest:
    return BackupManifest(backup_type=snapshot.group.type.value, backup_id=snapshot.group.id,
                          backup_time=snapshot.time, files=files or [], unprotected={},
                          signature=None)


@pytest.fixture()
def ds(tmp_path: Path) -> Datastore:
    return Datastore.create(str(tmp_path / "store"), sync_level=SyncLevel.NONE, sparse=True)




# -- create and open ----------------------------------------------------------------------

def test_create_full_datastore_and_open_it(fast_dir: Path) -> None:
    path = fast_dir / "store"
    created = Datastore.create(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    assert sorted(os.listdir(path)) == [".chunks", ".lock"]
    assert len(os.listdir(path / ".chunks")) == 65536
    zero = path / ".chunks" / "bb9f" / ZERO_DIGEST
    raw = zero.read_bytes()
    assert is_compressed(raw)
    assert decode_chunk(raw, bytes.fromhex(ZERO_DIGEST)) == bytes(4 * 1024 * 1024)
    opened = Datastore.open(str(path))
    assert opened.identity == created.identity
    assert (opened.name, opened.path) == ("store", str(path))
    assert opened.sync_level == SyncLevel.FILESYSTEM
    assert opened.chunk_store.exists(bytes.fromhex(ZERO_DIGEST))
    assert opened.list_groups(ROOT) == []
    assert list(opened.iter_namespaces(ROOT)) == [ROOT]
    with pytest.raises(AlreadyExists, match="already holds a datastore"):
        Datastore.create(str(path))


def test_create_accepts_dot_entries_and_lost_found_only(tmp_path: Path) -> None:
    ok = tmp_path / "ok"
    (ok / "lost+found").mkdir(parents=True)
    (ok / ".zfs").mkdir()
    (ok / ".hidden").write_text("x")
    Datastore.create(str(ok), sparse=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data").write_text("x")
    with pytest.raises(DatastoreError, match=r"not empty.*data"):
        Datastore.create(str(bad), sparse=True)
    assert os.listdir(bad) == ["data"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatastoreError, match="not a directory"):
        Datastore.create(str(tmp_path / "file"))


def test_create_makes_missing_parents(tmp_path: Path) -> None:
    ds = Datastore.create(str(tmp_path / "a" / "b" / "store"), sparse=True)
    assert ds.name == "store"
    assert ds.chunk_store.exists(bytes.fromhex(ZERO_DIGEST))


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        Datastore.open(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatastoreError, match="not a directory"):
        Datastore.open(str(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="not a datastore"):
        Datastore.open(str(tmp_path / "empty"))


# -- a tree PBS wrote, built by hand with plain os calls ----------------------------------

def _manifest_blob(btype: str, bid: str, when: str, files: dict[str, bytes]) -> bytes:
    infos = [FileInfo.for_blob(name, raw, "none") for name, raw in files.items()]
    return manifest_for(BackupDir(BackupGroup(BackupType(btype), bid), parse_rfc3339(when)),
                        infos).encode_blob()


def build_pbs_tree(base: Path) -> None:
    os.mkdir(base, 0o755)
    os.mkdir(base / ".chunks", 0o750)
    for prefix in ("0000", "bb9f", "ffff"):
        os.mkdir(base / ".chunks" / prefix, 0o750)
    (base / ".lock").write_bytes(b"")
    (base / ".gc-status").write_text('{"upid":null}')

    def mkdirs(*parts: str) -> Path:
        p = base.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    g = mkdirs("vm", "100")
    (g / "owner").write_text("root@pam\n")
    (g / "notes").write_text("first line\nsecond line")
    s1 = mkdirs("vm", "100", "2020-01-01T00:00:00Z")
    conf = encode_blob(b"memory: 512\n")
    log = encode_blob(b"client log\n")
    (s1 / "qemu-server.conf.blob").write_bytes(conf)
    (s1 / "client.log.blob").write_bytes(log)
    shutil.copyfile(PBS_DIDX, s1 / "root.pxar.didx")
    (s1 / "index.json.blob").write_bytes(
        _manifest_blob("vm", "100", "2020-01-01T00:00:00Z", {"qemu-server.conf.blob": conf}))
    (s1 / ".protected").write_bytes(b"")
    # snapshot entries PBS's file regex or type check rejects
    (s1 / "index.json.tmp_a1B2c3").write_bytes(b"leftover")
    (s1 / "notes.txt").write_text("x")
    (s1 / "x.blob").mkdir()
    os.symlink("client.log.blob", s1 / "y.blob")
    s2 = mkdirs("vm", "100", "2020-01-02T00:00:00Z")  # unfinished: a backup died here
    (s2 / "drive-scsi0.img.tmp_fidx").write_bytes(b"partial")
    (s2 / "drive-scsi0.img.fidx").write_bytes(b"")
    # names in the group PBS skips: wrong format, impossible date, not a directory, symlink
    for bad in ("2020-01-03T00:00:00", "2020-01-03 00:00:00Z", "2020-1-03T00:00:00Z",
                "garbage", ".hidden", "1970-01-01T00:00:00Z"):
        mkdirs("vm", "100", bad)
    (g / "2020-01-04T00:00:00Z").write_text("a file, not a snapshot")
    os.symlink("2020-01-01T00:00:00Z", g / "2020-01-05T00:00:00Z")
    # groups PBS skips
    for parts in (("vm", ".hidden"), ("vm", "-x"), ("foo", "100"), ("VM", "100"),
                  ("vm", "a b")):
        mkdirs(*parts)
    (base / "vm" / "file").write_text("x")
    os.symlink("100", base / "vm" / "linkgrp")
    os.symlink("vm", base / "host")  # a symlinked type directory is skipped whole
    c = mkdirs("ct", "200", "2021-06-01T12:30:00Z")
    (c.parent / "owner").write_text("user@pbs!tok  \r\nignored second line\n")
    (c / "index.json.blob").write_bytes(_manifest_blob("ct", "200", "2021-06-01T12:30:00Z", {}))
    # namespaces
    web = mkdirs("ns", "a", "host", "web", "2022-02-02T02:02:02Z")
    (web / "index.json.blob").write_bytes(
        _manifest_blob("host", "web", "2022-02-02T02:02:02Z", {}))
    (base / "ns" / "a" / "host" / "web" / "owner").write_text("root@pam\n")
    mkdirs("ns", "a", "ns", "b")
    mkdirs("ns", "a", "ns", "c", "ns", "d")
    for bad in (".hidden", "bad name", "-x"):
        mkdirs("ns", bad)
    (base / "ns" / "file").write_text("x")
    os.symlink("a", base / "ns" / "linkns")
    mkdirs("ns", "a", "ns", "z" * 254)  # "a/" + 254 chars + 1 > 256: too long for PBS


@pytest.fixture()
def pbs(tmp_path: Path) -> Datastore:
    build_pbs_tree(tmp_path / "pbs")
    return Datastore.open(str(tmp_path / "pbs"))


def test_pbs_tree_groups(pbs: Datastore) -> None:
    assert pbs.list_groups(ROOT) == [BackupGroup(BackupType.CT, "200"), VM100]
    assert pbs.list_groups(ns("a")) == [BackupGroup(BackupType.HOST, "web")]
    assert pbs.list_groups(ns("a/b")) == []
    with pytest.raises(NotFound, match="a/missing"):
        pbs.list_groups(ns("a/missing"))
    assert pbs.group_exists(ROOT, VM100)
    assert not pbs.group_exists(ROOT, BackupGroup(BackupType.VM, "linkgrp"))
    assert not pbs.group_exists(ROOT, BackupGroup(BackupType.VM, "file"))


def test_pbs_tree_snapshots(pbs: Datastore) -> None:
    s1, s2 = snap(VM100, "2020-01-01T00:00:00Z"), snap(VM100, "2020-01-02T00:00:00Z")
    assert pbs.list_snapshots(ROOT, VM100) == [
        SnapshotInfo(s1, finished=True, protected=True, files=[
            "client.log.blob", "index.json.blob", "qemu-server.conf.blob", "root.pxar.didx"]),
        SnapshotInfo(s2, finished=False, protected=False, files=["drive-scsi0.img.fidx"]),
    ]
    last = pbs.last_finished_snapshot(ROOT, VM100)
    assert last is not None and last.dir == s1
    assert pbs.snapshot_info(ROOT, s2).finished is False
    ct = BackupGroup(BackupType.CT, "200")
    assert [s.dir.time_string for s in pbs.list_snapshots(ROOT, ct)] == ["2021-06-01T12:30:00Z"]
    with pytest.raises(NotFound):
        pbs.list_snapshots(ROOT, BackupGroup(BackupType.VM, "999"))


def test_impossible_or_non_canonical_dates_are_skipped(pbs: Datastore) -> None:
    g = Path(pbs.path) / "vm" / "100"
    for name in ("2020-13-01T00:00:00Z", "2020-02-30T00:00:00Z", "2020-01-01T24:00:00Z"):
        (g / name).mkdir()
    times = [s.dir.time_string for s in pbs.list_snapshots(ROOT, VM100)]
    assert times == ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"]


def test_pbs_tree_namespaces(pbs: Datastore) -> None:
    assert pbs.list_child_namespaces(ROOT) == [ns("a")]
    assert pbs.list_child_namespaces(ns("a")) == [ns("a/b"), ns("a/c")]
    assert list(pbs.iter_namespaces(ROOT)) == [ROOT, ns("a"), ns("a/b"), ns("a/c"),
                                               ns("a/c/d")]
    assert list(pbs.iter_namespaces(ns("a"), 1)) == [ns("a"), ns("a/b"), ns("a/c")]
    assert list(pbs.iter_namespaces(ROOT, 0)) == [ROOT]
    assert pbs.namespace_exists(ns("a/c/d"))
    assert not pbs.namespace_exists(ns("linkns"))
    assert not pbs.namespace_exists(ns("file"))
    with pytest.raises(InvalidName):
        pbs.iter_namespaces(ROOT, 8)


def test_pbs_tree_owner_notes_manifest_and_index(pbs: Datastore) -> None:
    assert pbs.get_owner(ROOT, VM100) == ROOT_PAM
    assert pbs.get_owner(ROOT, BackupGroup(BackupType.CT, "200")) == Authid.parse("user@pbs!tok")
    assert pbs.get_group_notes(ROOT, VM100) == "first line\nsecond line"
    s1 = snap(VM100, "2020-01-01T00:00:00Z")
    m = pbs.load_manifest(ROOT, s1)
    assert (m.backup_type, m.backup_id, m.backup_time) == ("vm", "100", s1.time)
    assert [f.filename for f in m.files] == ["qemu-server.conf.blob"]
    assert pbs.load_manifest_raw(ROOT, s1) == (Path(pbs.path) / snapshot_key(ROOT, s1)
                                               / "index.json.blob").read_bytes()
    assert pbs.is_protected(ROOT, s1)
    index = pbs.load_index(ROOT, s1, "root.pxar.didx")
    assert isinstance(index, DynamicIndex)
    assert index.csum().hex() == (
        "e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20")
    assert index.size == 104859232
    assert pbs.read_file(ROOT, s1, "qemu-server.conf.blob")[:8] != b""
    with pytest.raises(NotFound, match="no manifest"):
        pbs.load_manifest(ROOT, snap(VM100, "2020-01-02T00:00:00Z"))
    with pytest.raises(FormatError, match=r"drive-scsi0\.img\.fidx"):
        pbs.load_index(ROOT, snap(VM100, "2020-01-02T00:00:00Z"), "drive-scsi0.img.fidx")


# -- namespaces ---------------------------------------------------------------------------

def test_namespace_create_and_depth_limit(ds: Datastore) -> None:
    with pytest.raises(NotFound, match="parent"):
        ds.make_namespace_dir(ns("a/b"))
    chain = "a/b/c/d/e/f/g"
    parts = chain.split("/")
    for i in range(1, 8):
        ds.make_namespace_dir(ns("/".join(parts[:i])))
    deepest = ns(chain)
    assert deepest.depth == 7 and ds.namespace_exists(deepest)
    assert os.path.isdir(os.path.join(ds.path, namespace_key(deepest)))
    with pytest.raises(AlreadyExists, match="a/b"):
        ds.make_namespace_dir(ns("a/b"))
    with pytest.raises(InvalidName):
        deepest.child("h")  # an 8th level cannot even be named
    # ...and one made by hand is not listed
    os.makedirs(os.path.join(ds.path, namespace_key(deepest), "ns", "h"))
    assert ds.list_child_namespaces(deepest) == []
    found = list(ds.iter_namespaces(ROOT))
    assert found == [ROOT] + [ns("/".join(parts[:i])) for i in range(1, 8)]
    assert list(ds.iter_namespaces(ns("a/b/c/d/e"), 7)) == [
        ns("a/b/c/d/e"), ns("a/b/c/d/e/f"), ns(chain)]


def test_iter_namespaces_is_lazy(ds: Datastore) -> None:
    ds.make_namespace_dir(ns("a"))
    it = ds.iter_namespaces(ROOT)
    assert next(it) == ROOT
    ds.make_namespace_dir(ns("b"))  # appears: children are listed after the parent is yielded
    assert list(it) == [ns("a"), ns("b")]


def test_remove_namespace_dir_if_empty(ds: Datastore) -> None:
    ds.make_namespace_dir(ns("a"))
    ds.make_namespace_dir(ns("a/b"))
    assert ds.remove_namespace_dir_if_empty(ns("a")) is False  # has a child
    ds.make_group_dir(ns("a/b"), VM100, ROOT_PAM)
    assert ds.remove_namespace_dir_if_empty(ns("a/b")) is False  # has a group
    assert ds.namespace_exists(ns("a/b"))
    ds.remove_group_dir(ns("a/b"), VM100)
    assert ds.remove_namespace_dir_if_empty(ns("a/b")) is True  # empty vm/ dir removed too
    assert ds.remove_namespace_dir_if_empty(ns("a")) is True
    assert not os.path.exists(os.path.join(ds.path, "ns", "a"))
    with pytest.raises(NotFound):
        ds.remove_namespace_dir_if_empty(ns("a"))
    with pytest.raises(DatastoreError, match="root"):
        ds.remove_namespace_dir_if_empty(ROOT)
    assert os.path.isdir(os.path.join(ds.path, ".chunks"))


# -- groups -------------------------------------------------------------------------------

def test_group_owner(ds: Datastore) -> None:
    other = Authid.parse("user@pbs!token1")
    assert ds.make_group_dir(ROOT, VM100, ROOT_PAM) == ROOT_PAM
    assert ds.make_group_dir(ROOT, VM100, other) == ROOT_PAM  # never overwritten
    owner_path = Path(ds.path) / group_key(ROOT, VM100) / "owner"
    assert owner_path.read_bytes() == b"root@pam\n"
    ds.set_owner(ROOT, VM100, other)
    assert owner_path.read_bytes() == b"user@pbs!token1\n"
    assert ds.get_owner(ROOT, VM100) == other
    owner_path.write_bytes(b"not an owner\n")
    with pytest.raises(FormatError, match="owner"):
        ds.get_owner(ROOT, VM100)
    owner_path.unlink()
    with pytest.raises(NotFound, match="no owner"):
        ds.get_owner(ROOT, VM100)
    with pytest.raises(NotFound, match="namespace"):
        ds.make_group_dir(ns("missing"), VM100, ROOT_PAM)
    with pytest.raises(NotFound):
        ds.set_owner(ROOT, BackupGroup(BackupType.CT, "1"), ROOT_PAM)


def test_group_notes(ds: Datastore) -> None:
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    assert ds.get_group_notes(ROOT, VM100) == ""
    ds.set_group_notes(ROOT, VM100, "héllo\nworld")
    assert (Path(ds.path) / "vm/100/notes").read_bytes() == "héllo\nworld".encode()
    assert ds.get_group_notes(ROOT, VM100) == "héllo\nworld"
    (Path(ds.path) / "vm/100/notes").write_bytes(b"\xff")
    with pytest.raises(FormatError):
        ds.get_group_notes(ROOT, VM100)


def test_remove_group_dir(ds: Datastore) -> None:
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    ds.set_group_notes(ROOT, VM100, "n")
    s = snap(VM100, "2024-01-01T00:00:00Z")
    ds.make_snapshot_dir(ROOT, s)
    with pytest.raises(DatastoreError, match="1 snapshot"):
        ds.remove_group_dir(ROOT, VM100)
    ds.remove_snapshot_dir(ROOT, s)
    (Path(ds.path) / "vm/100/stray").write_text("x")
    with pytest.raises(DatastoreError, match="not empty"):
        ds.remove_group_dir(ROOT, VM100)
    (Path(ds.path) / "vm/100/stray").unlink()
    ds.remove_group_dir(ROOT, VM100)
    assert not ds.group_exists(ROOT, VM100)
    assert ds.list_groups(ROOT) == []


# -- snapshots ----------------------------------------------------------------------------

def test_snapshot_lifecycle(ds: Datastore) -> None:
    s = snap(VM100, "2024-05-06T07:08:09Z")
    with pytest.raises(NotFound, match="group vm/100"):
        ds.make_snapshot_dir(ROOT, s)
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    ds.make_snapshot_dir(ROOT, s)
    with pytest.raises(AlreadyExists):
        ds.make_snapshot_dir(ROOT, s)
    assert ds.list_snapshots(ROOT, VM100) == [SnapshotInfo(s, False, False, [])]

    conf = encode_blob(b"cores: 2\n")
    ds.write_blob_file(ROOT, s, "qemu-server.conf.blob", conf)
    digest = hashlib.sha256(b"x").digest()
    didx = DynamicIndex.from_chunks([10, 20], [digest, digest], ctime=1)
    fidx = FixedIndex.from_digests(8192, 4096, [digest, digest], ctime=1)
    ds.write_index_file(ROOT, s, "root.pxar.didx", didx.encode())
    ds.write_index_file(ROOT, s, "drive-scsi0.img.fidx", fidx.encode())
    loaded_d = ds.load_index(ROOT, s, "root.pxar.didx")
    loaded_f = ds.load_index(ROOT, s, "drive-scsi0.img.fidx")
    assert isinstance(loaded_d, DynamicIndex) and loaded_d.csum() == didx.csum()
    assert isinstance(loaded_f, FixedIndex) and loaded_f.csum() == fidx.csum()
    snapdir = Path(ds.path) / snapshot_key(ROOT, s)
    assert sorted(os.listdir(snapdir)) == [
        "drive-scsi0.img.fidx", "qemu-server.conf.blob", "root.pxar.didx"]  # no tmp names

    m = manifest_for(s, [FileInfo.for_blob("qemu-server.conf.blob", conf, "none")])
    ds.write_manifest(ROOT, s, m)
    assert ds.load_manifest(ROOT, s).to_dict() == m.to_dict()
    info = ds.list_snapshots(ROOT, VM100)[0]
    assert info.finished and not info.protected
    assert ds.read_file(ROOT, s, "qemu-server.conf.blob") == conf

    ds.set_protected(ROOT, s, True)
    ds.set_protected(ROOT, s, True)
    assert ds.is_protected(ROOT, s) and ds.list_snapshots(ROOT, VM100)[0].protected
    assert (snapdir / ".protected").read_bytes() == b""
    with pytest.raises(DatastoreError, match="protected"):
        ds.remove_snapshot_dir(ROOT, s)
    ds.set_protected(ROOT, s, False)
    ds.set_protected(ROOT, s, True)
    ds.remove_snapshot_dir(ROOT, s, force=True)
    assert not ds.snapshot_exists(ROOT, s)
    with pytest.raises(NotFound):
        ds.remove_snapshot_dir(ROOT, s)
    with pytest.raises(NotFound):
        ds.set_protected(ROOT, s, True)


def test_corrupt_manifest_is_a_format_error(ds: Datastore) -> None:
    s = snap(VM100, "2024-05-06T07:08:09Z")
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    ds.make_snapshot_dir(ROOT, s)
    path = Path(ds.path) / file_key(ROOT, s, "index.json.blob")
    for raw in (b"", b"garbage" * 3, encode_blob(b"{not json"), encode_blob(b"[]")):
        path.write_bytes(raw)
        with pytest.raises(FormatError, match="vm/100"):
            ds.load_manifest(ROOT, s)


def test_last_finished_snapshot(ds: Datastore) -> None:
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    assert ds.last_finished_snapshot(ROOT, VM100) is None
    a, b, c = (snap(VM100, f"2024-01-0{d}T00:00:00Z") for d in (1, 2, 3))
    for s in (c, a, b):
        ds.make_snapshot_dir(ROOT, s)
    ds.write_manifest(ROOT, a, manifest_for(a))
    ds.write_manifest(ROOT, b, manifest_for(b))
    last = ds.last_finished_snapshot(ROOT, VM100)
    assert last is not None and last.dir == b
    assert [i.dir for i in ds.list_snapshots(ROOT, VM100)] == [a, b, c]


def test_index_writes_use_the_pbs_temp_names() -> None:
    assert index_tmp_name("root.pxar.didx") == "root.pxar.tmp_didx"
    assert index_tmp_name("drive-scsi0.img.fidx") == "drive-scsi0.img.tmp_fidx"
    with pytest.raises(InvalidName):
        index_tmp_name("conf.blob")


def test_sync_level_file_and_filesystem(tmp_path: Path) -> None:
    for level in (SyncLevel.FILE, SyncLevel.FILESYSTEM):
        ds = Datastore.create(str(tmp_path / level.value), sync_level=level, sparse=True)
        ds.make_group_dir(ROOT, VM100, ROOT_PAM)
        s = snap(VM100, "2024-01-01T00:00:00Z")
        ds.make_snapshot_dir(ROOT, s)
        ds.write_manifest(ROOT, s, manifest_for(s))
        ds.sync_after_backup()
        assert ds.snapshot_info(ROOT, s).finished


# -- malicious names never leave the datastore --------------------------------------------

@pytest.mark.parametrize("name", ["../../../etc/passwd", "../x.blob", "a/b.blob", "/x.blob",
                                  ".protected/../x.blob", "x.blob\x00", "", ".", "..",
                                  "..blob", "index.json.blob/../../owner"])
def test_file_names_cannot_escape(ds: Datastore, tmp_path: Path, name: str) -> None:
    s = snap(VM100, "2024-01-01T00:00:00Z")
    ds.make_group_dir(ROOT, VM100, ROOT_PAM)
    ds.make_snapshot_dir(ROOT, s)
    with pytest.raises(InvalidName):
        ds.read_file(ROOT, s, name)
    with pytest.raises(InvalidName):
        ds.write_blob_file(ROOT, s, name, encode_blob(b"x"))
    with pytest.raises(InvalidName):
        ds.write_index_file(ROOT, s, name, b"")
    with pytest.raises(InvalidName):
        ds.load_index(ROOT, s, name)
    assert sorted(os.listdir(tmp_path)) == ["store"]


@pytest.mark.parametrize("text", ["..", "../x", "a/..", ".hidden", "-x", "a b", "a\x00"])
def test_names_cannot_escape(text: str) -> None:
    with pytest.raises(InvalidName):
        BackupGroup(BackupType.VM, text)
    with pytest.raises(InvalidName):
        BackupNamespace.parse(text)


def test_wrong_types_are_rejected(ds: Datastore) -> None:
    with pytest.raises(InvalidName):
        ds.list_groups("vm")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        ds.make_group_dir(ROOT, VM100, "root@pam")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        ds.list_snapshots(ROOT, "vm/100")  # type: ignore[arg-type]


def test_backend_is_exposed(ds: Datastore) -> None:
    assert isinstance(ds.backend, FilesystemBackend)
    assert ds.backend.local_path("") == ds.path
