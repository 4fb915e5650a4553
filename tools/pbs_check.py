#!/usr/bin/env python3
"""Independent checker for Proxmox Backup Server (PBS) datastores.

Written from the format specification (docs: /work/shared/spec/pbs-datastore-format.md, cited
as §n) alone and deliberately imports nothing from chunkyard: it is the yardstick chunkyard's
writer is measured against, so sharing code with it would make the check circular.
Dependencies: the standard library, `zstandard` and `cryptography`.

Usage as a module::

    problems = check_datastore("/path/to/store", keyfile_key=enc_key)   # [] when clean
    report = check("/path/to/store")          # errors, warnings and counts

Usage as a script::

    python tools/pbs_check.py DATASTORE [--key-hex HEX] [--no-chunk-scan]

Exit status 0 when clean, 1 when there are errors (printed one per line on stdout); warnings and
the summary of counts go to stderr.

The check runs in two phases so that every chunk is read exactly once: phase 1 walks the
directory tree (namespaces, groups, snapshots, manifests, indexes) and collects every chunk
reference; phase 2 scans `.chunks` and verifies each referenced chunk once against all of its
references.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import stat
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "BlobInfo",
    "ChunkFacts",
    "CryptKey",
    "FileEntry",
    "FormatProblem",
    "IndexInfo",
    "Manifest",
    "Report",
    "canonical_json",
    "check",
    "check_datastore",
    "compute_csum",
    "decode_blob",
    "main",
    "manifest_signature",
    "owner_problems",
    "parse_blob",
    "parse_index",
    "parse_manifest",
    "verify_chunk",
]


class FormatProblem(Exception):
    """A file violates the format; the message says how (without naming the file)."""


# ---------------------------------------------------------------------------------------------
# Constants (§1, §2, §3.1, §3.2, §4)
# ---------------------------------------------------------------------------------------------


def _magic(text: str) -> bytes:
    """§3.1: every magic is the first 8 bytes of SHA-256 of its name."""
    return hashlib.sha256(text.encode("ascii")).digest()[:8]


MAGIC_BLOB_PLAIN = _magic("Proxmox Backup uncompressed blob v1.0")
MAGIC_BLOB_ZSTD = _magic("Proxmox Backup zstd compressed blob v1.0")
MAGIC_BLOB_ENCRYPTED = _magic("Proxmox Backup encrypted blob v1.0")
MAGIC_BLOB_ENCR_ZSTD = _magic("Proxmox Backup zstd compressed encrypted blob v1.0")
MAGIC_FIDX = _magic("Proxmox Backup fixed sized chunk index v1.0")
MAGIC_DIDX = _magic("Proxmox Backup dynamic sized chunk index v1.0")

#: magic -> (encrypted, compressed)
_BLOB_KINDS: dict[bytes, tuple[bool, bool]] = {
    MAGIC_BLOB_PLAIN: (False, False),
    MAGIC_BLOB_ZSTD: (False, True),
    MAGIC_BLOB_ENCRYPTED: (True, False),
    MAGIC_BLOB_ENCR_ZSTD: (True, True),
}

PLAIN_HEADER = 12  # magic[8] | crc32 LE[4]
CRYPT_HEADER = 44  # magic[8] | crc32 LE[4] | iv[16] | tag[16]
INDEX_HEADER = 4096
MAX_BLOB_SIZE = 128 * 1024 * 1024  # DataBlob::encode limit (§3.2)
MAX_BLOB_FILE = MAX_BLOB_SIZE + CRYPT_HEADER  # no DataBlob file is larger (zstd never expands)
FINGERPRINT_INPUT = hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest()

BACKUP_TYPES = ("ct", "host", "vm")
MAX_NAMESPACE_DEPTH = 7
MAX_NAMESPACE_LENGTH = 256
CRYPT_MODES = ("none", "encrypt", "sign-only")
PREFIX_DIRS = frozenset(f"{i:04x}" for i in range(0x10000))

_SAFE_ID = r"[A-Za-z0-9_][A-Za-z0-9._\-]*"
SAFE_ID_RE = re.compile(rf"^{_SAFE_ID}$")
BACKUP_ID_RE = SAFE_ID_RE  # same character set, no length limit (§2)
BACKUP_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")
# userid name = [^\s:/[:cntrl:]]+; realm and token name are SAFE_IDs (§2)
AUTHID_RE = re.compile(rf"^[^\s:/\x00-\x1f\x7f]+@{_SAFE_ID}(?:!{_SAFE_ID})?$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
BAD_CHUNK_RE = re.compile(r"^[0-9a-f]{64}\.[0-9]\.bad$")
ARCHIVE_RE = re.compile(r"^.*\.([fd]idx|blob)$")

MANIFEST_NAME = "index.json.blob"
CLIENT_LOG_NAME = "client.log.blob"
_MANIFEST_KEYS = {"backup-type", "backup-id", "backup-time", "files", "unprotected", "signature"}
_FILE_KEYS = {"filename", "crypt-mode", "size", "csum"}

_ZSTD_PIECE = 16 * 1024  # input fed per step: bounds the output of a hostile frame per step
_WARNINGS_PER_KIND = 20


# ---------------------------------------------------------------------------------------------
# Encryption key (§3.2)
# ---------------------------------------------------------------------------------------------


class CryptKey:
    """The 32-byte `enc_key` of a PBS key file plus what §3.2 derives from it."""

    def __init__(self, enc_key: bytes) -> None:
        if len(enc_key) != 32:
            raise ValueError(f"an encryption key has 32 bytes, got {len(enc_key)}")
        self.enc_key = bytes(enc_key)
        self.id_key = hashlib.pbkdf2_hmac("sha256", self.enc_key, b"_id_key", 10, 32)
        self.fingerprint = hashlib.sha256(FINGERPRINT_INPUT + self.id_key).digest()
        self._aes = AESGCM(self.enc_key)

    def fingerprint_str(self) -> str:
        """Colon-separated lowercase hex, as in a manifest's `key-fingerprint`."""
        return ":".join(f"{b:02x}" for b in self.fingerprint)

    def decrypt(self, iv: bytes, tag: bytes, ciphertext: bytes) -> bytes:
        """AES-256-GCM with the 16-byte IV, empty AAD and the tag kept apart from the data."""
        try:
            return self._aes.decrypt(iv, ciphertext + tag, None)
        except InvalidTag:
            raise FormatProblem("decryption failed (wrong key or corrupt IV/tag/data)") from None


