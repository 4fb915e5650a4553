"""Verify with PBS's semantics (spec §10, §8.5, §11.5) on real datastores and real backups.

Corruption is made the way it happens: bytes flipped, files truncated or removed on disk, a
manifest that disagrees with its files. Lock conflicts use a real child process.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, BackupResult, run_backup
from chunkyard.datastore.chunk_store import chunk_key
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking.tasks import new_task_upid, process_start_time
from chunkyard.datastore.maintenance.verify import (
    Outcome,
    SkipReason,
    VerifyOptions,
    VerifyWorker,
    needs_verification,
    parse_verify_state,
    plan_snapshots,
    run_verify,
    verify_worker_id,
)
from chunkyard.errors import InvalidName, NotFound
from chunkyard.formats.crypt import CryptConfig
from chunkyard.formats.keyfile import create_key_file
from chunkyard.formats.manifest import BackupManifest, CryptMode, FileInfo
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace, Upid
from chunkyard.names.systemd import escape_unit as escape_worker_id
from chunkyard.names.systemd import unescape_unit as unescape_worker_id
from tests.store_helpers import OWNER, ROOT, T0, S, X, holding, make_namespaces, ns

HOST_X = BackupGroup.parse("host/x")
AUTH = "root@pam"
NEVER_SKIP = VerifyOptions(ignore_verified=False)

_SCRIPT = Path(sys.executable).with_name("chunkyard")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkyard.cli.main"]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """~200 KiB of incompressible data: several 64 KiB-average chunks."""
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.bin").write_bytes(random.Random(1).randbytes(200_000))  # fixed: a fixed chunk count
    (d / "b.txt").write_text("verify me\n")
    return d


def do_backup(ds: Datastore, src: Path, when: int, *, namespace: str = "",
              group: BackupGroup = HOST_X, crypt: CryptConfig | None = None,
              conf: Path | None = None) -> BackupResult:
    archives = [ArchiveSpec.parse(f"root.tar:{src}")]
    if conf is not None:
        archives.append(ArchiveSpec.parse(f"vm.conf:{conf}"))
    req = BackupRequest(namespace=ns(namespace), group=group, backup_time=when,
                        archives=archives, owner=OWNER, crypt=crypt, chunk_size=64 * 1024)
    return run_backup(ds, req)


def snap_of(ds: Datastore, src: Path, when: int, **kw: Any) -> BackupDir:
    return do_backup(ds, src, when, **kw).snapshot


def digests(ds: Datastore, snap: BackupDir, namespace: str = "") -> list[bytes]:
    return ds.load_index(ns(namespace), snap, "root.tar.didx").digest_list()


def chunk_path(ds: Datastore, digest: bytes) -> Path:
    return Path(ds.path, chunk_key(digest))


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def verify(ds: Datastore, target: BackupGroup | BackupDir | None = None, *,
           namespace: str = "", options: VerifyOptions = NEVER_SKIP, **kw: Any) -> Any:
    return run_verify(ds, authid=AUTH, ns=ns(namespace), target=target, options=options, **kw)


def verify_state(ds: Datastore, snap: BackupDir, namespace: str = "") -> Any:
    return ds.load_manifest(ns(namespace), snap).unprotected.get("verify_state")


def rewrite_manifest(ds: Datastore, snap: BackupDir, name: str, **changes: Any) -> None:
    """Change one file entry of the manifest (as a tampered or buggy writer would)."""
    m = ds.load_manifest(ROOT, snap)
    m.files = [FileInfo(**{**{"filename": f.filename, "crypt_mode": f.crypt_mode,
                               "size": f.size, "csum": f.csum}, **changes})
               if f.filename == name else f for f in m.files]
    ds.write_manifest(ROOT, snap, m)


def bad_files(ds: Datastore) -> list[str]:
    return sorted(p.name for p in Path(ds.path, ".chunks").rglob("*.bad"))


# -- UPID (§11.5) ---------------------------------------------------------------------------

def test_upid_parses_pbs_example_and_round_trips() -> None:
    text = "UPID:elsa:00004F37:0039E469:00000000:5CA78B83:garbage_collection::root@pam:"
    u = Upid.parse(text)
    assert (u.node, u.pid, u.pstart, u.task_id, u.starttime) == (
        "elsa", 0x4F37, 0x39E469, 0, 0x5CA78B83)
    assert (u.worker_type, u.worker_id, u.authid) == ("garbage_collection", None, "root@pam")
    assert str(u) == text
    nine = Upid("pbs-1", 1, 0x1_0000_0000, 0x1_0000_0000, 1, "verify", "store", "a@pbs!t")
    assert ":100000000:100000000:" in str(nine)
    assert Upid.parse(str(nine)) == nine


def test_upid_worker_id_escaping() -> None:
    assert escape_worker_id("store:ns/a/host/x/6553F100") == "store\\x3ans-a-host-x-6553F100"
    assert escape_worker_id(".hidden x") == "\\x2ehidden\\x20x"
    assert escape_worker_id("é") == "\\xc3\\xa9"
    for wid in ("store:/vm/100/6553F100", ".a b:c", "é-ü", "x"):
        assert unescape_worker_id(escape_worker_id(wid)) == wid
        u = Upid("n", 1, 2, 3, 4, "verify_snapshot", wid, AUTH)
        assert Upid.parse(str(u)).worker_id == wid
    for bad in ("\\x4", "\\y41", "\\xZZ", "\\xff"):  # short, unknown, not hex, not UTF-8
        with pytest.raises(InvalidName):
            unescape_worker_id(bad)


@pytest.mark.parametrize("text", [
    "",
    "UPID:elsa:00004F37:0039E469:00000000:5CA78B83:gc::root@pam",  # no trailing colon
    "UPID:elsa:00004F37:0039E469:00000000:5CA78B83:gc::root@pam:\n",
    "UPID:-elsa:00004F37:0039E469:00000000:5CA78B83:gc::root@pam:",  # bad node
    "UPID:elsa:4F37:0039E469:00000000:5CA78B83:gc::root@pam:",  # pid too short
    "UPID:elsa:00004F37:0039E469:00000000:15CA78B83:gc::root@pam:",  # starttime 9 digits
    "UPID:elsa:00004F37:0039E469:00000000:5CA78B8G:gc::root@pam:",  # not hex
    "UPID:elsa:00004F37:0039E469:00000000:5CA78B83:gc:\\x4:root@pam:",  # bad escape
    "UPID:elsa:00004F37:0039E469:00000000:5CA78B83::x:root@pam:",  # empty worker type
    "upid:elsa:00004F37:0039E469:00000000:5CA78B83:gc::root@pam:",
])
def test_upid_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidName):
        Upid.parse(text)


def test_upid_fields_are_validated() -> None:
    with pytest.raises(InvalidName):
        Upid("a.b", 1, 1, 1, 1, "verify", None, AUTH)  # node: no dots
    with pytest.raises(InvalidName):
        Upid("n", 1, 1, 1, 1 << 32, "verify", None, AUTH)  # would not parse back
    with pytest.raises(InvalidName):
        Upid("n", -1, 1, 1, 1, "verify", None, AUTH)
    with pytest.raises(InvalidName):
        Upid("n", 1, 1, 1, 1, "ver ify", None, AUTH)
    with pytest.raises(InvalidName):
        Upid("n", 1, 1, 1, 1, "verify", None, "root:pam")
    with pytest.raises(InvalidName):
        Upid("n", 1, 1, 1, 1, "verify", "", AUTH)


def test_task_upid_of_this_process() -> None:
    before = int(time.time())
    a = new_task_upid("verify", "store", AUTH)
    b = new_task_upid("verify", None, AUTH)
    assert Upid.parse(str(a)) == a and str(b).endswith(":verify::root@pam:")
    assert a.pid == os.getpid() and b.task_id == a.task_id + 1
    assert a.pstart == process_start_time(os.getpid()) > 0
    assert before <= a.starttime <= int(time.time())


def test_worker_ids_as_pbs() -> None:
    snap = BackupDir(HOST_X, 0x6553F100)
    assert verify_worker_id("s1", ROOT, snap) == ("verify_snapshot", "s1:/host/x/6553F100")
    assert verify_worker_id("s1", ns("a/b"), HOST_X) == ("verify_group", "s1:ns/a/ns/b/host/x")
    assert verify_worker_id("s1", ROOT, None) == ("verify", "s1")
    assert verify_worker_id("s1", ns("a"), None) == ("verify", "s1:ns/a")


# -- good snapshots ---------------------------------------------------------------------------

def test_good_snapshot_verifies_ok_and_records_state(ds: Datastore, src: Path,
                                                     tmp_path: Path) -> None:
    conf = tmp_path / "vm.conf"
    conf.write_text("memory: 512\n")
    snap = snap_of(ds, src, T0, conf=conf)
    report = verify(ds, snap)
    assert report.success and [r.outcome for r in report.snapshots] == [Outcome.OK]
    assert report.chunks_verified == len(set(digests(ds, snap))) > 2
    assert report.chunks_corrupt == 0 and report.renamed == [] and bad_files(ds) == []
    state = verify_state(ds, snap)
    assert state == {"upid": report.upid, "state": "ok"}
    upid = Upid.parse(state["upid"])
    assert (upid.worker_type, upid.authid) == ("verify_snapshot", AUTH)
    assert upid.worker_id == f"{ds.name}:/host/x/{T0:08X}"


def test_encrypted_snapshot_verifies_by_crc_and_keeps_its_signature(
        ds: Datastore, src: Path, tmp_path: Path) -> None:
    crypt = create_key_file(str(tmp_path / "key.json"), None, kdf="none")
    snap = snap_of(ds, src, T0, crypt=crypt)
    assert verify(ds, snap).success
    manifest = ds.load_manifest(ROOT, snap)
    assert manifest.unprotected["verify_state"]["state"] == "ok"
    manifest.verify_signature(crypt)  # unprotected is outside the signature
    # a flipped ciphertext byte: the CRC catches it, the chunk goes to .bad
    d = digests(ds, snap)[0]
    flip_byte(chunk_path(ds, d))
    report = verify(ds, snap)
    assert not report.success and report.renamed == [chunk_key(d) + ".0.bad"]


# -- corrupt chunks --------------------------------------------------------------------------

def test_flipped_chunk_fails_every_referencing_snapshot_and_is_renamed_once(
        ds: Datastore, src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s1 = snap_of(ds, src, T0)
    s2 = snap_of(ds, src, T0 + 60)  # references the same chunks (reused from s1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.bin").write_bytes(os.urandom(100_000))
    s3 = snap_of(ds, other, T0, group=BackupGroup.parse("host/y"))
    bad = digests(ds, s1)[1]
    assert bad in digests(ds, s2) and bad not in digests(ds, s3)
    flip_byte(chunk_path(ds, bad), 20)

    loads: list[bytes] = []
    real_load = ds.chunk_store.load

    def counting_load(digest: bytes) -> bytes:
        loads.append(digest)
        return real_load(digest)

    monkeypatch.setattr(ds.chunk_store, "load", counting_load)
    report = verify(ds)
    outcomes = {r.snapshot: r.outcome for r in report.snapshots}
    assert outcomes == {s1: Outcome.FAILED, s2: Outcome.FAILED, s3: Outcome.OK}
    distinct = set(digests(ds, s1)) | set(digests(ds, s2)) | set(digests(ds, s3))
    assert sorted(loads) == sorted(distinct)  # each distinct chunk read exactly once
    assert report.chunks_corrupt == 1 and report.chunks_verified == len(distinct) - 1
    assert report.renamed == [chunk_key(bad) + ".0.bad"]
    assert not chunk_path(ds, bad).exists() and bad_files(ds) == [bad.hex() + ".0.bad"]
    assert verify_state(ds, s1)["state"] == verify_state(ds, s2)["state"] == "failed"
    assert verify_state(ds, s3)["state"] == "ok"
    first = next(r for r in report.snapshots if r.snapshot == s2)  # newest first
    assert any("renamed to" in line for line in first.details)
    later = next(r for r in report.snapshots if r.snapshot == s1)
    assert later.details == [f"chunk {bad.hex()} was marked as corrupt"]
    assert later.errors == ["root.tar.didx: chunks could not be verified"]


def test_second_corruption_of_a_digest_becomes_dot_1_bad(ds: Datastore, src: Path) -> None:
    s1 = snap_of(ds, src, T0)
    bad = digests(ds, s1)[0]
    flip_byte(chunk_path(ds, bad))
    assert not verify(ds, s1).success
    # the next backup does not build on the failed snapshot: it stores the chunk anew
    result = do_backup(ds, src, T0 + 60)
    assert chunk_path(ds, bad).exists()
    assert verify(ds, result.snapshot).success
    flip_byte(chunk_path(ds, bad))
    report = verify(ds, result.snapshot)
    assert report.renamed == [chunk_key(bad) + ".1.bad"]
    assert bad_files(ds) == [bad.hex() + ".0.bad", bad.hex() + ".1.bad"]


def test_rename_corrupt_uses_first_free_slot_and_overwrites_nine(ds: Datastore) -> None:
    from chunkyard.formats.blob import encode_chunk

    digest, encoded = encode_chunk(b"x" * 1000)
    store = ds.chunk_store
    assert store.rename_corrupt(digest) is None  # missing: nothing to do
    for n in range(10):
        store.insert(digest, encoded)
        assert store.rename_corrupt(digest) == f"{chunk_key(digest)}.{min(n, 9)}.bad"
    store.insert(digest, encoded)
    (Path(ds.path) / f"{chunk_key(digest)}.3.bad").unlink()
    assert store.rename_corrupt(digest) == f"{chunk_key(digest)}.3.bad"
    assert len(bad_files(ds)) == 10


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "wrong-data"])
def test_damaged_chunk_fails(ds: Datastore, src: Path, damage: str) -> None:
    from chunkyard.formats.blob import encode_chunk

    snap = snap_of(ds, src, T0)
    d = digests(ds, snap)[0]
    path = chunk_path(ds, d)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"not a blob at all")
    else:  # a valid blob of other data: CRC fine, digest wrong
        path.write_bytes(encode_chunk(b"something else")[1])
    report = verify(ds, snap)
    result = report.snapshots[0]
    assert result.outcome is Outcome.FAILED and report.chunks_corrupt == 1
    assert result.errors == ["root.tar.didx: chunks could not be verified"]
    if damage == "missing":
        assert "load failed" in result.details[0] and report.renamed == []
    else:
        assert report.renamed == [chunk_key(d) + ".0.bad"] and not path.exists()
    assert verify_state(ds, snap)["state"] == "failed"


def test_wrong_chunk_length_is_corrupt(ds: Datastore, src: Path) -> None:
    """A chunk whose data hashes right but whose index range says another size."""
    from chunkyard.formats.dynamic_index import DynamicIndex

    snap = snap_of(ds, src, T0)
    index = ds.load_index(ROOT, snap, "root.tar.didx")
    ends = index.end_list()
    ends = [e + 1 for e in ends]  # chunk 0 one byte longer than its data, the rest shifted
    forged = DynamicIndex.from_chunks(ends, index.digest_list(), uuid=index.uuid,
                                      ctime=index.ctime)
    ds.write_index_file(ROOT, snap, "root.tar.didx", forged.encode())
    rewrite_manifest(ds, snap, "root.tar.didx", size=forged.size, csum=forged.csum())
    report = verify(ds, snap)
    assert not report.success
    assert "wrong length" in report.snapshots[0].details[0]


# -- blobs, indexes, crypt mode ---------------------------------------------------------------

@pytest.fixture
def conf_snap(ds: Datastore, src: Path, tmp_path: Path) -> BackupDir:
    conf = tmp_path / "vm.conf"
    conf.write_text("memory: 512\ncores: 2\n")
    return snap_of(ds, src, T0, conf=conf)


def test_blob_wrong_size_and_checksum(ds: Datastore, conf_snap: BackupDir) -> None:
    info = ds.load_manifest(ROOT, conf_snap).file("vm.conf.blob")
    rewrite_manifest(ds, conf_snap, "vm.conf.blob", size=info.size + 1)
    assert verify(ds, conf_snap).snapshots[0].errors == [
        f"vm.conf.blob: wrong size ({info.size + 1} != {info.size})"]
    rewrite_manifest(ds, conf_snap, "vm.conf.blob", size=info.size, csum=bytes(32))
    assert verify(ds, conf_snap).snapshots[0].errors == ["vm.conf.blob: wrong index checksum"]
    rewrite_manifest(ds, conf_snap, "vm.conf.blob", csum=info.csum)
    assert verify(ds, conf_snap).success


def test_blob_corrupt_on_disk(ds: Datastore, conf_snap: BackupDir) -> None:
    path = Path(ds.path, "host", "x", conf_snap.time_string, "vm.conf.blob")
    flip_byte(path)
    errors = verify(ds, conf_snap).snapshots[0].errors
    assert len(errors) == 1 and errors[0].startswith("vm.conf.blob: blob CRC mismatch")
    path.unlink()
    errors = verify(ds, conf_snap).snapshots[0].errors
    assert len(errors) == 1 and "has no file" in errors[0]
    assert bad_files(ds) == []  # blobs are never renamed


def test_index_checksum_against_manifest(ds: Datastore, src: Path, conf_snap: BackupDir) -> None:
    info = ds.load_manifest(ROOT, conf_snap).file("root.tar.didx")
    rewrite_manifest(ds, conf_snap, "root.tar.didx", csum=bytes(32))
    result = verify(ds, conf_snap).snapshots[0]
    assert result.errors == ["root.tar.didx: wrong index checksum"]
    rewrite_manifest(ds, conf_snap, "root.tar.didx", csum=info.csum, size=info.size - 1)
    result = verify(ds, conf_snap).snapshots[0]
    assert result.errors == [f"root.tar.didx: wrong size ({info.size - 1} != {info.size})"]
    rewrite_manifest(ds, conf_snap, "root.tar.didx", size=info.size)
    flip_byte(Path(ds.path, "host", "x", conf_snap.time_string, "root.tar.didx"), 4096 + 3)
    result = verify(ds, conf_snap).snapshots[0]
    assert len(result.errors) == 1 and "checksum mismatch" in result.errors[0]
    assert bad_files(ds) == []


def test_unreadable_manifest_fails_without_state(ds: Datastore, src: Path) -> None:
    snap = snap_of(ds, src, T0)
    manifest = Path(ds.path, "host", "x", snap.time_string, "index.json.blob")
    flip_byte(manifest)
    result = verify(ds, snap).snapshots[0]
    assert result.outcome is Outcome.FAILED and "manifest load error" in result.errors[0]
    flip_byte(manifest)
    assert verify_state(ds, snap) is None  # nothing was written


def test_crypt_mode_mismatch(ds: Datastore, src: Path, tmp_path: Path) -> None:
    plain = snap_of(ds, src, T0)
    # plain chunks under an 'encrypt' entry: an error, but the chunks are intact (not renamed)
    rewrite_manifest(ds, plain, "root.tar.didx", crypt_mode=CryptMode.ENCRYPT)
    result = verify(ds, plain).snapshots[0]
    assert result.outcome is Outcome.FAILED
    assert all("does not match index crypt mode encrypt" in d for d in result.details)
    assert bad_files(ds) == []
    # encrypted chunks under a 'none' entry: an error too, encrypted chunks pass the checks
    crypt = create_key_file(str(tmp_path / "key.json"), None, kdf="none")
    enc = snap_of(ds, src, T0, group=BackupGroup.parse("host/enc"), crypt=crypt)
    m = ds.load_manifest(ROOT, enc)
    m.files = [FileInfo(f.filename, CryptMode.NONE, f.size, f.csum) for f in m.files]
    ds.write_manifest(ROOT, enc, m)
    report = verify(ds, enc)
    assert report.snapshots[0].outcome is Outcome.FAILED
    assert "does not match index crypt mode none" in report.snapshots[0].details[0]
    assert report.chunks_corrupt == 0 and bad_files(ds) == []


# -- the re-verify filter (§10.2) --------------------------------------------------------------

def _manifest_with(state: object) -> BackupManifest:
    m = BackupManifest("host", "x", T0)
    if state is not None:
        m.unprotected["verify_state"] = state
    return m


NOW = 1_800_000_000


def _state(days_ago: float, state: str = "ok") -> dict[str, str]:
    upid = Upid("n", 1, 1, 0, int(NOW - days_ago * 86400), "verify", None, AUTH)
    return {"upid": str(upid), "state": state}


@pytest.mark.parametrize(("ignore", "outdated", "state", "expected"), [
    (False, None, _state(0), True),             # ignore-verified off: always
    (False, 5, _state(0, "failed"), True),
    (True, None, None, True),                   # never verified
    (True, None, _state(100), False),           # verified, no max age: never again
    (True, None, _state(100, "failed"), False),  # ... even when it failed
    (True, 1, _state(1.5), False),              # 1 whole day is not more than 1
    (True, 1, _state(2), True),
    (True, 0, _state(0.9), False),
    (True, 0, _state(1), True),
    (True, 3, _state(-2), False),               # stored start in the future
    (True, None, {"upid": "UPID:garbage", "state": "ok"}, True),  # unreadable: verify
    (True, None, {"upid": str(Upid.parse(_state(1)["upid"])), "state": "weird"}, True),
    (True, None, "ok", True),
])
def test_filter_table(ignore: bool, outdated: int | None, state: object,
                      expected: bool) -> None:
    options = VerifyOptions(ignore_verified=ignore, outdated_after=outdated)
    assert needs_verification(_manifest_with(state), options, now=NOW) is expected


def test_parse_verify_state() -> None:
    assert parse_verify_state(None) is None
    assert parse_verify_state({"state": "ok"}) is None
    parsed = parse_verify_state(_state(1, "failed"))
    assert parsed is not None and parsed.state == "failed"


def test_ignore_verified_and_outdated_after_end_to_end(ds: Datastore, src: Path) -> None:
    snap = snap_of(ds, src, T0)
    default = VerifyOptions()
    assert verify(ds, snap, options=default).snapshots[0].outcome is Outcome.OK
    again = verify(ds, snap, options=default).snapshots[0]
    assert (again.outcome, again.reason) == (Outcome.SKIPPED, SkipReason.RECENTLY_VERIFIED)
    assert "(recently verified)" in again.log[0]
    # a state three days old: outdated after 2 days, not after 3
    m = ds.load_manifest(ROOT, snap)
    old = Upid.parse(m.unprotected["verify_state"]["upid"])
    stale = Upid(old.node, old.pid, old.pstart, old.task_id, old.starttime - 3 * 86400 - 60,
                 old.worker_type, old.worker_id, old.authid)
    m.unprotected["verify_state"] = {"upid": str(stale), "state": "failed"}
    ds.write_manifest(ROOT, snap, m)
    opts3 = VerifyOptions(outdated_after=3)
    assert verify(ds, snap, options=opts3).snapshots[0].outcome is Outcome.SKIPPED
    opts2 = VerifyOptions(outdated_after=2)
    assert verify(ds, snap, options=opts2).snapshots[0].outcome is Outcome.OK


def test_options_are_validated() -> None:
    for bad in ({"outdated_after": -1}, {"read_threads": 0}, {"decode_threads": 33}):
        with pytest.raises(InvalidName):
            VerifyOptions(**bad)  # type: ignore[arg-type]


# -- locks -----------------------------------------------------------------------------------

def test_busy_snapshot_is_skipped_and_counts_as_success(ds: Datastore, src: Path) -> None:
    busy = snap_of(ds, src, T0)
    free = snap_of(ds, src, T0 + 60)
    with holding(ds, f"forget {busy}", lambda s: s.snapshot(ROOT, busy, X)) as pid:
        report = verify(ds, HOST_X)
    assert report.success
    results = {r.snapshot: r for r in report.snapshots}
    assert results[free].outcome is Outcome.OK
    skipped = results[busy]
    assert (skipped.outcome, skipped.reason) == (Outcome.SKIPPED, SkipReason.BUSY)
    assert "could not acquire snapshot lock" in skipped.log[0]
    assert f"pid {pid}" in skipped.log[0]
    assert verify_state(ds, busy) is None and verify_state(ds, free)["state"] == "ok"


def test_a_reader_does_not_block_verify(ds: Datastore, src: Path) -> None:
    snap = snap_of(ds, src, T0)
    with holding(ds, f"restore {snap}", lambda s: s.snapshot(ROOT, snap, S)):
        assert verify(ds, snap).snapshots[0].outcome is Outcome.OK


# -- backups after a failed verify (§10.3) -----------------------------------------------------

def test_backup_does_not_build_on_a_failed_snapshot(ds: Datastore, src: Path) -> None:
    s1 = snap_of(ds, src, T0)
    reuse = do_backup(ds, src, T0 + 60)
    assert reuse.base == s1 and sum(a.chunks_reused for a in reuse.archives) > 0
    bad = digests(ds, reuse.snapshot)[0]
    flip_byte(chunk_path(ds, bad))
    assert not verify(ds, reuse.snapshot).success
    after = do_backup(ds, src, T0 + 120)
    assert after.base is None  # not the failed snapshot, and not an older one either
    assert sum(a.chunks_reused for a in after.archives) == 0
    assert after.upload.count == len(digests(ds, after.snapshot))
    assert chunk_path(ds, bad).exists()  # re-uploaded
    assert verify(ds, after.snapshot).success
    # once the base verifies ok again, it is used again
    assert do_backup(ds, src, T0 + 180).base == after.snapshot


# -- scope -------------------------------------------------------------------------------------

def test_scope_order_depth_and_benchmark(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "a/b")
    layout = [("", "vm/1"), ("", "host/benchmark"), ("", "ct/9"), ("", "host/a"),
              ("a", "host/z"), ("a/b", "host/y"), ("a/b", "ct/9")]
    for namespace, group in layout:
        snap_of(ds, src, T0, namespace=namespace, group=BackupGroup.parse(group))
    snap_of(ds, src, T0 + 60, group=BackupGroup.parse("host/a"))

    def names(plan: list[tuple[BackupNamespace, BackupDir]]) -> list[str]:
        return [f"{n}:{s.group}@{s.time - T0}" for n, s in plan]

    assert names(plan_snapshots(ds, ROOT)) == [
        ":ct/9@0", "a/b:ct/9@0", ":host/a@60", ":host/a@0", "a/b:host/y@0", "a:host/z@0",
        ":vm/1@0"]
    assert names(plan_snapshots(ds, ROOT, max_depth=0)) == [
        ":ct/9@0", ":host/a@60", ":host/a@0", ":vm/1@0"]
    assert names(plan_snapshots(ds, ns("a"))) == ["a/b:ct/9@0", "a/b:host/y@0", "a:host/z@0"]
    assert names(plan_snapshots(ds, ns("a"), max_depth=0)) == ["a:host/z@0"]
    bench = BackupGroup.parse("host/benchmark")
    assert names(plan_snapshots(ds, ROOT, bench)) == [":host/benchmark@0"]  # when asked for
    with pytest.raises(NotFound):
        plan_snapshots(ds, ns("nope"))
    with pytest.raises(NotFound):
        plan_snapshots(ds, ROOT, BackupDir(HOST_X, T0))
    report = verify(ds, namespace="a")
    assert report.success and len(report.snapshots) == 3
    assert {str(r.ns) for r in report.snapshots} == {"a", "a/b"}


def test_worker_counts_threads_and_closes(ds: Datastore, src: Path) -> None:
    snap = snap_of(ds, src, T0)
    upid = new_task_upid("verify", None, AUTH)
    with VerifyWorker(ds, upid, VerifyOptions(ignore_verified=False, read_threads=3,
                                              decode_threads=1)) as worker:
        assert worker.verify_snapshot(ROOT, snap).outcome is Outcome.OK
        assert worker.verify_snapshot(ROOT, snap).outcome is Outcome.OK  # all known: no reads
        assert worker.bytes_read == sum(
            chunk_path(ds, d).stat().st_size for d in set(digests(ds, snap)))
    with pytest.raises(InvalidName):
        VerifyWorker(ds, "not a upid")


# -- CLI ---------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHUNKYARD_AUTHID=AUTH, COLUMNS="200")
    env.pop("CHUNKYARD_REPOSITORY", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_cli_json_summary_and_exit_code(ds: Datastore, src: Path, tmp_path: Path) -> None:
    s1 = snap_of(ds, src, T0)
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.bin").write_bytes(os.urandom(1000))
    s2 = snap_of(ds, other, T0, group=BackupGroup.parse("host/y"))
    r = ("--repository", ds.path)
    good = cli("verify", *r, "--output-format", "json")
    assert good.returncode == 0, good.stderr
    data = json.loads(good.stdout)
    assert data["result"] == "ok" and data["counts"] == {
        "snapshots": 2, "ok": 2, "failed": 0, "skipped": 0}
    assert Upid.parse(data["upid"]).worker_type == "verify"
    assert [row["snapshot"] for row in data["snapshots"]] == [str(s1), str(s2)]
    flip_byte(chunk_path(ds, digests(ds, s2)[-1]))
    bad = cli("verify", "host/y", *r, "--ignore-verified", "false", "--output-format", "json")
    assert bad.returncode == 1
    data = json.loads(bad.stdout)
    assert data["result"] == "failed" and data["chunks"]["corrupt"] == 1
    assert data["chunks"]["renamed"] == 1 and data["snapshots"][0]["result"] == "failed"
    assert bad.stderr.startswith("Error: verification failed") and str(s2) in bad.stderr
    text = cli("verify", str(s1), *r, "--ignore-verified", "0")
    assert text.returncode == 0 and text.stdout.startswith(f"ok       {s1}")
    assert "1 ok, 0 failed, 0 skipped" in text.stdout


def test_cli_bad_input_is_one_line(ds: Datastore) -> None:
    r = ("--repository", ds.path)
    assert "TYPE/ID" in one_line_error(cli("verify", "host", *r))
    assert "max-depth" in one_line_error(cli("verify", "host/x", "--max-depth", "1", *r))
    assert "not a boolean" in one_line_error(cli("verify", *r, "--ignore-verified", "maybe"))
    assert "does not exist" in one_line_error(cli("verify", "host/x", *r))
    assert "outdated-after" in one_line_error(cli("verify", *r, "--outdated-after", "-1"))
