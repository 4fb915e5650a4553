"""PBS client key files (pbs-key-config `KeyConfig`): create, load, refuse bad input."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chunkyard.errors import AlreadyExists, CryptError, NotFound
from chunkyard.formats.crypt import CryptConfig
from chunkyard.formats.keyfile import (
    KeyConfig,
    create_key_file,
    epoch_to_local_rfc3339,
    load_key_file,
    read_key_config,
)


def test_scrypt_key_file_format(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    crypt = create_key_file(path, b"secret password")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "\n" not in text and ", " not in text  # serde_json::to_string: compact
    doc = json.loads(text)
    assert list(doc) == ["kdf", "created", "modified", "data", "fingerprint"]
    params = doc["kdf"]["Scrypt"]
    assert (params["n"], params["r"], params["p"]) == (65536, 8, 1)
    salt = base64.b64decode(params["salt"])
    assert len(salt) == 32
    assert doc["fingerprint"] == crypt.fingerprint_str()
    created = dt.datetime.fromisoformat(doc["created"])
    assert created.tzinfo is not None and doc["created"][-6] in "+-"
    assert abs(created.timestamp() - dt.datetime.now().timestamp()) < 60
    # Independent unsealing: scrypt-derived key, AES-256-GCM, data = iv | tag | ct.
    data = base64.b64decode(doc["data"])
    assert len(data) == 64
    derived = hashlib.scrypt(b"secret password", salt=salt, n=65536, r=8, p=1, dklen=32,
                             maxmem=2**27)
    key = AESGCM(derived).decrypt(data[:16], data[32:] + data[16:32], None)
    assert key == crypt.enc_key

    loaded = load_key_file(path, b"secret password")
    assert loaded.enc_key == crypt.enc_key
    with pytest.raises(CryptError, match="wrong password"):
        load_key_file(path, b"wrong password")
    with pytest.raises(CryptError, match="no password"):
        load_key_file(path)
    with pytest.raises(CryptError, match="too short"):
        load_key_file(path, b"abc")


def test_plain_and_pbkdf2_key_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    crypt = create_key_file(plain)
    doc = json.loads(plain.read_text())
    assert doc["kdf"] is None and base64.b64decode(doc["data"]) == crypt.enc_key
    assert load_key_file(plain).fingerprint() == crypt.fingerprint()
    assert read_key_config(plain).fingerprint_str == crypt.fingerprint_str()

    pb = tmp_path / "pbkdf2"
    crypt = create_key_file(pb, b"hunter22", kdf="pbkdf2")
    doc = json.loads(pb.read_text())
    assert doc["kdf"]["PBKDF2"]["iter"] == 65535
    assert load_key_file(pb, b"hunter22").enc_key == crypt.enc_key

    with pytest.raises(CryptError):
        create_key_file(tmp_path / "x", None, kdf="scrypt")
    with pytest.raises(CryptError):
        create_key_file(tmp_path / "y", b"password", kdf="none")
    with pytest.raises(CryptError):
        create_key_file(tmp_path / "z", b"password", kdf="argon2")
    assert not any((tmp_path / n).exists() for n in "xyz")


def test_refuses_overwrite_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("precious")
    with pytest.raises(AlreadyExists):
        create_key_file(path)
    assert path.read_text() == "precious"
    with pytest.raises(NotFound):
        load_key_file(tmp_path / "absent")


def _pbs_style_plain(key: bytes, **extra: object) -> str:
    doc: dict[str, object] = {
        "kdf": None,
        "created": "2024-05-07T16:25:51+02:00",
        "modified": "2024-05-07T14:25:51Z",
        "data": base64.b64encode(key).decode(),
        "fingerprint": CryptConfig(key).fingerprint_str(),
    }
    doc.update(extra)
    return json.dumps(doc)


def test_reads_hand_written_pbs_style_file(tmp_path: Path) -> None:
    key = bytes(range(32))
    path = tmp_path / "pbs.key"
    path.write_text(_pbs_style_plain(key, hint="the usual"))
    config = read_key_config(path)
    assert config.created == config.modified == 1715091951
    assert config.hint == "the usual"
    assert load_key_file(path).enc_key == key
    # Re-serialization keeps the serde field order, with `hint` last.
    assert list(json.loads(config.to_json())) == [
        "kdf", "created", "modified", "data", "fingerprint", "hint"]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        _pbs_style_plain(bytes(32), data="!!notbase64"),
        _pbs_style_plain(bytes(32), data=base64.b64encode(bytes(31)).decode()),
        _pbs_style_plain(bytes(32), fingerprint="00:11"),
        _pbs_style_plain(bytes(32), fingerprint=CryptConfig(bytes(range(32))).fingerprint_str()),
        _pbs_style_plain(bytes(32), created=5),
        _pbs_style_plain(bytes(32), created="yesterday"),
        _pbs_style_plain(bytes(32), kdf={"Argon2": {}}),
        _pbs_style_plain(bytes(32), kdf={"Scrypt": {"n": 3, "r": 8, "p": 1, "salt": ""}}),
        _pbs_style_plain(bytes(32), kdf={"PBKDF2": {"iter": -1, "salt": ""}}),
        _pbs_style_plain(bytes(32), kdf={"PBKDF2": {"iter": 1, "salt": ""}}),
    ],
)
def test_corrupt_files_raise_crypt_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(CryptError):
        load_key_file(path, b"password")


def test_tampered_sealed_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    create_key_file(path, b"password", kdf="pbkdf2")
    doc = json.loads(path.read_text())
    data = bytearray(base64.b64decode(doc["data"]))
    data[40] ^= 1
    doc["data"] = base64.b64encode(bytes(data)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(CryptError):
        load_key_file(path, b"password")


def test_local_rfc3339_format() -> None:
    text = epoch_to_local_rfc3339(1715091951)
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.timestamp() == 1715091951
    assert len(text) == 25 and text[10] == "T" and text[-6] in "+-"
    assert KeyConfig.from_json(_pbs_style_plain(bytes(32))).decrypt().enc_key == bytes(32)
