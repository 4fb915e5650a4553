"""A datastore written by chunkyard passes the independent PBS-format check (tools/pbs_check.py,
written from the spec without chunkyard's code): every CRC, digest, index checksum, manifest
entry and the full 65536-directory chunk store layout."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.formats.keyfile import create_key_file
from chunkyard.names import Authid, BackupGroup, BackupNamespace
from tests.helpers import make_tree
from tests.test_pbs_check import pc


@pytest.fixture(scope="module")
def full_store() -> Iterator[str]:
    """A full (non-sparse) datastore on tmpfs when available: 65536 dirs are slow on disk."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="chunkyard-compat-", dir=base)
    try:
        yield os.path.join(root, "store")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_chunkyard_datastore_passes_independent_check(full_store: str, tmp_path: Path) -> None:
    ds = Datastore.create(full_store)
    key_path = tmp_path / "key.json"
    crypt = create_key_file(str(key_path), None, kdf="none")
    src = tmp_path / "src"
    make_tree(src, files=20)
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    conf = tmp_path / "pct.conf"
    conf.write_text("arch: amd64\n")
    ns = create_namespace(ds, BackupNamespace.parse("prod"))
    create_namespace(ds, BackupNamespace.parse("prod/eu"))
    owner = Authid.parse("root@pam")
    plain = [ArchiveSpec.parse(s) for s in
             (f"root.tar:{src}", f"drive-scsi0.img:{image}", f"pct.conf:{conf}")]
    for when, namespace in ((1_700_000_000, BackupNamespace.root()), (1_700_000_100, ns)):
        run_backup(ds, BackupRequest(namespace, BackupGroup.parse("ct/101"), when, plain, owner))
    (src / "d0" / "s0" / "f0.txt").write_text("changed")
    run_backup(ds, BackupRequest(ns, BackupGroup.parse("ct/101"), 1_700_000_200, plain, owner))
    run_backup(ds, BackupRequest(BackupNamespace.parse("prod/eu"), BackupGroup.parse("vm/100"),
                                 1_700_000_300, plain, owner, crypt=crypt))

    report = pc.check(full_store, keyfile_key=crypt.enc_key)
    assert report.errors == []
    assert report.counts["snapshots_finished"] == 4
    assert report.counts["namespaces"] >= 2
    assert report.counts["signatures_verified"] == 1
    assert report.counts["chunks_crc_only"] == 0
    assert report.counts["chunks_verified"] == report.counts["chunks_referenced"] > 0
    assert not [w for w in report.warnings if "tmp" in w], report.warnings

    # and the checker is not blind: a flipped chunk byte is reported
    chunk = next(p for p in Path(full_store, ".chunks").rglob("*") if p.is_file()
                 and len(p.name) == 64 and p.stat().st_size > 100
                 and p.name != "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8")
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0x55
    chunk.write_bytes(bytes(data))
    assert pc.check_datastore(full_store, keyfile_key=crypt.enc_key) != []
