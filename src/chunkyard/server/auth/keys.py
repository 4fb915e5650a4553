"""The server's two secrets: the ticket signing key and the CSRF token secret.

Like PBS (`authkey.key`, `csrf.key` in the config directory), both are files created on first
use with mode 0600. New signing keys are Ed25519 in PKCS#8 PEM, which is what PBS generates
today; an RSA key written by an older PBS (PKCS#1 PEM) is used as it is, signing with
PKCS#1 v1.5 and SHA-256 like PBS's openssl signer, so tickets of a migrated PBS stay valid.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from chunkyard.errors import CryptError

AUTH_KEY_FILE = "authkey.key"
CSRF_KEY_FILE = "csrf.key"
CSRF_SECRET_BYTES = 32
MIN_CSRF_SECRET_BYTES = 16

PrivateKey = Ed25519PrivateKey | RSAPrivateKey
PublicKey = Ed25519PublicKey | RSAPublicKey


def _verify_with(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


class AuthKey:
    """Signs new tickets; verifies with the signing key and any older public keys (rollover)."""

    def __init__(self, private_key: PrivateKey, verify_keys: Sequence[PublicKey] = ()) -> None:
        if not isinstance(private_key, Ed25519PrivateKey | RSAPrivateKey):
            raise CryptError("ticket signing keys must be Ed25519 or RSA")
        self._private = private_key
        self._public: tuple[PublicKey, ...] = (private_key.public_key(), *verify_keys)

    @classmethod
    def generate(cls) -> AuthKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> AuthKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise CryptError(f"unusable ticket signing key: {err}") from None
        if not isinstance(key, Ed25519PrivateKey | RSAPrivateKey):
            raise CryptError(f"ticket signing key is {type(key).__name__}, "
                             "not Ed25519 or RSA")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> AuthKey:
        """Load the PEM key at `path`, creating an Ed25519 key (mode 0600) if there is none."""
        data = _read_or_create(Path(path), lambda: cls.generate().private_pem())
        return cls.from_pem(data)

    def accepting(self, *older: AuthKey) -> AuthKey:
        """This key, also verifying tickets signed by `older` keys (rollover without logout)."""
        extra = [key for other in older for key in other._public]
        return AuthKey(self._private, [*self._public[1:], *extra])

    def private_pem(self) -> bytes:
        """PEM as PBS writes it: PKCS#8 for Ed25519, traditional (PKCS#1) for RSA."""
        fmt = (serialization.PrivateFormat.PKCS8 if isinstance(self._private, Ed25519PrivateKey)
               else serialization.PrivateFormat.TraditionalOpenSSL)
        return self._private.private_bytes(serialization.Encoding.PEM, fmt,
                                           serialization.NoEncryption())

    def public_pem(self) -> bytes:
        return self._public[0].public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._private, Ed25519PrivateKey):
            return self._private.sign(data)
        return self._private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if any of the keys signed `data`; never raises."""
        return any(_verify_with(key, signature, data) for key in self._public)


@dataclass(frozen=True, repr=False)
class CsrfSecret:
    """The HMAC key of CSRF prevention tokens."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_CSRF_SECRET_BYTES:
            raise CryptError(f"CSRF secret too short ({len(self.key)} bytes, "
                             f"at least {MIN_CSRF_SECRET_BYTES})")

    def __repr__(self) -> str:
        return "CsrfSecret(<hidden>)"

    @classmethod
    def generate(cls) -> CsrfSecret:
        return cls(secrets.token_bytes(CSRF_SECRET_BYTES))

    @classmethod
    def from_file_content(cls, data: bytes) -> CsrfSecret:
        """Base64 text as PBS writes it; anything else is a legacy PBS secret used raw.

        PBS falls back the same way for its old csrf.key files (an RSA PEM used as bytes).
        """
        text = data.strip()
        try:
            key = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        return cls(key if len(key) >= MIN_CSRF_SECRET_BYTES else data)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> CsrfSecret:
        data = _read_or_create(Path(path), lambda: base64.b64encode(cls.generate().key))
        return cls.from_file_content(data)

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA3-256, the MAC of PBS's CSRF tokens."""
        return hmac.new(self.key, data, hashlib.sha3_256).digest()


@dataclass(frozen=True)
class AuthKeys:
    """Both secrets, loaded together from a configuration directory."""

    signing: AuthKey
    csrf: CsrfSecret

    @classmethod
    def generate(cls) -> AuthKeys:
        return cls(AuthKey.generate(), CsrfSecret.generate())

    @classmethod
    def load_or_create(cls, config_dir: str | os.PathLike[str]) -> AuthKeys:
        base = Path(config_dir)
        return cls(AuthKey.load_or_create(base / AUTH_KEY_FILE),
                   CsrfSecret.load_or_create(base / CSRF_KEY_FILE))


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of `path`; if missing, create it from `make()` (mode 0600, atomically).

    Two servers starting at once both write a temporary file and hard-link it into place;
    the loser finds the file present and reads the winner's key, so both end up with one key.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CryptError(f"cannot read key file {path}: {err.strerror}") from None
    _create_private_file(path, make())
    try:
        return path.read_bytes()
    except OSError as err:
        raise CryptError(f"cannot read key file {path}: {err.strerror}") from None


def _create_private_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as err:
        raise CryptError(f"cannot create key file {path}: {err.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise CryptError(f"cannot create key file {path}: {err.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
