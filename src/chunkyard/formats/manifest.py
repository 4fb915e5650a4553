"""The snapshot manifest `index.json.blob` (spec §5): files, unprotected notes, signature.

Serialization mirrors PBS's serde output (2-space pretty JSON, field order of the Rust structs)
so a manifest we rewrite looks like one PBS rewrote; the signature covers the canonical JSON of
everything except `unprotected` and `signature`, so notes and verify state stay editable.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from chunkyard.errors import AlreadyExists, CryptError, FormatError, NotFound
from chunkyard.formats.blob import decode_blob, encode_blob, is_encrypted
from chunkyard.formats.crypt import CryptConfig, format_fingerprint

MANIFEST_BLOB_NAME = "index.json.blob"
CLIENT_LOG_BLOB_NAME = "client.log.blob"
BACKUP_TYPES = ("vm", "ct", "host")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_U64_MAX = 2**64 - 1


class CryptMode(enum.StrEnum):
    NONE = "none"
    ENCRYPT = "encrypt"
    SIGN_ONLY = "sign-only"


class IndexLike(Protocol):
    """What `index_file_info` needs from a fixed or dynamic index (§4.3 compute_csum)."""

    @property
    def size(self) -> int: ...

    def csum(self) -> bytes: ...


def _crypt_mode(value: object) -> CryptMode:
    if not isinstance(value, str):
        raise FormatError(f"manifest: crypt-mode {value!r} is not a string")
    try:
        return CryptMode(value)
    except ValueError:
        raise FormatError(f"manifest: unknown crypt-mode {value!r}") from None


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One archive listed in the manifest; `csum` is the raw 32-byte digest."""

    filename: str
    crypt_mode: str  # normalized to a CryptMode (a str enum); "none", "encrypt", "sign-only"
    size: int
    csum: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "crypt_mode", _crypt_mode(self.crypt_mode))
        if not isinstance(self.filename, str) or not self.filename:
            raise FormatError(f"manifest: file name {self.filename!r} is not a non-empty string")
        if not _is_int(self.size) or not 0 <= self.size <= _U64_MAX:
            raise FormatError(f"manifest: file {self.filename!r} has invalid size {self.size!r}")
        if not isinstance(self.csum, bytes) or len(self.csum) != 32:
            raise FormatError(f"manifest: file {self.filename!r} csum must be 32 bytes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "crypt-mode": str(self.crypt_mode),
            "size": self.size,
            "csum": self.csum.hex(),
        }

    @classmethod
    def for_blob(cls, filename: str, raw_blob: bytes, crypt_mode: str) -> FileInfo:
        return blob_file_info(filename, raw_blob, crypt_mode)

    @classmethod
    def for_index(cls, filename: str, index: IndexLike, crypt_mode: str) -> FileInfo:
        return index_file_info(filename, index, crypt_mode)

    @classmethod
    def from_dict(cls, obj: object) -> FileInfo:
        if not isinstance(obj, dict):
            raise FormatError("manifest: a files entry is not an object")
        name = obj.get("filename")
        if not isinstance(name, str):
            raise FormatError("manifest: a files entry has no string 'filename'")
        csum = obj.get("csum")
        if not isinstance(csum, str) or len(csum) != 64:
            raise FormatError(f"manifest: file {name!r} csum is not 64 hex digits")
        try:
            raw = bytes.fromhex(csum)
        except ValueError:
            raise FormatError(f"manifest: file {name!r} csum is not 64 hex digits") from None
        if "size" not in obj:
            raise FormatError(f"manifest: file {name!r} has no 'size'")
        return cls(name, _crypt_mode(obj.get("crypt-mode", "none")), obj["size"], raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _reject_null(value: Any, where: str) -> None:
    if value is None:
        raise FormatError(f"canonical JSON: null value at {where or 'top level'}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_null(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_null(v, f"{where}[{i}]")


def canonical_json(value: Any) -> bytes:
    """PBS canonical JSON: keys sorted, no whitespace, raw UTF-8; null is an error."""
    _reject_null(value, "")
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


@dataclass(slots=True)
class BackupManifest:
    """The manifest of one snapshot; `signature` is lowercase hex or None."""

    backup_type: str
    backup_id: str
    backup_time: int
    files: list[FileInfo] = field(default_factory=list)
    unprotected: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None

    # -- files -------------------------------------------------------------------------

    def file(self, name: str) -> FileInfo:
        for info in self.files:
            if info.filename == name:
                return info
        raise NotFound(f"manifest has no file {name!r}")

    def add_file(self, info: FileInfo) -> None:
        if any(f.filename == info.filename for f in self.files):
            raise AlreadyExists(f"manifest already lists {info.filename!r}")
        self.files.append(info)

    # -- JSON ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The serde order of PBS's struct; an unset signature is written as null, like PBS."""
        return {
            "backup-type": self.backup_type,
            "backup-id": self.backup_id,
            "backup-time": self.backup_time,
            "files": [f.to_dict() for f in self.files],
            "unprotected": self.unprotected,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> BackupManifest:
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise FormatError(f"manifest is not valid JSON: {e}") from None
        try:
            # serde_json rejects unpaired surrogate escapes; so do we, or re-encoding would fail.
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError("manifest contains an invalid unicode escape") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: object) -> BackupManifest:
        if not isinstance(obj, dict):
            raise FormatError("manifest: top level is not a JSON object")
        btype, bid, btime = obj.get("backup-type"), obj.get("backup-id"), obj.get("backup-time")
        if btype not in BACKUP_TYPES:
            raise FormatError(f"manifest: invalid backup-type {btype!r}")
        if not isinstance(bid, str) or not bid:
            raise FormatError(f"manifest: invalid backup-id {bid!r}")
        if not isinstance(btime, int) or isinstance(btime, bool) or not (
            _I64_MIN <= btime <= _I64_MAX
        ):
            raise FormatError(f"manifest: invalid backup-time {btime!r}")
        files = obj.get("files")
        if not isinstance(files, list):
            raise FormatError("manifest: 'files' is missing or not a list")
        unprotected = obj.get("unprotected")
        if unprotected is None:
            unprotected = {}
        if not isinstance(unprotected, dict):
            raise FormatError("manifest: 'unprotected' is not an object")
        signature = obj.get("signature")
        if signature is not None and not isinstance(signature, str):
            raise FormatError("manifest: 'signature' is not a string")
        return cls(
            str(btype), bid, btime, [FileInfo.from_dict(f) for f in files], unprotected, signature
        )

    # -- signature -----------------------------------------------------------------------

    def canonical_json(self) -> bytes:
        """The signed data: the manifest without `unprotected` and `signature` (§5)."""
        obj = self.to_dict()
        obj.pop("unprotected", None)
        obj.pop("signature", None)
        return canonical_json(obj)

    def compute_signature(self, crypt: CryptConfig) -> str:
        return crypt.sign(self.canonical_json()).hex()

    def sign(self, crypt: CryptConfig) -> None:
        """Set `signature` and `unprotected.key-fingerprint`, as the PBS client does."""
        self.signature = self.compute_signature(crypt)
        self.unprotected["key-fingerprint"] = crypt.fingerprint_str()

    def key_fingerprint(self) -> bytes | None:
        """The `unprotected.key-fingerprint` the client recorded (colons optional), if any."""
        value = self.unprotected.get("key-fingerprint")
        if value is None:
            return None
        text = value.replace(":", "") if isinstance(value, str) else ""
        try:
            fp = bytes.fromhex(text)
        except ValueError:
            fp = b""
        if len(fp) != 32:
            raise FormatError(f"manifest: key-fingerprint {value!r} is not 32 hex bytes")
        return fp

    def verify_signature(self, crypt: CryptConfig) -> None:
        """Raise CryptError unless the manifest is signed by `crypt`'s key.

        Unlike PBS's loader (which accepts an unsigned manifest), an absent signature is an
        error here: the caller asked for verification.
        """
        recorded = self.key_fingerprint()
        if recorded is not None and recorded != crypt.fingerprint():
            raise CryptError(
                f"wrong key: manifest was made with key {format_fingerprint(recorded[:8])}, "
                f"given key is {format_fingerprint(crypt.fingerprint()[:8])}"
            )
        if self.signature is None:
            raise CryptError("manifest is not signed")
        if not hmac.compare_digest(
            self.compute_signature(crypt).encode(), self.signature.encode("utf-8", "replace")
        ):
            raise CryptError("wrong signature in manifest")

    # -- blob ----------------------------------------------------------------------------

    def encode_blob(self) -> bytes:
        """A compressed, never encrypted DataBlob of the pretty JSON (what PBS writes)."""
        return encode_blob(self.to_json().encode("utf-8"), compress=True)

    @classmethod
    def decode_blob(cls, raw: bytes | bytearray | memoryview) -> BackupManifest:
        if is_encrypted(raw):
            raise FormatError("manifest blob is encrypted; manifests never are")
        return cls.from_json(decode_blob(raw))


def blob_file_info(filename: str, raw_blob: bytes, crypt_mode: str) -> FileInfo:
    """Manifest entry of a `.blob` archive: size and SHA-256 of the encoded bytes on disk."""
    return FileInfo(filename, _crypt_mode(crypt_mode), len(raw_blob),
                    hashlib.sha256(raw_blob).digest())


def index_file_info(filename: str, index: IndexLike, crypt_mode: str) -> FileInfo:
    """Manifest entry of a `.fidx`/`.didx`: the logical size and index csum (§4.3)."""
    return FileInfo(filename, _crypt_mode(crypt_mode), index.size, index.csum())
