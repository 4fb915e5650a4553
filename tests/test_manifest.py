"""The manifest `index.json.blob` (spec §5) and the §12 signature vector."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.errors import AlreadyExists, CryptError, FormatError, NotFound
from chunkyard.formats.blob import BlobKind, blob_kind, encode_blob
from chunkyard.formats.crypt import CryptConfig
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.manifest import (
    BackupManifest,
    CryptMode,
    FileInfo,
    blob_file_info,
    canonical_json,
    index_file_info,
)
from tests.helpers import PBS_DIDX

SPEC_KEY = hashlib.scrypt(b"test", salt=b"", n=65536, r=8, p=1, dklen=32, maxmem=2**27)
SPEC_SIGNATURE = "d7b446fb7db081662081d4b40fedd858a1d6307a5aff4ecff7d5bf4fd35679e9"
SPEC_CANONICAL = (
    '{"backup-id":"elsa","backup-time":1593179765,"backup-type":"host","files":['
    '{"crypt-mode":"encrypt","csum":"' + "01" * 32 + '","filename":"test1.img.fidx","size":200},'
    '{"crypt-mode":"none","csum":"' + "02" * 32 + '","filename":"abc.blob","size":200}]}'
)


@pytest.fixture(scope="module")
def spec_crypt() -> CryptConfig:
    return CryptConfig(SPEC_KEY)


def spec_manifest() -> BackupManifest:
    m = BackupManifest("host", "elsa", 1593179765)
    m.add_file(FileInfo("test1.img.fidx", "encrypt", 200, b"\1" * 32))
    m.add_file(FileInfo("abc.blob", CryptMode.NONE, 200, b"\2" * 32))
    m.unprotected["note"] = "This is not protected by the signature."
    return m


def test_signature_vector(spec_crypt: CryptConfig) -> None:
    m = spec_manifest()
    assert m.canonical_json() == SPEC_CANONICAL.encode()
    m.sign(spec_crypt)
    assert m.signature == SPEC_SIGNATURE
    assert m.unprotected["key-fingerprint"] == spec_crypt.fingerprint_str()
    m.verify_signature(spec_crypt)
    # The signature survives a JSON round trip and edits of `unprotected`.
    again = BackupManifest.from_json(m.to_json())
    again.unprotected["notes"] = "edited"
    again.unprotected["verify_state"] = {"upid": "UPID:x", "state": "ok"}
    again.verify_signature(spec_crypt)


def test_signature_failures(spec_crypt: CryptConfig) -> None:
    m = spec_manifest()
    with pytest.raises(CryptError, match="not signed"):
        m.verify_signature(spec_crypt)
    m.sign(spec_crypt)
    other = CryptConfig(bytes(32))
    with pytest.raises(CryptError, match="wrong key"):
        m.verify_signature(other)
    del m.unprotected["key-fingerprint"]
    with pytest.raises(CryptError, match="wrong signature"):
        m.verify_signature(other)
    tampered = BackupManifest.from_json(m.to_json().replace('"size": 200', '"size": 201', 1))
    with pytest.raises(CryptError, match="wrong signature"):
        tampered.verify_signature(spec_crypt)


def test_pretty_json_matches_serde_layout() -> None:
    m = BackupManifest("vm", "100", 1718000000)
    m.add_file(FileInfo("qemu-server.conf.blob", "none", 452, bytes(range(32))))
    m.unprotected["chunk_upload_stats"] = {"count": 0, "size": 0}
    expected = (
        "{\n"
        '  "backup-type": "vm",\n'
        '  "backup-id": "100",\n'
        '  "backup-time": 1718000000,\n'
        '  "files": [\n'
        "    {\n"
        '      "filename": "qemu-server.conf.blob",\n'
        '      "crypt-mode": "none",\n'
        '      "size": 452,\n'
        f'      "csum": "{bytes(range(32)).hex()}"\n'
        "    }\n"
        "  ],\n"
        '  "unprotected": {\n'
        '    "chunk_upload_stats": {\n'
        '      "count": 0,\n'
        '      "size": 0\n'
        "    }\n"
        "  },\n"
        '  "signature": null\n'
        "}"
    )
    assert m.to_json() == expected
    empty = BackupManifest("ct", "1", 0).to_json()
    assert '"files": [],' in empty and '"unprotected": {},' in empty


def test_from_json_defaults_and_types() -> None:
    doc: dict[str, Any] = {
        "backup-type": "host", "backup-id": "h1", "backup-time": 5,
        "files": [{"filename": "a.blob", "size": 3, "csum": "AB" * 32}],
    }
    m = BackupManifest.from_json(json.dumps(doc))
    assert m.files[0].crypt_mode == "none" and m.files[0].crypt_mode is CryptMode.NONE
    assert m.files[0].csum == b"\xab" * 32
    assert m.unprotected == {} and m.signature is None
    assert m.file("a.blob").size == 3
    with pytest.raises(NotFound, match=r"b\.blob"):
        m.file("b.blob")
    with pytest.raises(AlreadyExists):
        m.add_file(FileInfo("a.blob", "none", 1, bytes(32)))


def _bad(**changes: Any) -> str:
    doc: dict[str, Any] = {
        "backup-type": "host", "backup-id": "h1", "backup-time": 5,
        "files": [{"filename": "a.blob", "crypt-mode": "none", "size": 3, "csum": "00" * 32}],
    }
    for key, value in changes.items():
        key = key.replace("_", "-")
        if key.startswith("file-"):
            doc["files"][0][key[5:]] = value
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    "text",
    [
        _bad(file_csum="zz" * 32),
        _bad(file_csum="00" * 31),
        _bad(file_csum=5),
        _bad(file_size="3"),
        _bad(file_size=True),
        _bad(file_size=-1),
        _bad(file_crypt_mode="aes"),
        _bad(file_crypt_mode=None),
        _bad(file_filename=7),
        _bad(backup_type="lxc"),
        _bad(backup_id=3),
        _bad(backup_time="5"),
        _bad(backup_time=1.5),
        _bad(files={}),
        _bad(unprotected=[]),
        _bad(signature=5),
        "[]",
        "{",
        '{"backup-time": NaN}',
        '"\\ud800"',
        "",
    ],
)
def test_from_json_rejects(text: str) -> None:
    with pytest.raises(FormatError):
        BackupManifest.from_json(text)


def test_canonical_json_rules() -> None:
    assert canonical_json({"b": 1, "a": ["ü", {"d": 2, "c": 3}]}) == (
        '{"a":["ü",{"c":3,"d":2}],"b":1}'.encode()
    )
    with pytest.raises(FormatError, match="null"):
        canonical_json({"a": [1, None]})


def test_blob_round_trip_and_refusals(spec_crypt: CryptConfig) -> None:
    m = spec_manifest()
    m.sign(spec_crypt)
    raw = m.encode_blob()
    assert blob_kind(raw) is BlobKind.COMPRESSED
    assert BackupManifest.decode_blob(raw) == m
    with pytest.raises(FormatError, match="encrypted"):
        BackupManifest.decode_blob(encode_blob(m.to_json().encode(), crypt=spec_crypt))
    with pytest.raises(FormatError):
        BackupManifest.decode_blob(encode_blob(b"\xff\xfe not json"))


def test_file_info_helpers() -> None:
    raw = encode_blob(b"config data" * 10)
    info = blob_file_info("qemu-server.conf.blob", raw, "none")
    assert info.size == len(raw) and info.csum == hashlib.sha256(raw).digest()
    assert FileInfo.for_blob("x.blob", raw, "sign-only").crypt_mode == "sign-only"
    didx = DynamicIndex.decode(
        PBS_DIDX.read_bytes()
    )
    info = index_file_info("data.ppxar.didx", didx, CryptMode.ENCRYPT)
    assert info.size == 104859232
    assert info.csum.hex() == "e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20"
    with pytest.raises(FormatError):
        FileInfo("x", "bogus", 1, bytes(32))
    with pytest.raises(FormatError):
        FileInfo("x", "none", 1, bytes(31))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3),
    max_leaves=10,
)
file_infos = st.builds(
    FileInfo,
    filename=st.text(min_size=1, max_size=20),
    crypt_mode=st.sampled_from(["none", "encrypt", "sign-only"]),
    size=st.integers(0, 2**64 - 1),
    csum=st.binary(min_size=32, max_size=32),
)


@settings(max_examples=100, deadline=None)
@given(
    btype=st.sampled_from(["vm", "ct", "host"]),
    bid=st.text(min_size=1, max_size=10),
    btime=st.integers(0, 2**40),
    files=st.lists(file_infos, max_size=4),
    unprotected=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    sign=st.booleans(),
)
def test_manifest_round_trip(btype: str, bid: str, btime: int, files: list[FileInfo],
                             unprotected: dict[str, Any], sign: bool) -> None:
    m = BackupManifest(btype, bid, btime, files, unprotected)
    key = CryptConfig(bytes(range(32)))
    if sign:
        m.sign(key)
    back = BackupManifest.decode_blob(m.encode_blob())
    assert back == m
    assert back.to_json() == m.to_json()
    if sign:
        back.verify_signature(key)


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=100),
        json_values.map(json.dumps),
        st.dictionaries(
            st.sampled_from(["backup-type", "backup-id", "backup-time", "files",
                             "unprotected", "signature"]),
            json_values,
        ).map(json.dumps),
    )
)
def test_arbitrary_input_only_raises_format_error(text: str) -> None:
    with contextlib.suppress(FormatError):
        BackupManifest.from_json(text)
