"""Tests for tools/pbs_check.py, the independent PBS datastore checker.

The datastores here are written by a minimal writer in this file, built from the format spec
(not from chunkyard), so a bug shared by chunkyard and the checker cannot make these pass. One
clean store is built per module; each test corrupts exactly one thing, asserts the checker
reports exactly that, and the `store` fixture restores the damage afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "pbs_check.py"
from tests.helpers import PBS_DIDX  # noqa: E402


def _load_checker() -> ModuleType:
    """tools/ is not a package: load the script as module `pbs_check`."""
    if "pbs_check" in sys.modules:
        return sys.modules["pbs_check"]
    spec = importlib.util.spec_from_file_location("pbs_check", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pbs_check"] = module
    spec.loader.exec_module(module)
    return module


pc = _load_checker()

# ---------------------------------------------------------------------------------------------
# A minimal writer, straight from the spec (§3, §4, §5); magics as printed in §3.1.
# ---------------------------------------------------------------------------------------------

M_PLAIN = bytes.fromhex("42ab3807be8370a1")
M_ZSTD = bytes.fromhex("31b958426fb6a37f")
M_ENC = bytes.fromhex("7b6785be222d4cf0")
M_ENC_ZSTD = bytes.fromhex("e6591bbf0bbfd80b")
M_FIDX = bytes.fromhex("2f7f41ed91fd0fcd")
M_DIDX = bytes.fromhex("1c914ea519bab3cd")

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(32))


def id_key_of(key: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", key, b"_id_key", 10, 32)


def fingerprint_of(key: bytes) -> str:
    base = hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest()
    return ":".join(f"{b:02x}" for b in hashlib.sha256(base + id_key_of(key)).digest())


def w_blob(data: bytes, *, compress: bool = True, key: bytes | None = None,
           content_size: bool = True) -> bytes:
    payload, compressed = data, False
    if compress:
        frame = zstandard.ZstdCompressor(level=1, write_content_size=content_size).compress(data)
        if len(frame) <= len(data):
            payload, compressed = frame, True
    if key is None:
        magic = M_ZSTD if compressed else M_PLAIN
        return magic + zlib.crc32(payload).to_bytes(4, "little") + payload
    iv = os.urandom(16)
    sealed = AESGCM(key).encrypt(iv, payload, None)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    magic = M_ENC_ZSTD if compressed else M_ENC
    return magic + zlib.crc32(ciphertext).to_bytes(4, "little") + iv + tag + ciphertext


def w_digest(data: bytes, key: bytes | None = None) -> bytes:
    return hashlib.sha256(data + (id_key_of(key) if key else b"")).digest()


def w_fidx(digests: list[bytes], size: int, chunk_size: int) -> bytes:
    csum = hashlib.sha256(b"".join(digests)).digest()
    header = M_FIDX + os.urandom(16) + (1700000000).to_bytes(8, "little") + csum
    header += size.to_bytes(8, "little") + chunk_size.to_bytes(8, "little")
    return header.ljust(4096, b"\0") + b"".join(digests)


def didx_csum(ends: list[int], digests: list[bytes]) -> bytes:
    return hashlib.sha256(
        b"".join(e.to_bytes(8, "little") + d for e, d in zip(ends, digests, strict=True))
    ).digest()


def w_didx(ends: list[int], digests: list[bytes]) -> bytes:
    csum = didx_csum(ends, digests)
    header = M_DIDX + os.urandom(16) + (1700000000).to_bytes(8, "little") + csum
    body = b"".join(e.to_bytes(8, "little") + d for e, d in zip(ends, digests, strict=True))
    return header.ljust(4096, b"\0") + body


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class Snap:
    rel: str
    doc: dict[str, Any]
    key: bytes | None
    chunks: dict[str, list[str]] = field(default_factory=dict)  # archive -> chunk rel paths


class Builder:
    """Writes a datastore the way the spec describes PBS doing it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / ".chunks").mkdir(parents=True)
        for i in range(0x10000):
            (root / ".chunks" / f"{i:04x}").mkdir()
        (root / ".lock").touch()
        self.snaps: dict[str, Snap] = {}

    def chunk_rel(self, digest: bytes) -> str:
        return f".chunks/{digest.hex()[:4]}/{digest.hex()}"

    def put_chunk(self, data: bytes, key: bytes | None = None, **kw: Any) -> bytes:
        digest = w_digest(data, key)
        path = self.root / self.chunk_rel(digest)
        if not path.exists():
            path.write_bytes(w_blob(data, key=key, **kw))
        return digest

    def group(self, ns: str, btype: str, bid: str, owner: str) -> Path:
        base = self.root
        for part in [p for p in ns.split("/") if p]:
            base = base / "ns" / part
        path = base / btype / bid
        path.mkdir(parents=True, exist_ok=True)
        (path / "owner").write_text(owner + "\n")
        return path

    def snapshot(self, group: Path, btype: str, bid: str, epoch: int, key: bytes | None,
                 archives: dict[str, Any]) -> Snap:
        """archives: name -> bytes (a .blob) or (data, cuts, chunk_kwargs) (.didx)
        or (data, chunk_size) (.fidx)."""
        path = group / rfc3339(epoch)
        path.mkdir()
        snap = Snap(str(path.relative_to(self.root)), {}, key)
        mode = "encrypt" if key else "none"
        files = []
        for name, spec in archives.items():
            if name.endswith(".blob"):
                raw = w_blob(spec, key=key)
                (path / name).write_bytes(raw)
                files.append({"filename": name, "crypt-mode": mode, "size": len(raw),
                              "csum": hashlib.sha256(raw).hexdigest()})
                continue
            if name.endswith(".didx"):
                data, cuts, kw = spec
                bounds = [0, *cuts, len(data)]
                pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
                digests = [self.put_chunk(p, key, **kw.get(i, {})) for i, p in enumerate(pieces)]
                ends = bounds[1:]
                (path / name).write_bytes(w_didx(ends, digests))
                csum = didx_csum(ends, digests)
            else:
                data, chunk_size = spec
                pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
                digests = [self.put_chunk(p, key) for p in pieces]
                (path / name).write_bytes(w_fidx(digests, len(data), chunk_size))
                csum = hashlib.sha256(b"".join(digests)).digest()
            snap.chunks[name] = [self.chunk_rel(d) for d in digests]
            files.append({"filename": name, "crypt-mode": mode, "size": len(data),
                          "csum": csum.hex()})
        snap.doc = {"backup-type": btype, "backup-id": bid, "backup-time": epoch,
                    "files": files, "unprotected": {}}
        if key:
            snap.doc["unprotected"]["key-fingerprint"] = fingerprint_of(key)
        self.write_manifest(snap, snap.doc)
        self.snaps[snap.rel] = snap
        return snap

    def write_manifest(self, snap: Snap, doc: dict[str, Any], *, sign: bool = True,
                       encrypt_with: bytes | None = None) -> None:
        doc = json.loads(json.dumps(doc))
        if snap.key and sign:
            signed = {k: v for k, v in doc.items() if k not in ("unprotected", "signature")}
            canon = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
            doc["signature"] = hmac.new(id_key_of(snap.key), canon, hashlib.sha256).hexdigest()
        raw = w_blob(json.dumps(doc, indent=2).encode(), key=encrypt_with)
        (self.root / snap.rel / "index.json.blob").write_bytes(raw)


