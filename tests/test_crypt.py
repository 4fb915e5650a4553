"""CryptConfig (spec §3.2): id_key, keyed digest, AES-256-GCM with 16-byte IVs, fingerprint."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.errors import CryptError, FormatError
from chunkyard.formats.crypt import FINGERPRINT_INPUT, CryptConfig, format_fingerprint

# §12: the key of upstream's test_manifest_signature.
SPEC_KEY = hashlib.scrypt(b"test", salt=b"", n=65536, r=8, p=1, dklen=32, maxmem=2**27)
SPEC_FINGERPRINT = (
    "12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:"
    "2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25"
)


def test_fingerprint_input_constant() -> None:
    assert FINGERPRINT_INPUT.hex() == (
        "6ed0ef77471fff4d55c7a8fe4a9db62161407f134c725ddf30992d25ec45ed26"
    )


def test_spec_key_fingerprint_vector() -> None:
    c = CryptConfig(SPEC_KEY)
    assert c.fingerprint_str() == SPEC_FINGERPRINT
    assert c.fingerprint() == bytes.fromhex(SPEC_FINGERPRINT.replace(":", ""))
    assert format_fingerprint(c.fingerprint()[:8]) == "12:b9:b7:74:bb:3d:89:95"


def test_id_key_and_digest_and_sign() -> None:
    c = CryptConfig(SPEC_KEY)
    id_key = hashlib.pbkdf2_hmac("sha256", SPEC_KEY, b"_id_key", 10, 32)
    assert c.id_key == id_key
    assert c.compute_digest(b"hello") == hashlib.sha256(b"hello" + id_key).digest()
    assert c.compute_digest(b"hello") != hashlib.sha256(b"hello").digest()
    assert c.sign(b"data") == hmac.new(id_key, b"data", hashlib.sha256).digest()
    assert c.fingerprint() == hashlib.sha256(FINGERPRINT_INPUT + id_key).digest()


@pytest.mark.parametrize("key", [b"", b"x" * 31, b"x" * 33])
def test_bad_key_length(key: bytes) -> None:
    with pytest.raises(CryptError, match="32 bytes"):
        CryptConfig(key)


def test_encrypt_matches_independent_gcm_with_16_byte_iv() -> None:
    c = CryptConfig(SPEC_KEY)
    iv, tag, ct = c.encrypt(b"plain text" * 10)
    assert len(iv) == 16 and len(tag) == 16 and len(ct) == 100
    # cryptography's one-shot AEAD API returns ct||tag for the same nonce and key.
    assert AESGCM(SPEC_KEY).decrypt(iv, ct + tag, None) == b"plain text" * 10
    assert c.decrypt(iv, tag, ct) == b"plain text" * 10


def test_iv_is_random() -> None:
    c = CryptConfig(os.urandom(32))
    a, b = c.encrypt(b"same"), c.encrypt(b"same")
    assert a[0] != b[0] and a[2] != b[2]


def test_tamper_and_wrong_key_raise_crypt_error() -> None:
    c = CryptConfig(os.urandom(32))
    iv, tag, ct = c.encrypt(b"secret data")
    bad = bytes([ct[0] ^ 1]) + ct[1:]
    with pytest.raises(CryptError, match="authentication"):
        c.decrypt(iv, tag, bad)
    with pytest.raises(CryptError):
        CryptConfig(os.urandom(32)).decrypt(iv, tag, ct)
    with pytest.raises(CryptError):
        c.decrypt(iv[:12], tag, ct)
    assert issubclass(CryptError, FormatError)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), data=st.binary(max_size=2048))
def test_round_trip(key: bytes, data: bytes) -> None:
    c = CryptConfig(key)
    assert c.decrypt(*c.encrypt(data)) == data
