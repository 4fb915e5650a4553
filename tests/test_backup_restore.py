"""End to end: back up real trees into a real datastore and restore them byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore.datastore import Datastore
from chunkyard.errors import ChunkyardError, CryptError, DatastoreError, NotFound
from chunkyard.formats.keyfile import create_key_file
from chunkyard.names import Authid, BackupGroup, BackupNamespace
from tests.helpers import make_tree, tree_state

ROOT = BackupNamespace.root()
GROUP = BackupGroup.parse("host/test")
OWNER = Authid.parse("root@pam")


def backup(ds: Datastore, specs: list[str], when: int, **kw: object):  # type: ignore[no-untyped-def]
    req = BackupRequest(namespace=kw.pop("ns", ROOT), group=kw.pop("group", GROUP),  # type: ignore[arg-type]
                        backup_time=when, archives=[ArchiveSpec.parse(s) for s in specs],
                        owner=kw.pop("owner", OWNER), **kw)  # type: ignore[arg-type]
    return run_backup(ds, req)


def test_tree_round_trip_is_exact(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    result = backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    out = tmp_path / "out"
    run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(out)))
    assert tree_state(out) == tree_state(src)
    assert os.stat(out / "big.bin").st_ino == os.stat(out / "hardlink-to-big").st_ino


def test_restore_to_stdout_is_a_valid_tar_for_gnu_tar(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=10)
    result = backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    out = tmp_path / "gnu"
    out.mkdir()
    code = (
        "import sys; from chunkyard.cli.main import main; sys.argv=['chunkyard','restore',"
        f"'{result.snapshot}','root.tar','-','--repository','{ds.path}']; main()"
    )
    stream = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "-x", "-C", str(out), "-f", "-"],
                   input=stream, check=True)
    assert tree_state(out) == tree_state(src)


def test_unchanged_rebackup_reads_no_file_content(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first = backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    second = backup(ds, [f"root.tar:{src}"], 1_700_000_001)
    a1, a2 = first.archives[0], second.archives[0]
    assert a1.files_read > 0
    assert a2.files_read == 0
    assert a2.bytes_reused == a2.size == a1.size
    assert second.upload.compressed_size == 0
    m1 = ds.load_manifest(ROOT, first.snapshot).files[0]
    m2 = ds.load_manifest(ROOT, second.snapshot).files[0]
    assert m1.csum == m2.csum


def test_changed_file_is_backed_up_and_the_rest_reused(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    big = src / "zz-large.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    (src / "d1" / "s1" / "f1.txt").write_bytes(b"changed content " * 1000)
    second = backup(ds, [f"root.tar:{src}"], 1_700_000_001)
    archive = second.archives[0]
    assert 0 < archive.files_read < 5
    assert archive.bytes_reused > archive.size // 2
    out = tmp_path / "out"
    run_restore(ds, RestoreRequest(ROOT, second.snapshot, "root.tar", str(out)))
    assert tree_state(out) == tree_state(src)


def test_image_and_blob_archives(ds: Datastore, tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(9 * 1024 * 1024 + 5))
    conf = tmp_path / "vm.conf"
    conf.write_text("memory: 2048\ncores: 2\n")
    result = backup(ds, [f"drive-scsi0.img:{img}", f"qemu-server.conf:{conf}"], 1_700_000_000)
    out_img, out_conf = tmp_path / "img.out", tmp_path / "conf.out"
    run_restore(ds, RestoreRequest(ROOT, result.snapshot, "drive-scsi0.img", str(out_img)))
    run_restore(ds, RestoreRequest(ROOT, result.snapshot, "qemu-server.conf", str(out_conf)))
    assert out_img.read_bytes() == img.read_bytes()
    assert out_conf.read_bytes() == conf.read_bytes()
    again = backup(ds, [f"drive-scsi0.img:{img}"], 1_700_000_001)
    assert again.archives[0].bytes_reused == img.stat().st_size


def test_encrypted_round_trip_and_wrong_key(ds: Datastore, tmp_path: Path) -> None:
    key = create_key_file(str(tmp_path / "key.json"), None, kdf="none")
    other = create_key_file(str(tmp_path / "other.json"), None, kdf="none")
    src = tmp_path / "src"
    make_tree(src, files=10)
    result = backup(ds, [f"root.tar:{src}"], 1_700_000_000, crypt=key)
    manifest = ds.load_manifest(ROOT, result.snapshot)
    assert manifest.files[0].crypt_mode == "encrypt"
    assert manifest.signature is not None
    out = tmp_path / "out"
    run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(out), crypt=key))
    assert tree_state(out) == tree_state(src)
    with pytest.raises(CryptError):
        run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(tmp_path / "x")))
    with pytest.raises(CryptError):
        run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(tmp_path / "y"),
                                       crypt=other))


def test_backup_time_must_be_newer_and_failures_leave_nothing(ds: Datastore,
                                                              tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=3)
    backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    with pytest.raises(DatastoreError, match="newer"):
        backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    with pytest.raises(ChunkyardError):
        backup(ds, [f"root.tar:{src}", f"b.img:{tmp_path / 'missing'}"], 1_700_000_005)
    times = [s.dir.time for s in ds.list_snapshots(ROOT, GROUP)]
    assert times == [1_700_000_000]


def test_owner_and_namespace_checks(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=3)
    backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    with pytest.raises(DatastoreError, match="owner"):
        backup(ds, [f"root.tar:{src}"], 1_700_000_001, owner=Authid.parse("alice@pbs"))
    with pytest.raises(NotFound, match="namespace"):
        backup(ds, [f"root.tar:{src}"], 1_700_000_001, ns=BackupNamespace.parse("nope"))


def test_corrupt_chunk_is_a_clear_error(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=3)
    result = backup(ds, [f"root.tar:{src}"], 1_700_000_000)
    index = ds.load_index(ROOT, result.snapshot, "root.tar.didx")
    chunk = Path(ds.path) / ds.chunk_store.chunk_key(index.digest(0))
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(ChunkyardError):
        run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(tmp_path / "o")))


def test_size_estimate_for_first_backup_eta(ds: Datastore, tmp_path: Path) -> None:
    from chunkyard.client.tree import start_size_estimate

    src = tmp_path / "src"
    make_tree(src)
    got: list[int] = []
    start_size_estimate(str(src), got.append).join(timeout=30)
    actual = backup(ds, [f"root.tar:{src}"], 1_700_000_000).archives[0].size
    assert len(got) == 1
    assert 0.9 < got[0] / actual < 1.2


def test_chunk_size_option(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    result = backup(ds, [f"root.tar:{src}"], 1_700_000_000, chunk_size=64 * 1024)
    index = ds.load_index(ROOT, result.snapshot, "root.tar.didx")
    assert index.chunk_count > 20  # ~5 MiB in 64 KiB-average chunks
    out = tmp_path / "out"
    run_restore(ds, RestoreRequest(ROOT, result.snapshot, "root.tar", str(out)))
    assert tree_state(out) == tree_state(src)
    with pytest.raises(ChunkyardError, match="chunk size"):
        backup(ds, [f"root.tar:{src}"], 1_700_000_001, chunk_size=100 * 1024)