T1, T2 = 1700000000, 1700003600
ALPHA1 = "host/alpha/" + rfc3339(T1)
ALPHA2 = "host/alpha/" + rfc3339(T2)
VM1 = "vm/100/" + rfc3339(T1)
ENC1 = "ns/prod/ns/eu/ct/200/" + rfc3339(T1)


def build_store(root: Path) -> Builder:
    rnd = random.Random(1234)
    noise = rnd.randbytes(200_000)
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(4000))
    b = Builder(root)

    alpha = b.group("", "host", "alpha", "root@pam")
    pxar = noise + text
    b.snapshot(alpha, "host", "alpha", T1, None, {
        "root.pxar.didx": (pxar, [50_000, 120_000, 200_000, 250_000],
                           {4: {"content_size": False}, 1: {"compress": False}}),
        "conf.blob": b"some = config\n" * 20,
    })
    (root / ALPHA1 / "client.log.blob").write_bytes(w_blob(b"backup log\n"))
    (root / ALPHA1 / ".protected").touch()
    b.snapshot(alpha, "host", "alpha", T2, None, {
        "root.pxar.didx": (pxar[:120_000] + rnd.randbytes(30_000), [50_000, 120_000], {}),
    })

    vm = b.group("", "vm", "100", "user@pbs!tok1")
    image = bytes(65536 * 2) + rnd.randbytes(10_000)
    b.snapshot(vm, "vm", "100", T1, None, {
        "drive-scsi0.img.fidx": (image, 65536),
        "qemu-server.conf.blob": b"memory: 2048\n",
    })

    enc = b.group("prod/eu", "ct", "200", "root@pam")
    b.snapshot(enc, "ct", "200", T1, KEY, {
        "root.pxar.didx": (text[:50_000] + rnd.randbytes(40_000), [50_000], {}),
        "pct.conf.blob": b"arch: amd64\n" * 10,
    })
    (root / "ns" / "empty").mkdir()

    b.put_chunk(b"unreferenced one")
    b.put_chunk(b"unreferenced two", KEY)
    junk = b.chunk_rel(w_digest(b"bad one"))
    (root / (junk + ".0.bad")).write_bytes(b"whatever")
    (root / (b.chunk_rel(w_digest(b"tmp")) + ".tmp_Ab12cd")).write_bytes(b"partial")
    return b


# ---------------------------------------------------------------------------------------------
# Fixtures: one store per module, every test's damage undone afterwards
# ---------------------------------------------------------------------------------------------