# ---------------------------------------------------------------------------------------------
# DataBlob (§3.2, §3.3)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlobInfo:
    """The parsed header of a DataBlob; `payload` is the payload or the ciphertext."""

    encrypted: bool
    compressed: bool
    crc: int
    iv: bytes
    tag: bytes
    payload: bytes


def parse_blob(raw: bytes) -> BlobInfo:
    """Check magic, length and CRC; the CRC covers only what follows the header (§3.2)."""
    if len(raw) < PLAIN_HEADER:
        raise FormatProblem(f"too short for a DataBlob ({len(raw)} bytes)")
    kind = _BLOB_KINDS.get(raw[:8])
    if kind is None:
        raise FormatProblem(f"unknown DataBlob magic {raw[:8].hex()}")
    encrypted, compressed = kind
    header = CRYPT_HEADER if encrypted else PLAIN_HEADER
    if len(raw) < header:
        raise FormatProblem(f"too short for an encrypted DataBlob ({len(raw)} bytes)")
    stored = int.from_bytes(raw[8:12], "little")
    payload = raw[header:]
    computed = zlib.crc32(payload)
    if stored != computed:
        raise FormatProblem(f"CRC mismatch (stored {stored:08x}, computed {computed:08x})")
    iv, tag = (raw[12:28], raw[28:44]) if encrypted else (b"", b"")
    return BlobInfo(encrypted, compressed, stored, iv, tag, payload)


def _zstd_pieces(payload: bytes, limit: int) -> Iterator[bytes]:
    """Stream-decode zstd frames (with or without content size, §3.2), refusing output > limit.

    Concatenated frames are accepted, as PBS's stream decoder does; trailing garbage and
    truncated frames are errors.
    """
    if not payload:
        raise FormatProblem("compressed payload is empty")
    view = memoryview(payload)
    pos, total = 0, 0
    dctx = zstandard.ZstdDecompressor()
    while pos < len(view):
        obj = dctx.decompressobj()
        while not obj.eof:
            if pos >= len(view):
                raise FormatProblem("zstd frame is truncated")
            piece = view[pos : pos + _ZSTD_PIECE]
            try:
                out = obj.decompress(piece)
            except zstandard.ZstdError as exc:
                raise FormatProblem(f"zstd decode error: {exc}") from None
            pos += len(piece) - len(obj.unused_data)
            total += len(out)
            if total > limit:
                raise FormatProblem(f"decodes to more than {limit} bytes")
            if out:
                yield out


def decode_blob(info: BlobInfo, *, key: CryptKey | None = None,
                limit: int = MAX_BLOB_SIZE) -> bytes:
    """The plain content of a parsed blob; encrypted blobs need `key`."""
    data = info.payload
    if info.encrypted:
        if key is None:
            raise FormatProblem("blob is encrypted and no key was given")
        data = key.decrypt(info.iv, info.tag, data)
    if info.compressed:
        return b"".join(_zstd_pieces(data, limit))
    if len(data) > limit:
        raise FormatProblem(f"decodes to more than {limit} bytes")
    return data


@dataclass(frozen=True)
class ChunkFacts:
    """What verifying one chunk file established."""

    encrypted: bool
    plain_len: int | None  # None when unknown (encrypted + compressed, no key)
    digest_checked: bool


def verify_chunk(raw: bytes, digest: bytes, *, key: CryptKey | None, limit: int) -> ChunkFacts:
    """Verify a chunk file against its name (§3.3); `limit` bounds the decoded size.

    Unencrypted: CRC, decode, SHA256(data) == digest. Encrypted: CRC only, unless a key is
    given, then decrypt and SHA256(plain || id_key) == digest.
    """
    info = parse_blob(raw)
    if info.encrypted and key is None:
        plain_len = None if info.compressed else len(info.payload)  # GCM keeps the length
        return ChunkFacts(True, plain_len, False)
    data = info.payload
    if info.encrypted:
        assert key is not None
        data = key.decrypt(info.iv, info.tag, data)
    hasher = hashlib.sha256()
    size = 0
    if info.compressed:
        for piece in _zstd_pieces(data, limit):
            hasher.update(piece)
            size += len(piece)
    else:
        if len(data) > limit:
            raise FormatProblem(f"decodes to more than {limit} bytes")
        hasher.update(data)
        size = len(data)
    if info.encrypted:
        assert key is not None
        hasher.update(key.id_key)
    actual = hasher.digest()
    if actual != digest:
        raise FormatProblem(f"digest mismatch: {size} bytes of content hash to {actual.hex()}")
    return ChunkFacts(info.encrypted, size, True)


