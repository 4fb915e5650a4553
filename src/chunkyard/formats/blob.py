"""DataBlob encoding (spec §3): the container of every chunk file and `.blob` archive.

Layout: `magic[8] | crc32 LE[4] | payload` (unencrypted) or
`magic[8] | crc32 LE[4] | iv[16] | tag[16] | ciphertext` (encrypted); the CRC covers everything
after the header, i.e. only the ciphertext for encrypted blobs.

Chunks are up to 16 MiB and are encoded on several threads at once: zstd, hashlib and zlib.crc32
release the GIL, so each thread gets its own (non-thread-safe) zstd context via threading.local.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import threading
import zlib

import zstandard

from chunkyard.errors import CryptError, FormatError
from chunkyard.formats.crypt import BytesLike, CryptConfig

MAX_BLOB_SIZE = 128 * 1024 * 1024
"""Largest plaintext PBS's `DataBlob::encode` accepts; also our cap on decompressed output."""

ZSTD_LEVEL = 1

_HEADER = struct.Struct("<8sI")
_ENC_HEADER = struct.Struct("<8sI16s16s")
HEADER_SIZE = _HEADER.size  # 12
ENC_HEADER_SIZE = _ENC_HEADER.size  # 44


def _magic(text: str) -> bytes:
    return hashlib.sha256(text.encode("ascii")).digest()[:8]


UNCOMPRESSED_BLOB_MAGIC_1_0 = _magic("Proxmox Backup uncompressed blob v1.0")
COMPRESSED_BLOB_MAGIC_1_0 = _magic("Proxmox Backup zstd compressed blob v1.0")
ENCRYPTED_BLOB_MAGIC_1_0 = _magic("Proxmox Backup encrypted blob v1.0")
ENCR_COMPR_BLOB_MAGIC_1_0 = _magic("Proxmox Backup zstd compressed encrypted blob v1.0")


class BlobKind(enum.Enum):
    """The four DataBlob variants, valued by their magic."""

    UNCOMPRESSED = UNCOMPRESSED_BLOB_MAGIC_1_0
    COMPRESSED = COMPRESSED_BLOB_MAGIC_1_0
    ENCRYPTED = ENCRYPTED_BLOB_MAGIC_1_0
    ENCRYPTED_COMPRESSED = ENCR_COMPR_BLOB_MAGIC_1_0

    @property
    def magic(self) -> bytes:
        value: bytes = self.value
        return value

    @property
    def encrypted(self) -> bool:
        return self in (BlobKind.ENCRYPTED, BlobKind.ENCRYPTED_COMPRESSED)

    @property
    def compressed(self) -> bool:
        return self in (BlobKind.COMPRESSED, BlobKind.ENCRYPTED_COMPRESSED)

    @property
    def header_size(self) -> int:
        return ENC_HEADER_SIZE if self.encrypted else HEADER_SIZE

    @classmethod
    def select(cls, *, compressed: bool, encrypted: bool) -> BlobKind:
        if encrypted:
            return cls.ENCRYPTED_COMPRESSED if compressed else cls.ENCRYPTED
        return cls.COMPRESSED if compressed else cls.UNCOMPRESSED


_BY_MAGIC = {k.magic: k for k in BlobKind}

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _local.cctx = c
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _local.dctx = d
    return d


def _compress(data: BytesLike) -> bytes | None:
    """zstd level 1, or None when it does not pay off (PBS uses it only if len <= input)."""
    out: bytes = _compressor().compress(data)
    return out if len(out) <= len(data) else None


def _decompress(payload: BytesLike) -> bytes:
    """Decompress one or more zstd frames, with or without content size, capped at MAX_BLOB_SIZE.

    PBS-old wrote frames without a content size, which plain `ZstdDecompressor.decompress`
    rejects; a stream reader handles both and lets us stop a zip bomb at the cap.
    """
    try:
        declared = zstandard.frame_content_size(payload)
        if declared > MAX_BLOB_SIZE:
            raise FormatError(
                f"blob declares {declared} decompressed bytes, more than {MAX_BLOB_SIZE}"
            )
        first = declared + 1 if declared >= 0 else MAX_BLOB_SIZE + 1
        reader = _decompressor().stream_reader(payload, read_across_frames=True)
        with reader:
            out: bytes = reader.read(first)
            # Usually at EOF now; a further frame (never written by PBS, but its decoder
            # concatenates frames) or trailing garbage shows up here.
            if len(out) <= MAX_BLOB_SIZE and (extra := reader.read(1)):
                out = b"".join((out, extra, reader.read(MAX_BLOB_SIZE - len(out))))
    except zstandard.ZstdError as e:
        raise FormatError(f"blob has a corrupt zstd payload: {e}") from None
    if len(out) > MAX_BLOB_SIZE:
        raise FormatError(f"blob decompresses to more than {MAX_BLOB_SIZE} bytes")
    return out