class Undo:
    """Saves paths before a test changes them and puts them back afterwards."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.saved: list[tuple[Path, str, Any]] = []

    def save(self, rel: str) -> Path:
        path = self.root / rel
        if any(p == path for p, _, _ in self.saved):
            return path
        if path.is_dir() and not path.is_symlink():
            copy = self.scratch / f"d{len(self.saved)}"
            shutil.copytree(path, copy, symlinks=True)
            self.saved.append((path, "dir", copy))
        elif path.exists():
            self.saved.append((path, "file", path.read_bytes()))
        else:
            self.saved.append((path, "absent", None))
        return path

    def write(self, rel: str, data: bytes) -> None:
        self.save(rel).write_bytes(data)

    def flip(self, rel: str, offset: int) -> None:
        raw = bytearray(self.save(rel).read_bytes())
        raw[offset] ^= 0x55
        (self.root / rel).write_bytes(bytes(raw))

    def mkdir(self, rel: str) -> None:
        """mkdir -p, undone by removing the topmost directory it created."""
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            if not (self.root.joinpath(*parts[:i])).exists():
                self.save("/".join(parts[:i]))
                break
        (self.root / rel).mkdir(parents=True, exist_ok=True)

    def remove(self, rel: str) -> None:
        path = self.save(rel)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    def restore(self) -> None:
        for path, kind, value in reversed(self.saved):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            if kind == "dir":
                shutil.copytree(value, path, symlinks=True)
            elif kind == "file":
                path.write_bytes(value)
        self.saved.clear()


@dataclass
class Store:
    root: Path
    b: Builder
    undo: Undo

    def chunks(self, snap: str, archive: str = "root.pxar.didx") -> list[str]:
        return self.b.snaps[snap].chunks[archive]

    def rewrite_manifest(self, snap: str, doc: dict[str, Any], **kw: Any) -> None:
        self.undo.save(f"{snap}/index.json.blob")
        self.b.write_manifest(self.b.snaps[snap], doc, **kw)

    def doc(self, snap: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(json.dumps(self.b.snaps[snap].doc))
        return doc


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[Path, Builder]]:
    # tmpfs when available: creating/removing 65536 directories on disk takes many seconds
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    top = Path(tempfile.mkdtemp(prefix="pbs-check-", dir=base))
    try:
        builder = build_store(top / "store")
        yield top / "store", builder
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def store(built: tuple[Path, Builder], tmp_path: Path) -> Iterator[Store]:
    root, builder = built
    undo = Undo(root, tmp_path)
    yield Store(root, builder, undo)
    undo.restore()


def errors_of(root: Path, *, keyfile_key: bytes | None = None) -> list[str]:
    """The checker's errors, without listing the 65536 prefix directories (the slow part).

    For damage outside `.chunks` the listing cannot add anything; tests of the chunk store
    itself and the clean-store tests use the full check.
    """
    errors: list[str] = pc.check_datastore(root, keyfile_key=keyfile_key, scan_chunk_dirs=False)
    return errors


def only_error(root: Path, *, key: bytes | None = None) -> str:
    errors = errors_of(root, keyfile_key=key)
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------------------------------------
# The clean store
# ---------------------------------------------------------------------------------------------


def test_clean_store_passes_without_key(store: Store) -> None:
    report = pc.check(store.root)
    assert report.errors == []
    kinds = sorted(w.split(": ", 1)[1] for w in report.warnings)
    assert kinds == ["chunk marked bad by verify", "leftover temporary chunk file"]
    c = report.counts
    assert (c["namespaces"], c["groups"], c["snapshots_finished"]) == (4, 3, 4)
    assert c["snapshots_protected"] == 1
    assert c["indexes"] == 4 and c["blobs"] == 4
    assert c["chunks_unreferenced"] == 2
    assert c["chunk_files"] == c["chunks_referenced"] + 2
    # the two encrypted chunks can only be CRC-checked; the signature cannot be verified
    assert c["chunks_crc_only"] == 2 and c["signatures_unverified"] == 1
    quick = pc.check(store.root, scan_chunk_dirs=False)
    assert quick.errors == [] and quick.warnings == []
    assert "chunk_files" not in quick.counts and quick.counts["chunks_referenced"] > 0


def test_clean_store_passes_with_key(store: Store) -> None:
    report = pc.check(store.root, keyfile_key=KEY)
    assert report.errors == []
    assert report.counts["chunks_crc_only"] == 0
    assert report.counts["chunks_verified"] == report.counts["chunks_referenced"]
    assert report.counts["signatures_verified"] == 1


def test_other_key_is_not_used_on_a_snapshot_with_another_fingerprint(store: Store) -> None:
    report = pc.check(store.root, keyfile_key=OTHER_KEY)
    assert report.errors == []
    assert any(ENC1 in w and "another key" in w for w in report.warnings)
    assert report.counts["chunks_crc_only"] == 2


# ---------------------------------------------------------------------------------------------
# One corruption at a time
# ---------------------------------------------------------------------------------------------


def test_flipped_chunk_byte_is_a_crc_error(store: Store) -> None:
    rel = store.chunks(ALPHA1)[4]
    store.undo.flip(rel, 200)
    message = only_error(store.root)
    assert message.startswith(f"{rel}: CRC mismatch (stored ")
    assert message.endswith(f"(referenced by {ALPHA1}/root.pxar.didx)")


def test_flipped_bytes_in_each_kind_of_chunk(store: Store) -> None:
    """Compressed, stored raw, zstd frame without content size, encrypted: CRC catches all."""
    rels = [store.chunks(ALPHA1)[i] for i in (0, 1, 4)] + [store.chunks(ENC1)[1]]
    for rel in rels:
        store.undo.flip(rel, 100)
    errors = errors_of(store.root)
    assert [e.split(": ")[0] for e in errors] == sorted(rels)
    assert all(": CRC mismatch (stored " in e for e in errors)


def test_flipped_crc_field_is_a_crc_error(store: Store) -> None:
    rel = store.chunks(VM1, "drive-scsi0.img.fidx")[2]
    store.undo.flip(rel, 9)
    assert only_error(store.root).startswith(f"{rel}: CRC mismatch")


def test_flipped_magic_is_reported(store: Store) -> None:
    rel = store.chunks(VM1, "drive-scsi0.img.fidx")[2]
    store.undo.flip(rel, 0)
    assert "unknown DataBlob magic" in only_error(store.root)


def test_encrypted_iv_or_tag_flip_needs_the_key(store: Store) -> None:
    """IV and tag are not covered by the CRC (§3.2): only decryption notices."""
    iv_rel, tag_rel = store.chunks(ENC1)
    store.undo.flip(iv_rel, 12)
    store.undo.flip(tag_rel, 30)
    assert errors_of(store.root) == []
    errors = errors_of(store.root, keyfile_key=KEY)
    assert [e.split(": ")[0] for e in errors] == sorted([iv_rel, tag_rel])
    assert all(": decryption failed" in e for e in errors)


def test_chunk_with_wrong_content_is_a_digest_mismatch(store: Store) -> None:
    rel = store.chunks(ALPHA1)[2]
    good = (store.root / rel).read_bytes()
    store.undo.write(rel, w_blob(b"x" * 80_000))  # valid blob, CRC fine, other content
    assert good != (store.root / rel).read_bytes()
    message = only_error(store.root)
    assert message.startswith(f"{rel}: digest mismatch")


def test_encrypted_chunk_under_wrong_digest_is_found_with_key(store: Store) -> None:
    rel = store.chunks(ENC1)[0]
    store.undo.write(rel, w_blob(b"y" * 50_000, key=KEY))
    assert errors_of(store.root) == []
    assert only_error(store.root, key=KEY).startswith(f"{rel}: digest mismatch")


def test_zstd_trailing_garbage_is_reported(store: Store) -> None:
    rel = store.chunks(ALPHA1)[3]
    data = (store.root / rel).read_bytes()
    payload = data[12:] + b"garbage!"
    store.undo.write(rel, data[:8] + zlib.crc32(payload).to_bytes(4, "little") + payload)
    assert "zstd decode error" in only_error(store.root)


def test_truncated_zstd_frame_is_reported(store: Store) -> None:
    rel = store.chunks(ALPHA1)[4]  # the frame without content size
    data = (store.root / rel).read_bytes()
    payload = data[12:-20]
    store.undo.write(rel, data[:8] + zlib.crc32(payload).to_bytes(4, "little") + payload)
    assert "truncated" in only_error(store.root)


def test_missing_chunk(store: Store) -> None:
    rel = store.chunks(ALPHA1)[4]  # only used by the first snapshot
    store.undo.remove(rel)
    assert only_error(store.root) == (
        f"{rel}: missing chunk (referenced by {ALPHA1}/root.pxar.didx)")


def test_missing_shared_chunk_names_all_users(store: Store) -> None:
    rel = store.chunks(ALPHA1)[0]  # shared by both alpha snapshots
    store.undo.remove(rel)
    assert only_error(store.root) == (
        f"{rel}: missing chunk (referenced by {ALPHA1}/root.pxar.didx and 1 more)")


def test_truncated_index(store: Store) -> None:
    rel = f"{ALPHA1}/root.pxar.didx"
    store.undo.write(rel, (store.root / rel).read_bytes()[:-1])
    assert only_error(store.root) == (
        f"{rel}: body of 199 bytes is not a whole number of 40-byte entries")


def test_truncated_indexes_of_each_kind(store: Store) -> None:
    cuts = {f"{ALPHA2}/root.pxar.didx": 100, f"{VM1}/drive-scsi0.img.fidx": -32}
    for rel, keep in cuts.items():
        store.undo.write(rel, (store.root / rel).read_bytes()[:keep])
    assert errors_of(store.root) == [
        f"{ALPHA2}/root.pxar.didx: shorter than the 4096-byte index header (100 bytes)",
        f"{VM1}/drive-scsi0.img.fidx: file is 4160 bytes, expected 4192 for size 141072 "
        "and chunk_size 65536 (3 digests)",
    ]


def test_index_header_csum_mismatch(store: Store) -> None:
    rel = f"{ALPHA2}/root.pxar.didx"
    store.undo.flip(rel, 40)
    message = only_error(store.root)
    assert message.startswith(f"{rel}: header index_csum")


def test_index_reserved_bytes_must_be_zero(store: Store) -> None:
    rel = f"{VM1}/drive-scsi0.img.fidx"
    store.undo.flip(rel, 2000)
    assert only_error(store.root) == f"{rel}: reserved header bytes are not zero"


def test_fidx_chunk_size_must_be_a_power_of_two(store: Store) -> None:
    rel = f"{VM1}/drive-scsi0.img.fidx"
    data = bytearray((store.root / rel).read_bytes())
    data[72:80] = (65535).to_bytes(8, "little")
    store.undo.write(rel, bytes(data))
    assert only_error(store.root) == f"{rel}: chunk_size 65535 is not a power of two"


def test_didx_end_offsets_must_increase(store: Store) -> None:
    snap = store.b.snaps[ALPHA2]
    digests = [bytes.fromhex(Path(c).name) for c in snap.chunks["root.pxar.didx"]]
    rel = f"{ALPHA2}/root.pxar.didx"
    store.undo.write(rel, w_didx([50_000, 50_000, 150_000], digests))
    message = only_error(store.root)
    assert message == f"{rel}: entry 1: end offset 50000 does not increase (previous end 50000)"


def test_chunk_length_must_equal_its_index_range(store: Store) -> None:
    """Consistent csums everywhere, but one range is a byte off: only the length check sees it."""
    snap = store.b.snaps[ALPHA2]
    digests = [bytes.fromhex(Path(c).name) for c in snap.chunks["root.pxar.didx"]]
    ends = [50_001, 120_000, 150_000]
    rel = f"{ALPHA2}/root.pxar.didx"
    store.undo.write(rel, w_didx(ends, digests))
    doc = store.doc(ALPHA2)
    doc["files"][0]["csum"] = didx_csum(ends, digests).hex()
    store.rewrite_manifest(ALPHA2, doc)
    message = only_error(store.root)
    assert message.startswith(f"{rel}: 2 chunks differ in length from their index range")


def test_manifest_csum_mismatch(store: Store) -> None:
    doc = store.doc(ALPHA1)
    doc["files"][0]["csum"] = "ab" * 32
    store.rewrite_manifest(ALPHA1, doc)
    message = only_error(store.root)
    assert message.startswith(f"{ALPHA1}/root.pxar.didx: computed csum ")
    assert message.endswith(f"differs from manifest csum {'ab' * 32}")


def test_manifest_csum_and_size_mismatches(store: Store) -> None:
    doc = store.doc(VM1)
    fidx, blob = doc["files"]
    blob["csum"] = "cd" * 32
    fidx["size"] += 1
    blob["size"] += 1
    store.rewrite_manifest(VM1, doc)
    raw = (store.root / VM1 / "qemu-server.conf.blob").read_bytes()
    assert errors_of(store.root) == [
        f"{VM1}/drive-scsi0.img.fidx: index size 141072 differs from manifest size 141073",
        f"{VM1}/qemu-server.conf.blob: size {len(raw)} differs from manifest size {len(raw) + 1}",
        f"{VM1}/qemu-server.conf.blob: SHA-256 {hashlib.sha256(raw).hexdigest()} differs "
        f"from manifest csum {'cd' * 32}",
    ]


def test_listed_file_missing(store: Store) -> None:
    store.undo.remove(f"{VM1}/qemu-server.conf.blob")
    assert only_error(store.root) == (
        f"{VM1}/qemu-server.conf.blob: listed in the manifest but missing")


def test_corrupt_blob_archive(store: Store) -> None:
    rel = f"{ALPHA1}/conf.blob"
    store.undo.flip(rel, 14)
    doc = store.doc(ALPHA1)
    raw = (store.root / rel).read_bytes()
    entry = next(f for f in doc["files"] if f["filename"] == "conf.blob")
    entry["csum"] = hashlib.sha256(raw).hexdigest()  # the manifest agrees; the CRC does not
    store.rewrite_manifest(ALPHA1, doc)
    assert only_error(store.root).startswith(f"{rel}: CRC mismatch")


@pytest.mark.parametrize(("change", "words"), [
    ({"backup-id": "beta"}, "manifest names host/beta, directory is host/alpha"),
    ({"backup-time": T1}, f"manifest backup-time {T1} is {rfc3339(T1)}, directory is "
                          f"{rfc3339(T2)}"),
    ({"backup-type": "xx"}, "manifest backup-type 'xx' is not one of vm, ct, host"),
])
def test_manifest_identity(store: Store, change: dict[str, Any], words: str) -> None:
    doc = store.doc(ALPHA2)
    doc.update(change)
    store.rewrite_manifest(ALPHA2, doc)
    assert only_error(store.root) == f"{ALPHA2}/index.json.blob: {words}"


def test_manifest_file_entry_is_validated(store: Store) -> None:
    doc = store.doc(ALPHA2)
    doc["files"][0]["filename"] = "../escape.didx"
    store.rewrite_manifest(ALPHA2, doc)
    report = pc.check(store.root, scan_chunk_dirs=False)
    # the bad entry is left out, so the real index only earns an "unlisted" warning
    assert report.errors == [f"{ALPHA2}/index.json.blob: manifest files[0]: filename "
                             "'../escape.didx' is not a SAFE_ID ending in .fidx/.didx/.blob"]
    assert f"{ALPHA2}/root.pxar.didx: archive is not listed in the manifest" in report.warnings


GOOD_DOC: dict[str, Any] = {
    "backup-type": "vm", "backup-id": "100", "backup-time": T1,
    "files": [{"filename": "a.blob", "crypt-mode": "none", "size": 1, "csum": "00" * 32}],
}


@pytest.mark.parametrize(("change", "file_change", "words"), [
    ({"backup-time": "1700000000"}, {}, "backup-time '1700000000' is not an integer"),
    ({"backup-time": True}, {}, "backup-time True is not an integer"),
    ({"backup-id": "a/b"}, {}, "backup-id 'a/b' is not a valid backup id"),
    ({"files": {}}, {}, "files is dict, not a list"),
    ({"unprotected": []}, {}, "unprotected is not an object"),
    ({"signature": "XYZ"}, {}, "signature 'XYZ' is not 64 lowercase hex digits"),
    ({}, {"csum": "AB" * 32}, "is not 64 lowercase hex digits"),
    ({}, {"size": True}, "size True is not a non-negative integer"),
    ({}, {"size": -1}, "size -1 is not a non-negative integer"),
    ({}, {"crypt-mode": "plain"}, "crypt-mode 'plain' is not one of"),
    ({}, {"filename": "../escape.blob"}, "is not a SAFE_ID"),
    ({}, {"filename": "a.txt"}, "is not a SAFE_ID ending in .fidx/.didx/.blob"),
    ({}, {"filename": "client.log.blob"}, "a manifest never lists"),
])
def test_parse_manifest_fields(change: dict[str, Any], file_change: dict[str, Any],
                               words: str) -> None:
    assert pc.parse_manifest(json.dumps(GOOD_DOC).encode())[1:] == ([], [])
    doc = json.loads(json.dumps(GOOD_DOC))
    doc.update(change)
    if file_change:
        doc["files"][0].update(file_change)
    _, errors, _ = pc.parse_manifest(json.dumps(doc).encode())
    assert len(errors) == 1 and words in errors[0], errors


def test_parse_manifest_duplicate_file_and_unknown_keys() -> None:
    doc = json.loads(json.dumps(GOOD_DOC))
    doc["files"].append(dict(doc["files"][0], extra=1))
    doc["new-field"] = 2
    manifest, errors, warnings = pc.parse_manifest(json.dumps(doc).encode())
    assert manifest is not None and len(manifest.files) == 1
    assert errors == ["manifest files[1]: lists a.blob twice"]
    assert warnings == ["manifest has unknown key 'new-field'",
                        "manifest files[1] has unknown key 'extra'"]


def test_manifest_must_not_be_encrypted(store: Store) -> None:
    store.rewrite_manifest(ALPHA2, store.doc(ALPHA2), encrypt_with=KEY)
    assert only_error(store.root) == (
        f"{ALPHA2}/index.json.blob: manifest blob is encrypted (it never is)")


def test_manifest_with_duplicate_keys(store: Store) -> None:
    text = json.dumps(store.doc(ALPHA2))[:-1] + ', "backup-id": "alpha"}'
    store.undo.write(f"{ALPHA2}/index.json.blob", w_blob(text.encode()))
    assert "duplicate JSON key 'backup-id'" in only_error(store.root)


def test_signature_mismatch_needs_the_key(store: Store) -> None:
    snap = store.b.snaps[ENC1]
    doc = store.doc(ENC1)
    doc["signature"] = "00" * 32
    store.undo.save(f"{ENC1}/index.json.blob")
    raw = w_blob(json.dumps(doc).encode())
    (store.root / ENC1 / "index.json.blob").write_bytes(raw)
    assert snap.key == KEY
    assert errors_of(store.root) == []
    assert only_error(store.root, key=KEY) == (
        f"{ENC1}/index.json.blob: signature mismatch (HMAC over the canonical JSON)")


def test_unsigned_encrypted_manifest(store: Store) -> None:
    store.rewrite_manifest(ENC1, store.doc(ENC1), sign=False)
    assert "files use crypt-mode encrypt but the manifest has no signature" in only_error(
        store.root)


def test_editing_unprotected_keeps_the_signature_valid(store: Store) -> None:
    rel = f"{ENC1}/index.json.blob"
    signed = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(
        (store.root / rel).read_bytes()[12:]))
    assert "signature" in signed
    signed["unprotected"]["notes"] = "changed later"
    store.undo.write(rel, w_blob(json.dumps(signed).encode()))
    assert errors_of(store.root, keyfile_key=KEY) == []


def test_crypt_mode_must_match_the_chunks(store: Store) -> None:
    doc = store.doc(ENC1)
    doc["files"][0]["crypt-mode"] = "sign-only"  # still signed, but the chunks are encrypted
    store.rewrite_manifest(ENC1, doc)
    message = only_error(store.root, key=KEY)
    assert message.startswith(
        f"{ENC1}/root.pxar.didx: crypt-mode sign-only but 2 referenced chunks are encrypted")


def test_crypt_mode_must_match_a_blob(store: Store) -> None:
    doc = store.doc(VM1)
    doc["files"][1]["crypt-mode"] = "encrypt"
    doc["files"][0]["crypt-mode"] = "encrypt"
    store.rewrite_manifest(VM1, doc)
    first = min(Path(c).name for c in store.chunks(VM1, "drive-scsi0.img.fidx"))
    assert sorted(errors_of(store.root)) == [
        # three references, two distinct chunks (the zero chunk is used twice)
        f"{VM1}/drive-scsi0.img.fidx: crypt-mode encrypt but 2 referenced chunks are "
        f"unencrypted (first: {first})",
        f"{VM1}/index.json.blob: files use crypt-mode encrypt but the manifest has no signature",
        f"{VM1}/qemu-server.conf.blob: blob is not encrypted but manifest crypt-mode is encrypt",
    ]


def test_bad_owner(store: Store) -> None:
    store.undo.write("vm/100/owner", b"nobody\n")
    assert only_error(store.root) == "vm/100/owner: first line 'nobody' is not a valid authid"


@pytest.mark.parametrize(("content", "result"), [
    (b"root@pam\n", ([], [])),
    (b"user@pbs!tok-1\n", ([], [])),
    (b"a@b@pve\n", ([], [])),  # the name may hold '@'; the realm is after the last one
    (b"root@pam", ([], ["is not exactly one '<authid>\\n' line"])),
    (b"root@pam  \nmore\n", ([], ["is not exactly one '<authid>\\n' line"])),
    (b"", (["first line '' is not a valid authid"], [])),
    (b"root@pam extra\n", (["first line 'root@pam extra' is not a valid authid"], [])),
    (b"root@p/m\n", (["first line 'root@p/m' is not a valid authid"], [])),
    (b"root\x01@pam\n", (["first line 'root\\x01@pam' is not a valid authid"], [])),
    (b"user@pbs!bad token\n", (["first line 'user@pbs!bad token' is not a valid authid"], [])),
    (b"user@pbs!\n", (["first line 'user@pbs!' is not a valid authid"], [])),
    (b"\xff\xfe\n", (["not UTF-8"], [])),
])
def test_owner_rules(content: bytes, result: tuple[list[str], list[str]]) -> None:
    assert pc.owner_problems(content) == result


def test_missing_owner(store: Store) -> None:
    store.undo.remove("host/alpha/owner")
    assert only_error(store.root) == "host/alpha/owner: missing"


def test_owner_without_newline_is_only_a_warning(store: Store) -> None:
    store.undo.write("host/alpha/owner", b"root@pam")
    report = pc.check(store.root, scan_chunk_dirs=False)
    assert report.errors == []
    assert "host/alpha/owner: is not exactly one '<authid>\\n' line" in report.warnings


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def test_chunk_store_layout(store: Store) -> None:
    store.undo.remove(".lock")
    store.undo.remove(".chunks/0000")
    store.undo.remove(".chunks/ab0f")
    store.undo.mkdir(".chunks/ABCD")
    misplaced = ".chunks/0001/" + "ab" * 32
    store.undo.write(misplaced, w_blob(b"misplaced"))
    assert pc.check_datastore(store.root) == [
        ".lock: missing",
        ".chunks: 2 of the 65536 prefix directories are missing (first: 0000, ab0f)",
        ".chunks: 1 unexpected entries besides the prefix directories (first: ABCD)",
        f"{misplaced}: chunk file is in the wrong prefix directory",
    ]


def test_odd_names_in_chunk_dirs_are_warnings(store: Store) -> None:
    for rel in [".chunks/0002/README", ".chunks/0002/" + "AB" * 32,
                ".chunks/0002/" + "02" * 32 + ".using"]:
        store.undo.write(rel, b"x")
    report = pc.check(store.root)
    assert report.errors == []
    assert sum("unexpected name in the chunk store" in w for w in report.warnings) == 3


def test_bad_directory_names(store: Store) -> None:
    bad_time = "snapshot directory name is not a valid YYYY-MM-DDTHH:MM:SSZ"
    expected = {
        "host/alpha/2023-13-01T00:00:00Z": bad_time,
        "host/alpha/2023-11-14 22:13:20Z": bad_time,
        "host/-bad": "group directory name is not a valid backup id",
        "ns/.hidden": "namespace name is not a SAFE_ID",
        "ns/a/ns/b/ns/c/ns/d/ns/e/ns/f/ns/g/ns/h": "namespace depth exceeds 7",
        "ns/" + "n" * 250 + "/ns/abcdef": "namespace is longer than 256 characters",
    }
    for rel in expected:
        store.undo.mkdir(rel)
    assert sorted(errors_of(store.root)) == sorted(
        f"{rel}: {words}" for rel, words in expected.items())


def test_namespace_at_depth_seven_is_fine(store: Store) -> None:
    rel = "ns/a/ns/b/ns/c/ns/d/ns/e/ns/f/ns/g"
    store.undo.mkdir(f"{rel}/host/x")
    (store.root / rel / "host" / "x" / "owner").write_text("root@pam\n")
    report = pc.check(store.root, scan_chunk_dirs=False)
    assert report.errors == []
    assert report.counts["namespaces"] == 4 + 7


def test_unfinished_snapshot_is_a_warning_but_its_index_is_checked(store: Store) -> None:
    store.undo.remove(f"{ALPHA2}/index.json.blob")
    report = pc.check(store.root, scan_chunk_dirs=False)
    assert report.errors == []
    assert f"{ALPHA2}: unfinished snapshot (no index.json.blob)" in report.warnings
    store.undo.remove(store.chunks(ALPHA2)[2])  # the chunk only the unfinished index uses
    assert only_error(store.root).startswith(f"{store.chunks(ALPHA2)[2]}: missing chunk")


def test_unlisted_archive_is_a_warning(store: Store) -> None:
    store.undo.write(f"{ALPHA2}/extra.blob", w_blob(b"extra"))
    report = pc.check(store.root, scan_chunk_dirs=False)
    assert report.errors == []
    assert f"{ALPHA2}/extra.blob: archive is not listed in the manifest" in report.warnings


def test_missing_datastore(tmp_path: Path) -> None:
    assert pc.check_datastore(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a directory"]


# ---------------------------------------------------------------------------------------------
# Real PBS data and spec test vectors
# ---------------------------------------------------------------------------------------------


def test_real_pbs_didx() -> None:
    info = pc.parse_index(PBS_DIDX.read_bytes(), "didx")
    csum, size = pc.compute_csum(info)
    assert csum.hex() == "e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20"
    assert info.header_csum == csum
    assert size == 104859232 and len(info.digests) == 100
    assert info.ends[:3] == (1048608, 2097200, 3145792)
    assert info.uuid.hex() == "f0ef7665555e417ea6eba00a375ceee0"
    assert info.ctime == 1715091951
    assert info.reserved_zero
    with pytest.raises(pc.FormatProblem, match="fidx name"):
        pc.parse_index(PBS_DIDX.read_bytes(), "fidx")


def test_magics_match_the_spec_table() -> None:
    assert (pc.MAGIC_BLOB_PLAIN, pc.MAGIC_BLOB_ZSTD) == (M_PLAIN, M_ZSTD)
    assert (pc.MAGIC_BLOB_ENCRYPTED, pc.MAGIC_BLOB_ENCR_ZSTD) == (M_ENC, M_ENC_ZSTD)
    assert (pc.MAGIC_FIDX, pc.MAGIC_DIDX) == (M_FIDX, M_DIDX)


def test_manifest_signature_vector() -> None:
    """§12.2, the upstream test_manifest_signature vector."""
    enc_key = hashlib.scrypt(b"test", salt=b"", n=65536, r=8, p=1, dklen=32,
                             maxmem=128 * 1024 * 1024)
    key = pc.CryptKey(enc_key)
    doc = {"backup-type": "host", "backup-id": "elsa", "backup-time": 1593179765,
           "files": [{"filename": "test1.img.fidx", "size": 200, "csum": "01" * 32,
                      "crypt-mode": "encrypt"},
                     {"filename": "abc.blob", "size": 200, "csum": "02" * 32,
                      "crypt-mode": "none"}],
           "unprotected": {"notes": "ignored"}, "signature": None}
    assert pc.canonical_json(doc).startswith(
        b'{"backup-id":"elsa","backup-time":1593179765,"backup-type":"host","files":'
        b'[{"crypt-mode":"encrypt","csum":"0101')
    assert pc.manifest_signature(doc, key.id_key) == (
        "d7b446fb7db081662081d4b40fedd858a1d6307a5aff4ecff7d5bf4fd35679e9")
    assert key.fingerprint_str() == ("12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:"
                                     "ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25")
    with pytest.raises(pc.FormatProblem, match="null"):
        pc.canonical_json({**doc, "backup-id": None})


def test_zero_chunk_vector() -> None:
    zero = bytes(4 * 1024 * 1024)
    raw = w_blob(zero)
    facts = pc.verify_chunk(raw, bytes.fromhex(
        "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"),
        key=None, limit=len(zero))
    assert facts.plain_len == len(zero) and facts.digest_checked
    with pytest.raises(pc.FormatProblem, match="more than 1000 bytes"):
        pc.verify_chunk(raw, w_digest(zero), key=None, limit=1000)


# ---------------------------------------------------------------------------------------------
# Properties of the format functions
# ---------------------------------------------------------------------------------------------

_FAST = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FAST
@given(data=st.binary(min_size=1, max_size=3000) | st.integers(1, 9000).map(lambda n: b"a" * n),
       compress=st.booleans(), encrypt=st.booleans(), content_size=st.booleans(),
       where=st.floats(0, 1, exclude_max=True))
def test_chunk_roundtrip_and_every_flip_is_detected(
        data: bytes, compress: bool, encrypt: bool, content_size: bool, where: float) -> None:
    key = KEY if encrypt else None
    raw = w_blob(data, compress=compress, key=key, content_size=content_size)
    digest = w_digest(data, key)
    ck = pc.CryptKey(KEY)
    facts = pc.verify_chunk(raw, digest, key=ck if encrypt else None, limit=len(data))
    assert facts.encrypted == encrypt
    if encrypt:
        facts = pc.verify_chunk(raw, digest, key=None, limit=len(data))
        assert not facts.digest_checked
    else:
        assert facts.digest_checked and facts.plain_len == len(data)
    offset = int(where * len(raw))
    damaged = bytearray(raw)
    damaged[offset] ^= 0x01
    with pytest.raises(pc.FormatProblem):
        pc.verify_chunk(bytes(damaged), digest, key=ck if encrypt else None, limit=len(data))
    if encrypt and not 12 <= offset < 44:  # outside IV/tag the CRC alone catches it
        with pytest.raises(pc.FormatProblem):
            pc.verify_chunk(bytes(damaged), digest, key=None, limit=len(data))


@_FAST
@given(lengths=st.lists(st.integers(1, 1 << 40), max_size=50), cut=st.integers(1, 39))
def test_didx_roundtrip(lengths: list[int], cut: int) -> None:
    ends, total = [], 0
    for n in lengths:
        total += n
        ends.append(total)
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(len(lengths))]
    raw = w_didx(ends, digests)
    info = pc.parse_index(raw, "didx")
    assert list(info.ends) == ends and list(info.digests) == digests
    assert list(info.lengths()) == lengths
    assert pc.compute_csum(info) == (info.header_csum, total)
    with pytest.raises(pc.FormatProblem):
        pc.parse_index(raw[:-cut] if lengths else raw[:-cut - 4096], "didx")


@_FAST
@given(size=st.integers(1, 1 << 24), shift=st.integers(12, 22), extra=st.integers(-1, 1))
def test_fidx_roundtrip(size: int, shift: int, extra: int) -> None:
    chunk_size = 1 << shift
    count = -(-size // chunk_size)
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(count)]
    raw = w_fidx(digests, size, chunk_size)
    info = pc.parse_index(raw, "fidx")
    lengths = list(info.lengths())
    assert len(lengths) == count and sum(lengths) == size
    assert all(n == chunk_size for n in lengths[:-1]) and 0 < lengths[-1] <= chunk_size
    assert pc.compute_csum(info) == (hashlib.sha256(b"".join(digests)).digest(), size)
    if extra:
        wrong = raw + digests[0] if extra > 0 else raw[:-32]
        with pytest.raises(pc.FormatProblem):
            pc.parse_index(wrong, "fidx")


def _with_valid_crc(data: bytes) -> bytes:
    header = 44 if data[:8] in (M_ENC, M_ENC_ZSTD) else 12
    if len(data) < header:
        return data
    return data[:8] + zlib.crc32(data[header:]).to_bytes(4, "little") + data[12:]


@_FAST
@given(body=st.binary(max_size=6000),
       magic=st.sampled_from([b"", M_PLAIN, M_ZSTD, M_ENC, M_ENC_ZSTD, M_FIDX, M_DIDX]),
       fix_crc=st.booleans())
def test_garbage_only_ever_raises_format_problem(body: bytes, magic: bytes, fix_crc: bool) -> None:
    """Corrupt input is reported, never a crash with some other exception."""
    data = magic + body
    if fix_crc:
        data = _with_valid_crc(data)
    key = pc.CryptKey(KEY)
    calls: list[Callable[[], object]] = [
        lambda: pc.verify_chunk(data, bytes(32), key=key, limit=5000),
        lambda: pc.verify_chunk(data, bytes(32), key=None, limit=5000),
        lambda: pc.decode_blob(pc.parse_blob(data), key=key),
        lambda: pc.parse_index(data),
        lambda: pc.parse_index(data, "fidx"),
    ]
    for call in calls:
        with contextlib.suppress(pc.FormatProblem):
            call()
    pc.parse_manifest(data)


def test_deeply_nested_manifest_is_a_problem() -> None:
    manifest, errors, _ = pc.parse_manifest(b"[" * 100_000 + b"]" * 100_000)
    assert manifest is None and errors == ["manifest JSON is nested too deeply"]


@pytest.mark.parametrize(("payload", "words"), [
    (b"[]", "not an object"),
    (b"{", "not valid JSON"),
    (b'{"backup-type": "vm", "backup-id": "1", "backup-time": NaN, "files": []}',
     "invalid JSON constant NaN"),
    (b"\xff", "not UTF-8"),
])
def test_parse_manifest_rejects(payload: bytes, words: str) -> None:
    manifest, errors, _ = pc.parse_manifest(payload)
    assert manifest is None and len(errors) == 1 and words in errors[0]


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli(store: Store) -> None:
    clean = _run(str(store.root), "--key-hex", KEY.hex())
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""
    assert "pbs_check: 0 errors, 2 warnings;" in clean.stderr
    assert "signatures_verified=1" in clean.stderr
    rel = store.chunks(ALPHA1)[4]
    store.undo.remove(rel)
    broken = _run(str(store.root))
    assert broken.returncode == 1
    assert broken.stdout.splitlines() == [
        f"{rel}: missing chunk (referenced by {ALPHA1}/root.pxar.didx)"]
    bad_key = _run(str(store.root), "--key-hex", "abcd")
    assert bad_key.returncode == 2 and "32 bytes" in bad_key.stderr