# ---------------------------------------------------------------------------------------------
# Index files (§4)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexInfo:
    """A parsed `.fidx` or `.didx`; `ends[i]` is the exclusive end offset of chunk i."""

    kind: str  # "fidx" | "didx"
    uuid: bytes
    ctime: int
    header_csum: bytes
    size: int
    chunk_size: int  # 0 for a dynamic index
    digests: tuple[bytes, ...]
    ends: tuple[int, ...]
    reserved_zero: bool

    def lengths(self) -> Iterator[int]:
        """The length of each chunk's range."""
        start = 0
        for end in self.ends:
            yield end - start
            start = end


def compute_csum(info: IndexInfo) -> tuple[bytes, int]:
    """§4.3 `compute_csum`: what the manifest stores and what the header's index_csum holds."""
    hasher = hashlib.sha256()
    if info.kind == "fidx":
        for digest in info.digests:
            hasher.update(digest)
    else:
        for end, digest in zip(info.ends, info.digests, strict=True):
            hasher.update(end.to_bytes(8, "little"))
            hasher.update(digest)
    return hasher.digest(), info.size


def parse_index(raw: bytes, kind: str | None = None) -> IndexInfo:
    """Parse an index and enforce its layout rules (§4.1, §4.2).

    `kind` ("fidx"/"didx", from the file extension) must agree with the magic when given.
    Header csum and reserved bytes are reported by the caller, not raised, so the chunk
    references of an otherwise readable index are still checked.
    """
    if len(raw) < INDEX_HEADER:
        raise FormatProblem(f"shorter than the {INDEX_HEADER}-byte index header ({len(raw)} bytes)")
    magic = raw[:8]
    found = {MAGIC_FIDX: "fidx", MAGIC_DIDX: "didx"}.get(magic)
    if found is None:
        raise FormatProblem(f"unknown index magic {magic.hex()}")
    if kind is not None and kind != found:
        raise FormatProblem(f"has the {found} magic but a .{kind} name")
    uuid = raw[8:24]
    ctime = int.from_bytes(raw[24:32], "little", signed=True)
    header_csum = raw[32:64]
    body = raw[INDEX_HEADER:]
    if found == "fidx":
        return _parse_fidx(raw, uuid, ctime, header_csum, body)
    return _parse_didx(raw, uuid, ctime, header_csum, body)


