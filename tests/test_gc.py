"""Garbage collection (spec §8) on real files, and the races the issue names, each as a
deterministic interleaving: a real `chunkyard gc` process frozen (SIGSTOP) at a fault point
while this test backs up, prunes or moves, then resumed.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking.chunk_store_lock import WRITER_BASE
from chunkyard.datastore.maintenance.gc import (
    GcOptions,
    GcStatus,
    garbage_collection,
    load_status,
)
from chunkyard.datastore.moves import move_group, move_namespace
from chunkyard.datastore.snapshots import forget_snapshot
from chunkyard.formats.blob import encode_chunk
from chunkyard.names import BackupDir, BackupGroup
from tests.helpers import tree_state
from tests.store_helpers import ROOT, T0, backup, make_namespaces, ns

HOST = BackupGroup.parse("host/h")
VM = BackupGroup.parse("vm/1")
DAY = 86400
_SCRIPT = Path(sys.executable).with_name("chunkyard")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkyard.cli.main"]
CTX = multiprocessing.get_context("fork")
PBS_STATUS_KEYS = {"upid", "index-file-count", "index-data-bytes", "disk-bytes", "disk-chunks",
                   "removed-bytes", "removed-chunks", "pending-bytes", "pending-chunks",
                   "removed-bad", "still-bad", "cache-stats"}


def make_src(path: Path, seed: int, size: int = 600_000) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.bin").write_bytes(random.Random(seed).randbytes(size))
    (path / "note.txt").write_text(f"tree {seed}\n")
    return path


def chunk_files(ds: Datastore) -> dict[str, os.stat_result]:
    out = {}
    for directory, _, files in os.walk(Path(ds.path) / ".chunks"):
        for name in files:
            out[name] = os.stat(os.path.join(directory, name))
    return out


def age_chunks(ds: Datastore, seconds: float) -> None:
    """Pretend every chunk was last touched `seconds` ago (atime only; mtime kept)."""
    then = time.time() - seconds
    for directory, _, files in os.walk(Path(ds.path) / ".chunks"):
        for name in files:
            path = os.path.join(directory, name)
            os.utime(path, (then, os.stat(path).st_mtime))


def restores(ds: Datastore, where: str, snap: BackupDir, src: Path, tmp: Path) -> bool:
    target = tmp / f"restore-{snap.time}-{time.monotonic_ns()}"
    run_restore(ds, RestoreRequest(ns(where), snap, "root.tar", str(target)))
    return tree_state(target) == tree_state(src)


def no_missing_chunks(ds: Datastore) -> bool:
    """The independent checker (written from the spec alone) finds every referenced chunk."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "pbs_check.py"
    result = subprocess.run([sys.executable, str(tool), "--no-chunk-scan", ds.path],
                            capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stdout.splitlines() if "prefix directories" not in line
              and not line.startswith(" pbs_check:")]
    assert not errors, result.stdout + result.stderr  # sparse test stores lack prefix dirs
    return True


# -- the basics ------------------------------------------------------------------------------

def test_gc_removes_what_no_index_references_and_keeps_the_rest(ds: Datastore,
                                                                tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 1)
    old = backup(ds, src, "", HOST, T0)
    make_src(src, 2)
    kept = backup(ds, src, "", HOST, T0 + 60)
    forget_snapshot(ds, ROOT, old)
    age_chunks(ds, 2 * DAY)
    before = set(chunk_files(ds))

    status = garbage_collection(ds, upid="UPID:test")

    after = set(chunk_files(ds))
    assert status.removed_chunks == len(before - after) > 0
    assert status.disk_chunks == len(after)
    assert status.index_file_count == 1 and status.pending_chunks == 0
    assert restores(ds, "", kept, src, tmp_path)
    saved = json.loads((Path(ds.path) / ".gc-status").read_text())
    assert set(saved) == PBS_STATUS_KEYS and saved["removed-chunks"] == status.removed_chunks
    assert load_status(ds) == status
    assert oct(os.stat(Path(ds.path) / ".gc-status").st_mode & 0o777) == "0o644"