def _crc(data: BytesLike) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_blob(
    data: BytesLike, *, compress: bool = True, crypt: CryptConfig | None = None
) -> bytes:
    """Encode `data` as a DataBlob: compressed if that is not larger, encrypted if `crypt`."""
    size = len(data)
    if size > MAX_BLOB_SIZE:
        raise FormatError(f"blob data of {size} bytes exceeds the limit of {MAX_BLOB_SIZE}")
    payload: BytesLike = data
    compressed = False
    if compress:
        z = _compress(data)
        if z is not None:
            payload, compressed = z, True
    kind = BlobKind.select(compressed=compressed, encrypted=crypt is not None)
    if crypt is None:
        return b"".join((_HEADER.pack(kind.magic, _crc(payload)), payload))
    iv, tag, ct = crypt.encrypt(payload)
    return b"".join((_ENC_HEADER.pack(kind.magic, _crc(ct), iv, tag), ct))


def blob_kind(raw: BytesLike) -> BlobKind:
    """The kind named by the magic; FormatError for an unknown magic or a short header."""
    if len(raw) < HEADER_SIZE:
        raise FormatError(f"blob too small: {len(raw)} bytes, header needs {HEADER_SIZE}")
    kind = _BY_MAGIC.get(bytes(raw[:8]))
    if kind is None:
        raise FormatError(f"blob has an unknown magic {bytes(raw[:8]).hex()}")
    if len(raw) < kind.header_size:
        raise FormatError(
            f"encrypted blob too small: {len(raw)} bytes, header needs {kind.header_size}"
        )
    return kind


def is_encrypted(raw: BytesLike) -> bool:
    return blob_kind(raw).encrypted


def is_compressed(raw: BytesLike) -> bool:
    return blob_kind(raw).compressed


def stored_crc(raw: BytesLike) -> int:
    """The CRC the header claims (does not check it)."""
    blob_kind(raw)
    crc: int = _HEADER.unpack_from(raw)[1]
    return crc


def compute_crc(raw: BytesLike) -> int:
    """The CRC over the part the header CRC covers (payload, or ciphertext only)."""
    kind = blob_kind(raw)
    return _crc(memoryview(raw)[kind.header_size :])


def verify_crc(raw: BytesLike) -> None:
    """Raise FormatError unless the header CRC matches the data (what PBS checks on load)."""
    expected, actual = stored_crc(raw), compute_crc(raw)
    if expected != actual:
        raise FormatError(f"blob CRC mismatch: header says {expected:08x}, data has {actual:08x}")


def decode_blob(raw: BytesLike, *, crypt: CryptConfig | None = None) -> bytes:
    """Check magic and CRC, then decrypt and decompress; returns the plaintext."""
    kind = blob_kind(raw)
    verify_crc(raw)
    view = memoryview(raw)
    if kind.encrypted:
        if crypt is None:
            raise CryptError("blob is encrypted, but no key was given")
        _, _, iv, tag = _ENC_HEADER.unpack_from(view)
        payload: BytesLike = crypt.decrypt(iv, tag, view[ENC_HEADER_SIZE:])
    else:
        payload = view[HEADER_SIZE:]
    if kind.compressed:
        return _decompress(payload)
    if len(payload) > MAX_BLOB_SIZE:
        raise FormatError(f"blob holds {len(payload)} bytes, more than {MAX_BLOB_SIZE}")
    return payload if isinstance(payload, bytes) else bytes(payload)


def chunk_digest(data: BytesLike, crypt: CryptConfig | None = None) -> bytes:
    """The chunk identity of §3.3: SHA256(data), or SHA256(data || id_key) when encrypting."""
    if crypt is None:
        return hashlib.sha256(data).digest()
    return crypt.compute_digest(data)


def encode_chunk(
    data: BytesLike, crypt: CryptConfig | None = None, *, compress: bool = True
) -> tuple[bytes, bytes]:
    """Digest and encode one chunk; returns (digest, encoded blob)."""
    if not data:
        raise FormatError("chunk data must not be empty")
    return chunk_digest(data, crypt), encode_blob(data, compress=compress, crypt=crypt)


def decode_chunk(
    raw: BytesLike,
    digest: bytes,
    crypt: CryptConfig | None = None,
    expected_size: int | None = None,
) -> bytes:
    """Decode a chunk and check that its plaintext has `digest` (and `expected_size`)."""
    kind = blob_kind(raw)
    data = decode_blob(raw, crypt=crypt)
    if expected_size is not None and len(data) != expected_size:
        raise FormatError(
            f"chunk {digest.hex()} size mismatch: expected {expected_size}, got {len(data)}"
        )
    actual = chunk_digest(data, crypt if kind.encrypted else None)
    if actual != digest:
        raise FormatError(f"chunk {digest.hex()} digest mismatch: data hashes to {actual.hex()}")
    return data