def _parse_fidx(raw: bytes, uuid: bytes, ctime: int, csum: bytes, body: bytes) -> IndexInfo:
    size = int.from_bytes(raw[64:72], "little")
    chunk_size = int.from_bytes(raw[72:80], "little")
    if chunk_size == 0 or chunk_size & (chunk_size - 1):
        raise FormatProblem(f"chunk_size {chunk_size} is not a power of two")
    if size == 0:
        raise FormatProblem("size is 0 (a fixed index has at least one chunk)")
    count = -(-size // chunk_size)
    if len(body) != count * 32:
        raise FormatProblem(
            f"file is {len(raw)} bytes, expected {INDEX_HEADER + count * 32} for size {size} "
            f"and chunk_size {chunk_size} ({count} digests)"
        )
    digests = tuple(body[i * 32 : i * 32 + 32] for i in range(count))
    ends = tuple(min((i + 1) * chunk_size, size) for i in range(count))
    reserved_zero = not any(raw[80:INDEX_HEADER])
    return IndexInfo("fidx", uuid, ctime, csum, size, chunk_size, digests, ends, reserved_zero)


def _parse_didx(raw: bytes, uuid: bytes, ctime: int, csum: bytes, body: bytes) -> IndexInfo:
    if len(body) % 40:
        raise FormatProblem(
            f"body of {len(body)} bytes is not a whole number of 40-byte entries"
        )
    ends: list[int] = []
    digests: list[bytes] = []
    previous = 0
    for i in range(len(body) // 40):
        end = int.from_bytes(body[i * 40 : i * 40 + 8], "little")
        if end <= previous:
            raise FormatProblem(
                f"entry {i}: end offset {end} does not increase (previous end {previous})"
            )
        ends.append(end)
        digests.append(body[i * 40 + 8 : i * 40 + 40])
        previous = end
    reserved_zero = not any(raw[64:INDEX_HEADER])
    return IndexInfo("didx", uuid, ctime, csum, previous, 0, tuple(digests), tuple(ends),
                     reserved_zero)


# ---------------------------------------------------------------------------------------------
# Manifest (§5)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One manifest `files` entry (§5)."""

    filename: str
    crypt_mode: str
    size: int
    csum: str


@dataclass(frozen=True)
class Manifest:
    """The checked fields of a manifest; `doc` is the whole JSON object."""

    backup_type: str
    backup_id: str
    backup_time: int
    files: tuple[FileEntry, ...]
    unprotected: dict[str, Any]
    signature: str | None
    doc: dict[str, Any]


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise FormatProblem(f"duplicate JSON key {dupes[0]!r}")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise FormatProblem(f"invalid JSON constant {name}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_manifest(payload: bytes) -> tuple[Manifest | None, list[str], list[str]]:
    """Validate manifest JSON (§5): returns (manifest or None, errors, warnings).

    The manifest is None when a top-level field is unusable; a bad `files` entry is reported
    and left out so the other entries can still be checked.
    """
    errors: list[str] = []
    warnings: list[str] = []
    try:
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=_strict_object,
                         parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return None, ["manifest is not UTF-8"], warnings
    except (ValueError, FormatProblem) as exc:
        return None, [f"manifest is not valid JSON: {exc}"], warnings
    except RecursionError:
        return None, ["manifest JSON is nested too deeply"], warnings
    if not isinstance(doc, dict):
        return None, ["manifest JSON is not an object"], warnings
    for key in sorted(set(doc) - _MANIFEST_KEYS):
        warnings.append(f"manifest has unknown key {key!r}")
    btype, bid, btime = doc.get("backup-type"), doc.get("backup-id"), doc.get("backup-time")
    if btype not in BACKUP_TYPES:
        errors.append(f"manifest backup-type {btype!r} is not one of vm, ct, host")
    if not isinstance(bid, str) or not BACKUP_ID_RE.match(bid):
        errors.append(f"manifest backup-id {bid!r} is not a valid backup id")
    if not _is_int(btime):
        errors.append(f"manifest backup-time {btime!r} is not an integer")
    files_doc = doc.get("files")
    if not isinstance(files_doc, list):
        errors.append(f"manifest files is {type(files_doc).__name__}, not a list")
        files_doc = []
    unprotected = doc.get("unprotected", {})
    if not isinstance(unprotected, dict):
        errors.append("manifest unprotected is not an object")
        unprotected = {}
    signature = doc.get("signature")
    if signature is not None and (not isinstance(signature, str) or not HEX64_RE.match(signature)):
        errors.append(f"manifest signature {signature!r} is not 64 lowercase hex digits")
        signature = None
    files = _parse_file_entries(files_doc, errors, warnings)
    if btype not in BACKUP_TYPES or not isinstance(bid, str) or not BACKUP_ID_RE.match(bid):
        return None, errors, warnings
    if not isinstance(btime, int) or isinstance(btime, bool):
        return None, errors, warnings
    assert isinstance(btype, str)
    return Manifest(btype, bid, btime, files, unprotected, signature, doc), errors, warnings


def _parse_file_entries(items: list[Any], errors: list[str], warnings: list[str]
                        ) -> tuple[FileEntry, ...]:
    entries: list[FileEntry] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"manifest files[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where} is not an object")
            continue
        for key in sorted(set(item) - _FILE_KEYS):
            warnings.append(f"{where} has unknown key {key!r}")
        name, mode = item.get("filename"), item.get("crypt-mode", "none")
        size, csum = item.get("size"), item.get("csum")
        problems = []
        if not isinstance(name, str) or not SAFE_ID_RE.match(name) or not ARCHIVE_RE.match(name):
            problems.append(f"filename {name!r} is not a SAFE_ID ending in .fidx/.didx/.blob")
        elif name in (MANIFEST_NAME, CLIENT_LOG_NAME):
            problems.append(f"lists {name}, which a manifest never lists")
        elif name in seen:
            problems.append(f"lists {name} twice")
        if mode not in CRYPT_MODES:
            problems.append(f"crypt-mode {mode!r} is not one of none, encrypt, sign-only")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"size {size!r} is not a non-negative integer")
        if not isinstance(csum, str) or not HEX64_RE.match(csum):
            problems.append(f"csum {csum!r} is not 64 lowercase hex digits")
        if problems:
            errors.extend(f"{where}: {p}" for p in problems)
            continue
        assert isinstance(name, str) and isinstance(mode, str)
        assert isinstance(size, int) and isinstance(csum, str)
        seen.add(name)
        entries.append(FileEntry(name, mode, size, csum))
    return tuple(entries)


def _contains_null(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_null(v) for v in value)
    return False


def canonical_json(doc: dict[str, Any]) -> bytes:
    """§5 canonical form of the signed part: no `unprotected`/`signature`, sorted, compact."""
    signed = {k: v for k, v in doc.items() if k not in ("unprotected", "signature")}
    if _contains_null(signed):
        raise FormatProblem("signed part of the manifest contains null")
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def manifest_signature(doc: dict[str, Any], id_key: bytes) -> str:
    """HMAC-SHA256 over the canonical JSON with the id_key (§5)."""
    return hmac.new(id_key, canonical_json(doc), hashlib.sha256).hexdigest()


def epoch_to_rfc3339(epoch: int) -> str:
    """The snapshot directory name for an epoch (§1.2)."""
    try:
        moment = datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        raise FormatProblem(f"time {epoch} is out of range") from None
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")


def owner_problems(data: bytes) -> tuple[list[str], list[str]]:
    """(errors, warnings) for an `owner` file: PBS reads the first line, trailing space
    trimmed, as an authid (§1.2) and writes exactly `<authid>\\n`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ["not UTF-8"], []
    first = text.split("\n", 1)[0].rstrip()
    if not AUTHID_RE.match(first):
        return [f"first line {first!r} is not a valid authid"], []
    if text != first + "\n":
        return [], ["is not exactly one '<authid>\\n' line"]
    return [], []


def _snapshot_time_ok(name: str) -> bool:
    if not BACKUP_TIME_RE.match(name):
        return False
    try:
        datetime.strptime(name, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The datastore walk
# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Outcome of a check: errors make a datastore fail, warnings do not."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.counts.items())]
        return (f"{len(self.errors)} errors, {len(self.warnings)} warnings; "
                + ", ".join(parts))


@dataclass
class _IndexRef:
    """An index whose chunks are checked in phase 2; `encrypted` None = crypt-mode unknown."""

    path: str
    encrypted: bool | None
    crypt_mode: str | None


@dataclass
class _ChunkNeed:
    refs: list[tuple[int, int]] = field(default_factory=list)  # (index number, range length)
    use_key: bool = False


class _Checker:
    def __init__(self, root: str, key: CryptKey | None, scan_chunk_dirs: bool) -> None:
        self.root = root
        self.key = key
        self.scan_chunk_dirs = scan_chunk_dirs
        self.report = Report()
        self.counts = self.report.counts
        self._warned: Counter[str] = Counter()
        self.indexes: list[_IndexRef] = []
        self.chunks: dict[bytes, _ChunkNeed] = {}

    # -- reporting ------------------------------------------------------------------------

    def error(self, path: str, message: str) -> None:
        self.report.errors.append(f"{path}: {message}" if path else message)

    def warn(self, path: str, message: str, kind: str = "") -> None:
        """Warnings of one kind are capped so a messy store does not drown the output."""
        self._warned[kind] += 1
        if not kind or self._warned[kind] <= _WARNINGS_PER_KIND:
            self.report.warnings.append(f"{path}: {message}" if path else message)

    def _finish_warnings(self) -> None:
        for kind, n in sorted(self._warned.items()):
            if kind and n > _WARNINGS_PER_KIND:
                self.report.warnings.append(
                    f"... and {n - _WARNINGS_PER_KIND} more warnings of kind {kind!r}")

    # -- file helpers -----------------------------------------------------------------------

    def abspath(self, rel: str) -> str:
        return os.path.join(self.root, *rel.split("/")) if rel else self.root

    def read(self, rel: str, limit: int | None = None) -> bytes | None:
        """The file's bytes, or None after reporting why not; `limit` caps the size read."""
        try:
            with open(self.abspath(rel), "rb") as handle:
                if limit is not None and os.fstat(handle.fileno()).st_size > limit:
                    self.error(rel, f"larger than any DataBlob ({limit} bytes)")
                    return None
                return handle.read()
        except OSError as exc:
            self.error(rel, f"cannot read: {exc.strerror or exc}")
            return None

    def listdir(self, rel: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.abspath(rel)) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            self.error(rel, f"cannot list directory: {exc.strerror or exc}")
            return []

    # -- top level --------------------------------------------------------------------------

    def run(self) -> Report:
        if not os.path.isdir(self.root):
            self.error(self.root, "not a directory")
            return self.report
        self.check_root_files()
        self.walk_namespace("", ())
        if self.check_chunk_dirs():
            self.check_chunks()
        self._finish_warnings()
        return self.report

    def check_root_files(self) -> None:
        lock = self.abspath(".lock")
        if not os.path.lexists(lock):
            self.error(".lock", "missing")
        elif not stat.S_ISREG(os.lstat(lock).st_mode):
            self.error(".lock", "not a regular file")
        elif os.path.getsize(lock):
            self.warn(".lock", "not empty")
        status = self.abspath(".gc-status")
        if os.path.isfile(status):
            try:
                with open(status, "rb") as handle:
                    json.loads(handle.read())
            except (OSError, ValueError, RecursionError):
                self.warn(".gc-status", "not readable JSON")

    # -- namespaces, groups, snapshots (§1.2, §1.3, §2) -------------------------------------

    def walk_namespace(self, rel: str, components: tuple[str, ...]) -> None:
        self.counts["namespaces"] += 1
        for entry in self.listdir(rel):
            name = entry.name
            child = f"{rel}/{name}" if rel else name
            if not components and name in (".chunks", ".lock", ".gc-status"):
                continue
            if name in BACKUP_TYPES:
                if entry.is_dir(follow_symlinks=False):
                    self.check_type_dir(child, name)
                else:
                    self.error(child, "backup type entry is not a directory")
            elif name == "ns":
                if entry.is_dir(follow_symlinks=False):
                    self.check_ns_dir(child, components)
                else:
                    self.error(child, "'ns' is not a directory")
            else:
                self.warn(child, "unexpected entry (PBS ignores it)", "unexpected entry")

    def check_ns_dir(self, rel: str, components: tuple[str, ...]) -> None:
        for entry in self.listdir(rel):
            child = f"{rel}/{entry.name}"
            if not entry.is_dir(follow_symlinks=False):
                self.warn(child, "not a directory (PBS ignores it)", "unexpected entry")
                continue
            if not SAFE_ID_RE.match(entry.name):
                self.error(child, "namespace name is not a SAFE_ID")
                continue
            if len(components) >= MAX_NAMESPACE_DEPTH:
                self.error(child, f"namespace depth exceeds {MAX_NAMESPACE_DEPTH}")
                continue
            # push_do: the +1 is added for every component, including the first (§2)
            length = sum(len(c) + 1 for c in components) + len(entry.name) + 1
            if length > MAX_NAMESPACE_LENGTH:
                self.error(child, f"namespace is longer than {MAX_NAMESPACE_LENGTH} characters")
                continue
            self.walk_namespace(child, (*components, entry.name))

    def check_type_dir(self, rel: str, btype: str) -> None:
        for entry in self.listdir(rel):
            child = f"{rel}/{entry.name}"
            if not entry.is_dir(follow_symlinks=False):
                self.warn(child, "not a directory (PBS ignores it)", "unexpected entry")
            elif not BACKUP_ID_RE.match(entry.name):
                self.error(child, "group directory name is not a valid backup id")
            else:
                self.check_group(child, btype, entry.name)

    def check_group(self, rel: str, btype: str, bid: str) -> None:
        self.counts["groups"] += 1
        has_owner = False
        for entry in self.listdir(rel):
            child = f"{rel}/{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name == "owner" and not is_dir:
                has_owner = True
                self.check_owner(child)
            elif entry.name == "notes" and not is_dir:
                data = self.read(child)
                if data is not None:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        self.warn(child, "group notes are not UTF-8")
            elif is_dir and _snapshot_time_ok(entry.name):
                self.check_snapshot(child, btype, bid, entry.name)
            elif is_dir:
                self.error(child, "snapshot directory name is not a valid YYYY-MM-DDTHH:MM:SSZ")
            else:
                self.warn(child, "unexpected file in group directory", "unexpected entry")
        if not has_owner:
            self.error(f"{rel}/owner", "missing")

    def check_owner(self, rel: str) -> None:
        data = self.read(rel)
        if data is not None:
            errors, warnings = owner_problems(data)
            for message in errors:
                self.error(rel, message)
            for message in warnings:
                self.warn(rel, message)

    def check_snapshot(self, rel: str, btype: str, bid: str, time_name: str) -> None:
        self.counts["snapshots"] += 1
        entries = {e.name: e for e in self.listdir(rel)}
        manifest: Manifest | None = None
        listed: dict[str, FileEntry] = {}
        manifest_entry = entries.get(MANIFEST_NAME)
        if manifest_entry is None:
            self.counts["snapshots_unfinished"] += 1
            self.warn(rel, "unfinished snapshot (no index.json.blob)")
        elif not manifest_entry.is_file(follow_symlinks=False):
            self.error(f"{rel}/{MANIFEST_NAME}", "not a regular file")
        else:
            self.counts["snapshots_finished"] += 1
            manifest = self.check_manifest(rel, btype, bid, time_name)
            if manifest is not None:
                listed = {f.filename: f for f in manifest.files}
        use_key = self._key_applies(rel, manifest)
        for name, entry in sorted(entries.items()):
            child = f"{rel}/{name}"
            if name == MANIFEST_NAME:
                continue
            if name in listed:
                if entry.is_file(follow_symlinks=False):
                    self.check_archive(child, listed[name], use_key)
                else:
                    self.error(child, "listed in the manifest but not a regular file")
            elif not entry.is_file(follow_symlinks=False):
                self.warn(child, "unexpected non-file entry in snapshot", "unexpected entry")
            elif name == ".protected":
                self.counts["snapshots_protected"] += 1
            elif name == CLIENT_LOG_NAME:
                self.check_loose_blob(child, use_key)
            elif ARCHIVE_RE.match(name):
                if manifest is not None:
                    self.warn(child, "archive is not listed in the manifest", "unlisted archive")
                if name.endswith("idx"):
                    self.check_index_file(child, None, use_key)
                else:
                    self.check_loose_blob(child, use_key)
            elif name.endswith((".tmp_fidx", ".tmp_didx", ".tmp")):
                self.warn(child, "leftover temporary file", "temporary file")
            else:
                self.warn(child, "unexpected file in snapshot", "unexpected entry")
        for name in sorted(set(listed) - set(entries)):
            self.error(f"{rel}/{name}", "listed in the manifest but missing")

    def _key_applies(self, rel: str, manifest: Manifest | None) -> bool:
        """Use the key unless the manifest names a different key fingerprint."""
        if self.key is None:
            return False
        if manifest is None:
            return True
        fingerprint = manifest.unprotected.get("key-fingerprint")
        if fingerprint is None or fingerprint == self.key.fingerprint_str():
            return True
        self.warn(rel, f"made with another key ({fingerprint}); encrypted data checked by CRC only")
        return False

    def check_manifest(self, snap: str, btype: str, bid: str, time_name: str) -> Manifest | None:
        rel = f"{snap}/{MANIFEST_NAME}"
        raw = self.read(rel, MAX_BLOB_FILE)
        if raw is None:
            return None
        try:
            info = parse_blob(raw)
            if info.encrypted:
                raise FormatProblem("manifest blob is encrypted (it never is)")
            payload = decode_blob(info)
        except FormatProblem as exc:
            self.error(rel, str(exc))
            return None
        manifest, errors, warnings = parse_manifest(payload)
        for message in errors:
            self.error(rel, message)
        for message in warnings:
            self.warn(rel, message)
        if manifest is None:
            return None
        if (manifest.backup_type, manifest.backup_id) != (btype, bid):
            self.error(rel, f"manifest names {manifest.backup_type}/{manifest.backup_id}, "
                            f"directory is {btype}/{bid}")
        try:
            expected = epoch_to_rfc3339(manifest.backup_time)
        except FormatProblem as exc:
            self.error(rel, f"manifest backup-time: {exc}")
        else:
            if expected != time_name:
                self.error(rel, f"manifest backup-time {manifest.backup_time} is {expected}, "
                                f"directory is {time_name}")
        self.check_signature(rel, manifest)
        state = manifest.unprotected.get("verify_state")
        if isinstance(state, dict) and state.get("state") == "failed":
            self.warn(snap, "snapshot is marked failed by a previous verify")
        return manifest

    def check_signature(self, rel: str, manifest: Manifest) -> None:
        keyed = sorted({f.crypt_mode for f in manifest.files} & {"encrypt", "sign-only"})
        if manifest.signature is None:
            if keyed:
                self.error(rel, f"files use crypt-mode {'/'.join(keyed)} but the manifest "
                                "has no signature")
            return
        self.counts["signatures"] += 1
        fingerprint = manifest.unprotected.get("key-fingerprint")
        if self.key is None or (fingerprint is not None
                                and fingerprint != self.key.fingerprint_str()):
            self.counts["signatures_unverified"] += 1
            return
        try:
            expected = manifest_signature(manifest.doc, self.key.id_key)
        except FormatProblem as exc:
            self.error(rel, str(exc))
            return
        if not hmac.compare_digest(expected, manifest.signature):
            self.error(rel, "signature mismatch (HMAC over the canonical JSON)")
        else:
            self.counts["signatures_verified"] += 1

    # -- archives (§3, §4, §5) --------------------------------------------------------------

    def check_archive(self, rel: str, entry: FileEntry, use_key: bool) -> None:
        if entry.filename.endswith(".blob"):
            self.check_listed_blob(rel, entry, use_key)
        else:
            self.check_index_file(rel, entry, use_key)

    def check_listed_blob(self, rel: str, entry: FileEntry, use_key: bool) -> None:
        """A `.blob` archive: size and csum are of the raw file (§5)."""
        raw = self.read(rel, MAX_BLOB_FILE)
        if raw is None:
            return
        self.counts["blobs"] += 1
        if len(raw) != entry.size:
            self.error(rel, f"size {len(raw)} differs from manifest size {entry.size}")
        csum = hashlib.sha256(raw).hexdigest()
        if csum != entry.csum:
            self.error(rel, f"SHA-256 {csum} differs from manifest csum {entry.csum}")
        info = self._check_blob_bytes(rel, raw, use_key)
        if info is not None and info.encrypted != (entry.crypt_mode == "encrypt"):
            state = "encrypted" if info.encrypted else "not encrypted"
            self.error(rel, f"blob is {state} but manifest crypt-mode is {entry.crypt_mode}")

    def check_loose_blob(self, rel: str, use_key: bool) -> None:
        raw = self.read(rel, MAX_BLOB_FILE)
        if raw is not None:
            self.counts["blobs"] += 1
            self._check_blob_bytes(rel, raw, use_key)

    def _check_blob_bytes(self, rel: str, raw: bytes, use_key: bool) -> BlobInfo | None:
        try:
            info = parse_blob(raw)
            if not info.encrypted or use_key:
                decode_blob(info, key=self.key if use_key else None)
        except FormatProblem as exc:
            self.error(rel, str(exc))
            return None
        return info

    def check_index_file(self, rel: str, entry: FileEntry | None, use_key: bool) -> None:
        raw = self.read(rel)
        if raw is None:
            return
        self.counts["indexes"] += 1
        try:
            info = parse_index(raw, rel.rsplit(".", 1)[1])
        except FormatProblem as exc:
            self.error(rel, str(exc))
            return
        csum, size = compute_csum(info)
        if csum != info.header_csum:
            self.error(rel, f"header index_csum {info.header_csum.hex()} differs from the "
                            f"computed {csum.hex()}")
        if not info.reserved_zero:
            self.error(rel, "reserved header bytes are not zero")
        if entry is not None:
            if csum.hex() != entry.csum:
                self.error(rel, f"computed csum {csum.hex()} differs from manifest csum "
                                f"{entry.csum}")
            if size != entry.size:
                self.error(rel, f"index size {size} differs from manifest size {entry.size}")
        self.add_references(rel, info, entry, use_key)

    def add_references(self, rel: str, info: IndexInfo, entry: FileEntry | None,
                       use_key: bool) -> None:
        crypt_mode = entry.crypt_mode if entry is not None else None
        encrypted = None if crypt_mode is None else crypt_mode == "encrypt"
        number = len(self.indexes)
        self.indexes.append(_IndexRef(rel, encrypted, crypt_mode))
        for digest, length in zip(info.digests, info.lengths(), strict=True):
            need = self.chunks.get(digest)
            if need is None:
                need = self.chunks[digest] = _ChunkNeed()
            need.refs.append((number, length))
            need.use_key = need.use_key or use_key
            self.counts["chunk_references"] += 1

    # -- the chunk store (§1.1, §3.3, §8.4) -------------------------------------------------

    def check_chunk_dirs(self) -> bool:
        """Check `.chunks` layout and count files; False when there is no chunk store.

        Listing the 65536 prefix directories is the one cost that does not scale with the
        data checked; `scan_chunk_dirs=False` skips it (no unreferenced/odd-name report).
        """
        if not os.path.isdir(self.abspath(".chunks")) or os.path.islink(self.abspath(".chunks")):
            self.error(".chunks", f"missing or not a directory ({len(self.chunks)} referenced "
                                  "chunks not checked)")
            return False
        names = {e.name: e for e in self.listdir(".chunks")}
        missing = sorted(PREFIX_DIRS - set(names))
        if missing:
            self.error(".chunks", f"{len(missing)} of the 65536 prefix directories are missing "
                                  f"(first: {', '.join(missing[:5])})")
        extra = sorted(set(names) - PREFIX_DIRS)
        if extra:
            self.error(".chunks", f"{len(extra)} unexpected entries besides the prefix "
                                  f"directories (first: {', '.join(extra[:5])})")
        if not self.scan_chunk_dirs:
            return True
        referenced_on_disk = 0
        base = self.abspath(".chunks") + os.sep  # plain concatenation: this loop runs 65536x
        for prefix in sorted(PREFIX_DIRS & set(names)):
            rel = f".chunks/{prefix}"
            if not names[prefix].is_dir(follow_symlinks=False):
                self.error(rel, "prefix entry is not a directory")
                continue
            try:
                with os.scandir(base + prefix) as listing:
                    entries = list(listing)
            except OSError as exc:
                self.error(rel, f"cannot list directory: {exc.strerror or exc}")
                continue
            if entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    referenced_on_disk += self.classify_chunk_entry(rel, prefix, entry)
        self.counts["chunks_unreferenced"] = self.counts["chunk_files"] - referenced_on_disk
        return True

    def classify_chunk_entry(self, rel: str, prefix: str, entry: os.DirEntry[str]) -> int:
        """Count one name in a prefix directory; returns 1 for a referenced chunk file."""
        name, child = entry.name, f"{rel}/{entry.name}"
        if HEX64_RE.match(name):
            if not name.startswith(prefix):
                self.error(child, "chunk file is in the wrong prefix directory")
            elif not entry.is_file(follow_symlinks=False):
                self.error(child, "chunk entry is not a regular file")
            else:
                self.counts["chunk_files"] += 1
                return 1 if bytes.fromhex(name) in self.chunks else 0
        elif BAD_CHUNK_RE.match(name):
            self.counts["chunk_bad_files"] += 1
            self.warn(child, "chunk marked bad by verify", "bad chunk")
        elif ".tmp_" in name:
            self.counts["chunk_tmp_files"] += 1
            self.warn(child, "leftover temporary chunk file", "temporary file")
        else:
            self.warn(child, "unexpected name in the chunk store", "unexpected chunk name")
        return 0

    def check_chunks(self) -> None:
        """Phase 2: verify each referenced chunk once, in digest (= path) order."""
        # index number -> problem kind -> {chunk hex: detail}, each chunk counted once
        per_index: dict[int, dict[str, dict[str, str]]] = {}
        for digest in sorted(self.chunks):
            need = self.chunks[digest]
            facts = self.check_one_chunk(digest, need)
            if facts is None:
                continue
            for number, length in need.refs:
                expect = self.indexes[number].encrypted
                notes = per_index.setdefault(number, {})
                if expect is not None and expect != facts.encrypted:
                    notes.setdefault("crypt", {})[digest.hex()] = digest.hex()
                if facts.plain_len is not None and facts.plain_len != length:
                    notes.setdefault("length", {}).setdefault(
                        digest.hex(), f"{digest.hex()} is {facts.plain_len} bytes, range {length}")
        for number, notes in sorted(per_index.items()):
            ref = self.indexes[number]
            if "crypt" in notes:
                bad = list(notes["crypt"].values())
                state = "unencrypted" if ref.encrypted else "encrypted"
                self.error(ref.path, f"crypt-mode {ref.crypt_mode} but {len(bad)} referenced "
                                     f"chunks are {state} (first: {bad[0]})")
            if "length" in notes:
                bad = list(notes["length"].values())
                self.error(ref.path, f"{len(bad)} chunks differ in length from their index "
                                     f"range (first: {bad[0]})")

    def check_one_chunk(self, digest: bytes, need: _ChunkNeed) -> ChunkFacts | None:
        hexd = digest.hex()
        rel = f".chunks/{hexd[:4]}/{hexd}"
        users = sorted({self.indexes[n].path for n, _ in need.refs})
        where = users[0] + (f" and {len(users) - 1} more" if len(users) > 1 else "")
        self.counts["chunks_referenced"] += 1
        try:
            with open(self.abspath(rel), "rb") as handle:
                if os.fstat(handle.fileno()).st_size > MAX_BLOB_FILE:
                    self.error(rel, f"larger than any DataBlob (referenced by {where})")
                    return None
                raw = handle.read()
        except FileNotFoundError:
            self.error(rel, f"missing chunk (referenced by {where})")
            return None
        except OSError as exc:
            self.error(rel, f"cannot read chunk: {exc.strerror or exc} (referenced by {where})")
            return None
        limit = min(max(length for _, length in need.refs), MAX_BLOB_SIZE)
        try:
            facts = verify_chunk(raw, digest, key=self.key if need.use_key else None, limit=limit)
        except FormatProblem as exc:
            self.error(rel, f"{exc} (referenced by {where})")
            return None
        self.counts["chunks_verified" if facts.digest_checked else "chunks_crc_only"] += 1
        self.counts["chunk_bytes_read"] += len(raw)
        return facts


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def check(path: str | os.PathLike[str], *, keyfile_key: bytes | None = None,
          scan_chunk_dirs: bool = True) -> Report:
    """Check the datastore at `path`; `keyfile_key` is the 32-byte enc_key, if any.

    With `scan_chunk_dirs=False` the contents of the 65536 prefix directories are not listed:
    referenced chunks are still verified, but unreferenced files and odd names go unreported.
    """
    key = CryptKey(keyfile_key) if keyfile_key is not None else None
    return _Checker(os.fspath(path), key, scan_chunk_dirs).run()


def check_datastore(path: str | os.PathLike[str], *, keyfile_key: bytes | None = None,
                    scan_chunk_dirs: bool = True) -> list[str]:
    """The errors found in the datastore at `path` (empty list = it passes)."""
    return check(path, keyfile_key=keyfile_key, scan_chunk_dirs=scan_chunk_dirs).errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pbs_check", description="Check a PBS-format datastore against the format spec.")
    parser.add_argument("datastore", help="datastore directory")
    parser.add_argument("--key-hex", help="the 32-byte encryption key (enc_key) as hex")
    parser.add_argument("--no-chunk-scan", action="store_true",
                        help="do not list the prefix directories (skips counting unreferenced "
                             "chunk files and reporting odd names)")
    args = parser.parse_args(argv)
    key: bytes | None = None
    if args.key_hex is not None:
        try:
            key = bytes.fromhex(args.key_hex)
            CryptKey(key)
        except ValueError as exc:
            parser.error(f"--key-hex: {exc}")
    report = check(args.datastore, keyfile_key=key, scan_chunk_dirs=not args.no_chunk_scan)
    for line in report.errors:
        print(line)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"pbs_check: {report.summary()}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