class _Abort(Exception):
    pass


@pytest.mark.parametrize("calls", [1, 2, 40_000])  # marking, at the sweep's start, mid-sweep
def test_an_aborted_gc_stops_where_asked_and_loses_nothing(ds: Datastore, tmp_path: Path,
                                                          calls: int) -> None:
    src = make_src(tmp_path / "src", 11)
    kept = backup(ds, src, "", HOST, T0)
    garbage_collection(ds, upid="UPID:first", options=GcOptions(atime_safety_check=False))
    garbage = set()
    for i in range(60):
        digest, encoded = encode_chunk(random.Random(i).randbytes(100))
        ds.chunk_store.insert(digest, encoded)
        garbage.add(digest.hex())
    age_chunks(ds, 2 * DAY)
    before = set(chunk_files(ds))
    seen = 0

    def check_abort() -> None:  # called before the one index, then before each prefix dir
        nonlocal seen
        seen += 1
        if seen == calls:
            raise _Abort

    with pytest.raises(_Abort):
        garbage_collection(ds, upid="UPID:aborted", check_abort=check_abort,
                           options=GcOptions(atime_safety_check=False))
    swept_prefixes = max(0, calls - 2)  # prefix directories 0 .. calls - 3 were swept
    removed = {d for d in garbage if int(d[:4], 16) < swept_prefixes}
    assert 0 < len(removed) < len(garbage) or calls < 40_000
    assert set(chunk_files(ds)) == before - removed  # nothing else gone, nothing set aside
    assert load_status(ds).upid == "UPID:first"  # the last complete run's status stays
    assert restores(ds, "", kept, src, tmp_path) and no_missing_chunks(ds)
    status = garbage_collection(ds, options=GcOptions(atime_safety_check=False))
    assert status.removed_chunks + status.disk_chunks == len(before - removed)
    assert garbage - removed <= before - set(chunk_files(ds))


def test_recent_garbage_is_pending_and_old_garbage_goes(ds: Datastore, tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 3)
    snap = backup(ds, src, "", HOST, T0)
    forget_snapshot(ds, ROOT, snap)
    age_chunks(ds, 3600)  # an hour: inside the 24 h 5 min cutoff
    status = garbage_collection(ds, options=GcOptions(atime_safety_check=False))
    assert status.removed_chunks == 0 and status.pending_chunks > 0
    age_chunks(ds, 2 * DAY)
    status = garbage_collection(ds, options=GcOptions(atime_safety_check=False))
    assert status.removed_chunks > 0 and status.pending_chunks == 0


def _old_writer(path: str, started: int, ready: object, done: object) -> None:
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, WRITER_BASE + started)
    ready.set()  # type: ignore[attr-defined]
    done.wait(60)  # type: ignore[attr-defined]


def test_a_backup_running_for_days_in_another_process_protects_its_chunks(
    ds: Datastore, tmp_path: Path
) -> None:
    """Its writer byte says it began three days ago, so GC keeps everything touched since
    then minus five minutes, though the cutoff alone would remove chunks two days old."""
    src = make_src(tmp_path / "src", 4)
    snap = backup(ds, src, "", HOST, T0)
    forget_snapshot(ds, ROOT, snap)
    age_chunks(ds, 2 * DAY)
    ready, done = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_old_writer, daemon=True,
                       args=(os.path.join(ds.path, ".lock"), int(time.time()) - 3 * DAY,
                             ready, done))
    proc.start()
    try:
        assert ready.wait(10)
        status = garbage_collection(ds, options=GcOptions(atime_safety_check=False))
        assert status.removed_chunks == 0
    finally:
        done.set()
        proc.join(10)
    assert garbage_collection(ds, options=GcOptions(atime_safety_check=False)
                              ).removed_chunks > 0


