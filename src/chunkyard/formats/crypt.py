"""PBS's `CryptConfig` (spec §3.2): AES-256-GCM with 16-byte IVs, keyed digests and signatures.

One 32-byte `enc_key` drives everything: the cipher key itself, and the derived `id_key` that
salts chunk digests (so equal plaintext under different keys never shares a chunk), signs
manifests and feeds the key fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from chunkyard.errors import CryptError

KEY_SIZE = 32
IV_SIZE = 16
TAG_SIZE = 16

#: SHA256(b"Proxmox Backup Encryption Key Fingerprint"), the fixed prefix of the fingerprint input.
FINGERPRINT_INPUT = hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest()

BytesLike = bytes | bytearray | memoryview


def random_iv() -> bytes:
    """A fresh 16-byte GCM nonce; PBS draws one per blob from the OS RNG."""
    return os.urandom(IV_SIZE)


def format_fingerprint(fp: bytes) -> str:
    """Colon-separated lowercase hex, the way PBS prints (and serializes) a `Fingerprint`."""
    return ":".join(f"{b:02x}" for b in fp)


def gcm_encrypt(key: bytes, data: BytesLike) -> tuple[bytes, bytes, bytes]:
    """AES-256-GCM as PBS uses it: random 16-byte IV, empty AAD, tag kept apart."""
    iv = random_iv()
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    ct = enc.update(data)
    enc.finalize()
    return iv, enc.tag, ct


def gcm_decrypt(key: bytes, iv: BytesLike, tag: BytesLike, ct: BytesLike) -> bytes:
    """Inverse of `gcm_encrypt`; CryptError when authentication fails."""
    if len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
        raise CryptError("encrypted data has a malformed IV or tag")
    dec = Cipher(algorithms.AES(key), modes.GCM(bytes(iv), bytes(tag))).decryptor()
    pt = dec.update(ct)
    try:
        dec.finalize()
    except InvalidTag:
        raise CryptError(
            "decryption failed: authentication tag mismatch (wrong key or corrupt data)"
        ) from None
    return pt


class CryptConfig:
    """Encryption and identity keys for one client key (immutable, thread-safe)."""

    __slots__ = ("_enc_key", "_fingerprint", "_id_key")

    def __init__(self, enc_key: bytes) -> None:
        if not isinstance(enc_key, bytes | bytearray) or len(enc_key) != KEY_SIZE:
            raise CryptError(f"encryption key must be {KEY_SIZE} bytes")
        self._enc_key = bytes(enc_key)
        self._id_key = hashlib.pbkdf2_hmac("sha256", self._enc_key, b"_id_key", 10, 32)
        self._fingerprint = hashlib.sha256(FINGERPRINT_INPUT + self._id_key).digest()

    @property
    def enc_key(self) -> bytes:
        return self._enc_key

    @property
    def id_key(self) -> bytes:
        return self._id_key

    def compute_digest(self, data: BytesLike) -> bytes:
        """Digest of an encrypted chunk: SHA256(plaintext || id_key) (spec §3.3)."""
        h = hashlib.sha256(data)
        h.update(self._id_key)
        return h.digest()

    def encrypt(self, data: BytesLike) -> tuple[bytes, bytes, bytes]:
        """Encrypt with a random 16-byte IV and empty AAD; returns (iv, tag, ciphertext)."""
        return gcm_encrypt(self._enc_key, data)

    def decrypt(self, iv: BytesLike, tag: BytesLike, ct: BytesLike) -> bytes:
        """Decrypt and authenticate; a wrong key or any flipped bit raises CryptError."""
        return gcm_decrypt(self._enc_key, iv, tag, ct)

    def fingerprint(self) -> bytes:
        """SHA256(FINGERPRINT_INPUT || id_key): identifies the key without revealing it."""
        return self._fingerprint

    def fingerprint_str(self) -> str:
        return format_fingerprint(self._fingerprint)

    def sign(self, data: BytesLike) -> bytes:
        """HMAC-SHA256 keyed with id_key (used for manifest signatures, spec §5)."""
        return hmac.new(self._id_key, data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"CryptConfig(fingerprint={self.fingerprint_str()[:23]})"
