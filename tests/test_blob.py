"""DataBlob (spec §3): magics, layout, CRC, compression rule, encryption, chunk digests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.errors import CryptError, FormatError
from chunkyard.formats import blob
from chunkyard.formats.blob import (
    MAX_BLOB_SIZE,
    BlobKind,
    blob_kind,
    decode_blob,
    decode_chunk,
    encode_blob,
    encode_chunk,
    is_compressed,
    is_encrypted,
    verify_crc,
)
from chunkyard.formats.crypt import CryptConfig

KEY = CryptConfig(bytes(range(32)))
COMPRESSIBLE = b"chunkyard " * 1000


def _raw(magic: bytes, payload: bytes) -> bytes:
    """A hand-built unencrypted blob with a correct CRC."""
    return struct.pack("<8sI", magic, zlib.crc32(payload)) + payload


def test_magics_are_the_spec_constants() -> None:
    spec = {
        "Proxmox Backup uncompressed blob v1.0": "42ab3807be8370a1",
        "Proxmox Backup zstd compressed blob v1.0": "31b958426fb6a37f",
        "Proxmox Backup encrypted blob v1.0": "7b6785be222d4cf0",
        "Proxmox Backup zstd compressed encrypted blob v1.0": "e6591bbf0bbfd80b",
    }
    for text, hexval in spec.items():
        assert hashlib.sha256(text.encode()).digest()[:8].hex() == hexval
    assert BlobKind.UNCOMPRESSED.magic.hex() == "42ab3807be8370a1"
    assert BlobKind.COMPRESSED.magic.hex() == "31b958426fb6a37f"
    assert BlobKind.ENCRYPTED.magic.hex() == "7b6785be222d4cf0"
    assert BlobKind.ENCRYPTED_COMPRESSED.magic.hex() == "e6591bbf0bbfd80b"
    assert list(BlobKind.UNCOMPRESSED.magic) == [66, 171, 56, 7, 190, 131, 112, 161]


def test_compressed_layout() -> None:
    raw = encode_blob(COMPRESSIBLE)
    magic, crc = struct.unpack_from("<8sI", raw)
    assert magic == BlobKind.COMPRESSED.magic and blob_kind(raw) is BlobKind.COMPRESSED
    assert crc == zlib.crc32(raw[12:])
    # One zstd frame with content size, readable by an independent decoder.
    assert zstandard.frame_content_size(raw[12:]) == len(COMPRESSIBLE)
    assert zstandard.ZstdDecompressor().decompress(raw[12:]) == COMPRESSIBLE
    assert decode_blob(raw) == COMPRESSIBLE
    assert is_compressed(raw) and not is_encrypted(raw)


def test_incompressible_data_is_stored_uncompressed() -> None:
    data = os.urandom(5000)
    raw = encode_blob(data)
    assert blob_kind(raw) is BlobKind.UNCOMPRESSED
    assert raw == struct.pack("<8sI", BlobKind.UNCOMPRESSED.magic, zlib.crc32(data)) + data
    assert blob_kind(encode_blob(COMPRESSIBLE, compress=False)) is BlobKind.UNCOMPRESSED


def test_encrypted_layout_crc_covers_only_ciphertext() -> None:
    raw = encode_blob(COMPRESSIBLE, crypt=KEY)
    magic, crc, iv, tag = struct.unpack_from("<8sI16s16s", raw)
    assert magic == BlobKind.ENCRYPTED_COMPRESSED.magic
    ct = raw[44:]
    assert crc == zlib.crc32(ct)
    frame = AESGCM(KEY.enc_key).decrypt(iv, ct + tag, None)
    assert zstandard.ZstdDecompressor().decompress(frame) == COMPRESSIBLE
    assert decode_blob(raw, crypt=KEY) == COMPRESSIBLE

    plain = os.urandom(300)
    raw = encode_blob(plain, crypt=KEY)
    assert blob_kind(raw) is BlobKind.ENCRYPTED and len(raw) == 44 + 300
    _, _, iv, tag = struct.unpack_from("<8sI16s16s", raw)
    assert AESGCM(KEY.enc_key).decrypt(iv, raw[44:] + tag, None) == plain
    # Changing the IV breaks decryption but not the CRC (it covers the ciphertext only).
    mangled = raw[:12] + bytes(16) + raw[28:]
    verify_crc(mangled)
    with pytest.raises(CryptError):
        decode_blob(mangled, crypt=KEY)


def test_encrypted_needs_right_key() -> None:
    raw = encode_blob(b"secret" * 100, crypt=KEY)
    with pytest.raises(CryptError, match="no key"):
        decode_blob(raw)
    with pytest.raises(CryptError):
        decode_blob(raw, crypt=CryptConfig(os.urandom(32)))


def test_crc_mismatch_names_both_values() -> None:
    raw = bytearray(encode_blob(COMPRESSIBLE))
    raw[-1] ^= 0xFF
    expected = struct.unpack_from("<I", raw, 8)[0]
    actual = zlib.crc32(bytes(raw[12:]))
    with pytest.raises(FormatError, match=f"{expected:08x}.*{actual:08x}"):
        decode_blob(bytes(raw))
    with pytest.raises(FormatError, match="CRC"):
        verify_crc(raw)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x42\xab\x38", b"x" * 12, BlobKind.ENCRYPTED.magic + b"\0" * 20],
)
def test_bad_headers(raw: bytes) -> None:
    with pytest.raises(FormatError):
        decode_blob(raw, crypt=KEY)


def test_frame_without_content_size_and_multiple_frames() -> None:
    cobj = zstandard.ZstdCompressor(level=1).compressobj()
    frame = cobj.compress(COMPRESSIBLE) + cobj.flush()
    assert zstandard.frame_content_size(frame) == -1
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(frame)  # why the decoder must stream
    assert decode_blob(_raw(BlobKind.COMPRESSED.magic, frame)) == COMPRESSIBLE
    # Concatenated frames decode as their concatenation (like zstd's stream decoder).
    two = zstandard.ZstdCompressor(level=1).compress(b"abc") + frame
    assert decode_blob(_raw(BlobKind.COMPRESSED.magic, two)) == b"abc" + COMPRESSIBLE
    with pytest.raises(FormatError, match="zstd"):
        decode_blob(_raw(BlobKind.COMPRESSED.magic, frame + b"garbage!"))


def _zero_frame(total: int, *, pledge: bool) -> bytes:
    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=total if pledge else -1)
    piece = bytes(1 << 20)
    parts = []
    left = total
    while left:
        n = min(left, len(piece))
        parts.append(cobj.compress(piece[:n]))
        left -= n
    parts.append(cobj.flush())
    return b"".join(parts)


@pytest.mark.parametrize("pledge", [True, False])
def test_zip_bomb_is_rejected(pledge: bool) -> None:
    frame = _zero_frame(MAX_BLOB_SIZE + 1, pledge=pledge)
    assert len(frame) < 100_000
    with pytest.raises(FormatError, match="more than"):
        decode_blob(_raw(BlobKind.COMPRESSED.magic, frame))


def test_encode_rejects_oversized_input() -> None:
    with pytest.raises(FormatError, match="exceeds"):
        encode_blob(memoryview(bytearray(MAX_BLOB_SIZE + 1)))


def test_accepts_buffer_types() -> None:
    for data in (bytearray(COMPRESSIBLE), memoryview(COMPRESSIBLE)):
        assert decode_blob(encode_blob(data)) == COMPRESSIBLE
        digest, raw = encode_chunk(data)
        assert digest == hashlib.sha256(COMPRESSIBLE).digest()
        assert decode_chunk(bytearray(raw), digest) == COMPRESSIBLE


def test_chunk_digest_rules() -> None:
    digest, raw = encode_chunk(COMPRESSIBLE)
    assert digest == hashlib.sha256(COMPRESSIBLE).digest()
    assert decode_chunk(raw, digest, expected_size=len(COMPRESSIBLE)) == COMPRESSIBLE

    edigest, eraw = encode_chunk(COMPRESSIBLE, KEY)
    assert edigest == hashlib.sha256(COMPRESSIBLE + KEY.id_key).digest()
    assert is_encrypted(eraw)
    assert decode_chunk(eraw, edigest, KEY) == COMPRESSIBLE
    # An unencrypted chunk read with a key still uses the plain digest (sign-only mode).
    assert decode_chunk(raw, digest, KEY) == COMPRESSIBLE

    wrong = hashlib.sha256(b"other").digest()
    with pytest.raises(FormatError, match=f"chunk {wrong.hex()} digest mismatch"):
        decode_chunk(raw, wrong)
    with pytest.raises(FormatError, match="digest mismatch"):
        decode_chunk(eraw, digest, KEY)
    with pytest.raises(FormatError, match="size mismatch"):
        decode_chunk(raw, digest, expected_size=len(COMPRESSIBLE) - 1)
    with pytest.raises(FormatError):
        encode_chunk(b"")


def test_parallel_encoding_matches_serial() -> None:
    inputs = [bytes([i]) * 200_000 + os.urandom(50_000) for i in range(12)]
    serial = [encode_chunk(d) for d in inputs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(encode_chunk, inputs))
        decoded = list(pool.map(lambda dr: decode_chunk(dr[1], dr[0]), parallel))
    assert parallel == serial
    assert decoded == inputs
    assert blob.ZSTD_LEVEL == 1


keys = st.binary(min_size=32, max_size=32).map(CryptConfig)
payloads = st.one_of(st.binary(max_size=3000), st.binary(max_size=40).map(lambda b: b * 50))


@settings(max_examples=150, deadline=None)
@given(data=payloads, compress=st.booleans(), key=st.none() | keys)
def test_round_trip_all_kinds(data: bytes, compress: bool, key: CryptConfig | None) -> None:
    raw = encode_blob(data, compress=compress, crypt=key)
    kind = blob_kind(raw)
    assert kind.encrypted == (key is not None)
    if kind.compressed:
        assert compress
    assert decode_blob(raw, crypt=key) == data
    if data:
        digest, raw = encode_chunk(data, key)
        assert decode_chunk(raw, digest, key, expected_size=len(data)) == data


def _with_crc(kind: BlobKind, body: bytes) -> bytes:
    """Header with a correct CRC so the decoder gets past the CRC to zstd / AES."""
    if kind.encrypted:
        iv_tag, ct = body[:32].ljust(32, b"\0"), body[32:]
        return struct.pack("<8sI", kind.magic, zlib.crc32(ct)) + iv_tag + ct
    return _raw(kind.magic, body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.builds(_with_crc, st.sampled_from(list(BlobKind)), st.binary(max_size=200)),
        st.builds(
            lambda b, cut: b[:cut],
            st.binary(min_size=1, max_size=500).map(lambda d: encode_blob(d * 3)),
            st.integers(0, 600),
        ),
    ),
    key=st.none() | st.just(KEY),
)
def test_arbitrary_bytes_only_raise_format_error(raw: bytes, key: CryptConfig | None) -> None:
    with contextlib.suppress(FormatError):
        decode_blob(raw, crypt=key)
    with contextlib.suppress(FormatError):
        decode_chunk(raw, bytes(32), key)
