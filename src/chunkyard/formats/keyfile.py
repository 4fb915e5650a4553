"""PBS client key files (`proxmox-backup-client key create`), JSON `KeyConfig` of pbs-key-config.

The file is compact JSON in serde field order:
`{"kdf": ..., "created": ..., "modified": ..., "data": <base64>, "fingerprint": ..., "hint": ...}`

- `kdf` is null (plain key) or `{"Scrypt": {"n", "r", "p", "salt"}}` / `{"PBKDF2": {"iter",
  "salt"}}` (salt base64). PBS creates scrypt n=65536 r=8 p=1 or PBKDF2-HMAC-SHA256 65535
  iterations, each with a 32-byte random salt, deriving a 32-byte key from the passphrase.
- `data` is the raw 32-byte key without a kdf; with one it is `iv[16] | tag[16] | ct[32]`, the
  key sealed with AES-256-GCM (16-byte IV, empty AAD) under the derived key.
- `created`/`modified` are RFC 3339 in local time with a `+HH:MM` offset.
- `fingerprint` is the §3.2 key fingerprint, 32 bytes in colon hex; `hint` is optional.

This follows the upstream source (pbs-key-config/src/lib.rs, pbs-api-types crypto.rs,
proxmox-serde); it has not been checked against a key file written by a real PBS client.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkyard.errors import AlreadyExists, CryptError, NotFound
from chunkyard.formats.crypt import (
    IV_SIZE,
    KEY_SIZE,
    TAG_SIZE,
    CryptConfig,
    format_fingerprint,
    gcm_decrypt,
    gcm_encrypt,
)

SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
PBKDF2_ITER = 65535
SALT_SIZE = 32
MIN_PASSWORD_LEN = 5
_SCRYPT_MAXMEM = 1025 * 1024 * 1024  # the limit PBS passes to OpenSSL
KDF_NAMES = ("scrypt", "pbkdf2", "none")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise CryptError(f"key file: {what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CryptError(f"key file: {what} is not valid base64") from None


def epoch_to_local_rfc3339(epoch: int) -> str:
    """proxmox_time::epoch_to_rfc3339: local time with a `+HH:MM` offset."""
    local = dt.datetime.fromtimestamp(epoch).astimezone()
    delta = local.utcoffset()
    offset = int(delta.total_seconds()) if delta is not None else 0
    sign = "-" if offset < 0 else "+"
    minutes = abs(offset) // 60
    return f"{local:%Y-%m-%dT%H:%M:%S}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_time(value: object, what: str) -> int:
    if not isinstance(value, str):
        raise CryptError(f"key file: {what} is not an RFC 3339 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CryptError(f"key file: {what} {value!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise CryptError(f"key file: {what} {value!r} has no time zone")
    return int(parsed.timestamp())


@dataclass(frozen=True, slots=True)
class Kdf:
    """Key derivation parameters: `name` is "scrypt" or "pbkdf2"."""

    name: str
    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    iterations: int = PBKDF2_ITER

    @classmethod
    def new(cls, name: str) -> Kdf:
        if name not in ("scrypt", "pbkdf2"):
            raise CryptError(f"unknown key derivation function {name!r}")
        return cls(name, os.urandom(SALT_SIZE))

    def derive(self, password: bytes) -> bytes:
        try:
            if self.name == "scrypt":
                return hashlib.scrypt(
                    password, salt=self.salt, n=self.n, r=self.r, p=self.p,
                    maxmem=_SCRYPT_MAXMEM, dklen=KEY_SIZE,
                )
            return hashlib.pbkdf2_hmac("sha256", password, self.salt, self.iterations, KEY_SIZE)
        except (ValueError, OverflowError, MemoryError) as e:
            raise CryptError(f"key file: unusable {self.name} parameters ({e})") from None

    def to_json(self) -> dict[str, Any]:
        if self.name == "scrypt":
            return {"Scrypt": {"n": self.n, "r": self.r, "p": self.p, "salt": _b64(self.salt)}}
        return {"PBKDF2": {"iter": self.iterations, "salt": _b64(self.salt)}}

    @classmethod
    def from_json(cls, obj: object) -> Kdf | None:
        if obj is None:
            return None
        if not isinstance(obj, dict) or len(obj) != 1:
            raise CryptError("key file: 'kdf' is neither null nor a single Scrypt/PBKDF2 entry")
        ((tag, params),) = obj.items()
        if not isinstance(params, dict):
            raise CryptError(f"key file: kdf {tag!r} parameters are not an object")
        salt = _unb64(params.get("salt"), "kdf salt")

        def num(key: str) -> int:
            v = params.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 2**63:
                raise CryptError(f"key file: kdf parameter {key!r} is not a positive integer")
            return v

        if tag == "Scrypt":
            return cls("scrypt", salt, n=num("n"), r=num("r"), p=num("p"))
        if tag == "PBKDF2":
            return cls("pbkdf2", salt, iterations=num("iter"))
        raise CryptError(f"key file: unknown kdf {tag!r}")


def _seal(key: bytes, derived: bytes) -> bytes:
    """iv | tag | ct: the key encrypted under the passphrase-derived key."""
    iv, tag, ct = gcm_encrypt(derived, key)
    return iv + tag + ct


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """The parsed key file; `data` is the raw key (kdf None) or the sealed key."""

    kdf: Kdf | None
    created: int
    modified: int
    data: bytes
    fingerprint: bytes | None = None
    hint: str | None = None

    @classmethod
    def create(cls, key: bytes, password: bytes | None, kdf: str = "scrypt") -> KeyConfig:
        fingerprint = CryptConfig(key).fingerprint()
        now = int(time.time())
        if kdf == "none":
            if password is not None:
                raise CryptError("a password was given, but kdf 'none' stores the key in clear")
            return cls(None, now, now, key, fingerprint)
        if password is None:
            raise CryptError(f"kdf {kdf!r} needs a password")
        if len(password) < MIN_PASSWORD_LEN:
            raise CryptError(f"password is too short (at least {MIN_PASSWORD_LEN} bytes)")
        params = Kdf.new(kdf)
        return cls(params, now, now, _seal(key, params.derive(password)), fingerprint)

    def to_json(self) -> str:
        obj: dict[str, Any] = {
            "kdf": self.kdf.to_json() if self.kdf else None,
            "created": epoch_to_local_rfc3339(self.created),
            "modified": epoch_to_local_rfc3339(self.modified),
            "data": _b64(self.data),
        }
        if self.fingerprint is not None:
            obj["fingerprint"] = format_fingerprint(self.fingerprint)
        if self.hint is not None:
            obj["hint"] = self.hint
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyConfig:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise CryptError(f"key file is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise CryptError("key file is not a JSON object")
        fp_text = obj.get("fingerprint")
        fingerprint = None
        if fp_text is not None:
            try:
                fingerprint = bytes.fromhex(str(fp_text).replace(":", ""))
            except ValueError:
                fingerprint = b""
            if len(fingerprint) != 32:
                raise CryptError(f"key file: fingerprint {fp_text!r} is not 32 hex bytes")
        hint = obj.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise CryptError("key file: hint is not a string")
        return cls(
            Kdf.from_json(obj.get("kdf")),
            _parse_time(obj.get("created"), "created"),
            _parse_time(obj.get("modified"), "modified"),
            _unb64(obj.get("data"), "data"),
            fingerprint,
            hint,
        )

    @property
    def fingerprint_str(self) -> str | None:
        return format_fingerprint(self.fingerprint) if self.fingerprint else None

    def decrypt(self, password: bytes | None = None) -> CryptConfig:
        """Recover the key; CryptError on a missing or wrong password or a corrupt file."""
        if self.kdf is None:
            key = self.data
        else:
            if password is None:
                raise CryptError("key file is password protected, but no password was given")
            if len(password) < MIN_PASSWORD_LEN:
                raise CryptError(f"password is too short (at least {MIN_PASSWORD_LEN} bytes)")
            if len(self.data) != IV_SIZE + TAG_SIZE + KEY_SIZE:
                raise CryptError(f"key file: sealed key has {len(self.data)} bytes, expected 64")
            iv, tag, ct = self.data[:16], self.data[16:32], self.data[32:]
            try:
                key = gcm_decrypt(self.kdf.derive(password), iv, tag, ct)
            except CryptError:
                hint = f" (password hint: {self.hint})" if self.hint else ""
                raise CryptError(f"unable to decrypt key: wrong password?{hint}") from None
        if len(key) != KEY_SIZE:
            raise CryptError(f"key file: key has {len(key)} bytes, expected {KEY_SIZE}")
        crypt = CryptConfig(key)
        if self.fingerprint is not None and self.fingerprint != crypt.fingerprint():
            raise CryptError(
                f"key file contains wrong fingerprint {format_fingerprint(self.fingerprint)}, "
                f"the key has {crypt.fingerprint_str()}"
            )
        return crypt


def read_key_config(path: str | os.PathLike[str]) -> KeyConfig:
    """Parse a key file without decrypting it (e.g. to show its fingerprint)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"key file {os.fspath(path)!r} does not exist") from None
    return KeyConfig.from_json(raw)


def create_key_file(
    path: str | os.PathLike[str],
    password: bytes | None = None,
    *,
    kdf: str | None = None,
) -> CryptConfig:
    """Create a new random key at `path` (mode 0600, never overwriting).

    `kdf` defaults to "scrypt" when a password is given and "none" otherwise.
    """
    if kdf is None:
        kdf = "none" if password is None else "scrypt"
    if kdf not in KDF_NAMES:
        raise CryptError(f"unknown key derivation function {kdf!r}; use one of {KDF_NAMES}")
    key = os.urandom(KEY_SIZE)
    text = KeyConfig.create(key, password, kdf).to_json().encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise AlreadyExists(f"key file {os.fspath(path)!r} already exists") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise
    return CryptConfig(key)


def load_key_file(path: str | os.PathLike[str], password: bytes | None = None) -> CryptConfig:
    """Load and decrypt a key file written by PBS's client or by `create_key_file`."""
    return read_key_config(path).decrypt(password)