def test_bad_chunks_live_while_referenced_and_missing(ds: Datastore, tmp_path: Path) -> None:
    src = make_src(tmp_path / "src", 5)
    backup(ds, src, "", HOST, T0)
    name, _ = max(chunk_files(ds).items(), key=lambda kv: kv[1].st_size)
    chunk = next((Path(ds.path) / ".chunks").rglob(name))
    chunk.rename(chunk.with_name(name + ".0.bad"))  # as verify does with a corrupt chunk
    stray = chunk.with_name("f" * 64 + ".3.bad")
    stray.write_bytes(b"unreferenced bad chunk")
    age_chunks(ds, 2 * DAY)
    status = garbage_collection(ds, options=GcOptions(atime_safety_check=False))
    assert chunk.with_name(name + ".0.bad").exists(), "referenced: kept alive"
    assert not stray.exists()
    assert status.removed_bad == 1 and status.still_bad == 1


def test_one_gc_at_a_time_while_backups_go_on(ds: Datastore, tmp_path: Path) -> None:
    ready, done = CTX.Event(), CTX.Event()
    writer = CTX.Process(target=_old_writer, daemon=True,
                         args=(os.path.join(ds.path, ".lock"), int(time.time()), ready, done))
    writer.start()
    try:
        assert ready.wait(10)
        with frozen_gc(ds, "gc.marked") as gc:
            result = subprocess.run([*CLI, "gc", "--repository", ds.path],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 1
            assert f"pid {gc.pid} " in result.stderr and "garbage collection" in result.stderr
            # the refusal names the GC only, not a backup holding its own byte beside it
            assert f"pid {writer.pid} " not in result.stderr, result.stderr
    finally:
        done.set()
        writer.join(10)
    with frozen_gc(ds, "gc.marked"):
        src = make_src(tmp_path / "src", 6)
        snap = backup(ds, src, "", HOST, T0)  # a backup is not blocked by a running GC
    assert restores(ds, "", snap, src, tmp_path)


def test_filesystem_without_atime_updates_is_refused(tmp_path: Path) -> None:
    """A real filesystem (FUSE, passthrough) that ignores explicit atime updates: the
    safety check refuses to collect, and nothing is removed."""
    pytest.importorskip("fuse", reason="fusepy is a test dependency")
    from tests.noatime_fs import mounted_noatime

    with mounted_noatime(tmp_path / "backing", tmp_path / "mnt") as mnt:
        store = Datastore.create(str(mnt / "store"), sparse=True)
        for i in range(3):  # unreferenced chunks that a working GC would remove
            store.chunk_store.insert(*encode_chunk(f"garbage {i}".encode()))
        age_chunks(store, 2 * DAY)
        before = set(chunk_files(store))
        assert len(before) == 4
        with pytest.raises(Exception, match="access time safety check failed"):
            garbage_collection(store)
        assert set(chunk_files(store)) == before


# -- the races, frozen at a fault point -------------------------------------------------------

@contextmanager
def frozen_gc(ds: Datastore, point: str) -> Iterator[subprocess.Popen[str]]:
    """A real `chunkyard gc` stopped at `point`; resumed when the block ends, and required
    to succeed."""
    env = dict(os.environ, CHUNKYARD_FAULT=f"{point}:stop")
    proc = subprocess.Popen([*CLI, "gc", "--repository", ds.path, "--output-format", "json"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _state(proc.pid) != "T":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"gc never reached {point}"
        time.sleep(0.02)
    try:
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    proc.status = GcStatus.from_json(out.encode())  # type: ignore[attr-defined]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_psa_2025_00019_1_prune_and_incremental_backup_during_mark(ds: Datastore,
                                                                   tmp_path: Path) -> None:
    """GC has listed the group (S1 newest) but not marked it; a new incremental backup S2
    references S1's chunks without touching them, and S1 is pruned. GC must find S2."""
    src = make_src(tmp_path / "src", 8, size=2_000_000)
    s1 = backup(ds, src, "", HOST, T0)
    age_chunks(ds, 2 * DAY)
    with frozen_gc(ds, "gc.group-listed@1"):
        s2 = backup(ds, src, "", HOST, T0 + 60)   # unchanged tree: S1's chunks reused unread
        untouched = [st for st in chunk_files(ds).values()
                     if st.st_size > 100_000 and st.st_atime < time.time() - DAY]
        assert untouched, "the incremental backup reused S1's chunks without touching them"
        forget_snapshot(ds, ROOT, s1)
    assert restores(ds, "", s2, src, tmp_path)
    assert no_missing_chunks(ds)


@pytest.mark.parametrize("kind", ["group", "namespace"])
def test_move_during_mark_loses_no_chunk(ds: Datastore, tmp_path: Path, kind: str) -> None:
    """GC has walked past namespace 'a' and is inside 'c' when 'd' (or its group) moves
    into 'a': only the move journal tells GC where it went."""
    make_namespaces(ds, "a", "c", "d")
    srcs = {n: make_src(tmp_path / f"src-{n}", 10 + i) for i, n in enumerate("acd")}
    snaps = {n: backup(ds, srcs[n], n, HOST if n != "d" else VM, T0) for n in "acd"}
    age_chunks(ds, 2 * DAY)
    with frozen_gc(ds, "gc.group-listed@2") as gc:  # a/host/h is 1, c/host/h is 2
        if kind == "group":
            move_group(ds, ns("d"), VM, ns("a"))
        else:
            move_namespace(ds, ns("d"), ns("a/d"))
    where = "a" if kind == "group" else "a/d"
    assert gc.status.removed_chunks == 0  # type: ignore[attr-defined]
    assert restores(ds, where, snaps["d"], srcs["d"], tmp_path)
    assert no_missing_chunks(ds)


def test_backup_deduplicating_a_chunk_the_sweep_is_about_to_remove(ds: Datastore,
                                                                   tmp_path: Path) -> None:
    """The sweep has judged a chunk unused; before it is removed, a backup in another process
    inserts the same data (a duplicate: it only touches the file). The chunk must stay."""
    src = make_src(tmp_path / "src", 20)
    gone = backup(ds, src, "", HOST, T0)
    forget_snapshot(ds, ROOT, gone)
    age_chunks(ds, 2 * DAY)
    fresh = make_src(tmp_path / "fresh", 21)
    with frozen_gc(ds, "gc.remove-candidate@1") as gc:
        again = backup(ds, src, "", VM, T0 + 60)  # same data, so the same chunks
        new = backup(ds, fresh, "", HOST, T0 + 60)  # new chunks, written during the sweep
    assert restores(ds, "", again, src, tmp_path)
    assert restores(ds, "", new, fresh, tmp_path)
    assert no_missing_chunks(ds)
    assert gc.status.removed_chunks == 0  # type: ignore[attr-defined]
    assert not list((Path(ds.path) / ".chunks").rglob("*.sweep"))


def test_a_backup_running_when_gc_listed_its_group_loses_nothing(
    ds: Datastore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GC lists the group while S2 is still being written (no index yet, S1 its base); S2
    finishes reusing S1's chunks untouched and S1 is pruned before GC marks it. S1's index
    vanishing must make GC list the group again, although S1 was not the newest listed."""
    import threading

    from chunkyard.client import backup as backup_module

    src = make_src(tmp_path / "src", 30, size=2_000_000)
    s1 = backup(ds, src, "", HOST, T0)
    age_chunks(ds, 2 * DAY)
    go, paused = threading.Event(), threading.Event()
    original = backup_module._BackupRun.backup_archive

    def paused_archive(self: object, *args: object, **kwargs: object) -> object:
        paused.set()  # the snapshot directory exists, its index does not yet
        go.wait(60)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_module._BackupRun, "backup_archive", paused_archive)
    done: dict[str, BackupDir] = {}
    writer = threading.Thread(target=lambda: done.setdefault(
        "s2", backup(ds, src, "", HOST, T0 + 60)))
    writer.start()
    assert paused.wait(20)
    with frozen_gc(ds, "gc.group-listed@1"):
        go.set()
        writer.join(60)
        forget_snapshot(ds, ROOT, s1)
    assert restores(ds, "", done["s2"], src, tmp_path)
    assert no_missing_chunks(ds)
