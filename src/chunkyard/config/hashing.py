"""Password and token-secret hashes: scrypt, self-describing, verified in constant time.

    $scrypt$ln=14,r=8,p=1$<salt>$<hash>      (salt 16 bytes, hash 32 bytes; base64, no '=')

PBS stores crypt(3) hashes (`$5$`, SHA-256-crypt) in shadow.json and token.shadow. chunkyard
uses scrypt on purpose: it is memory-hard (16 MiB per guess at these parameters), so a stolen
file costs an attacker far more than SHA-256-crypt does, and it is in the standard library.
The price is that PBS cannot verify chunkyard's hashes (nor chunkyard PBS's): these two files
are not shared with PBS.

Stored parameters are bounded (at most 64 MiB and p <= 4) so that a tampered file cannot make
one login attempt exhaust the server, and never weaker than the defaults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import uuid
from dataclasses import dataclass

LOG2_N = 14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_MEMORY = 64 * 1024 * 1024
MAX_P = 4

_FORMAT = re.compile(r"^\$scrypt\$ln=([0-9]{1,2}),r=([0-9]{1,2}),p=([0-9])"
                     r"\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})\Z")


@dataclass(frozen=True)
class ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        return (f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}"
                f"${_b64(self.salt)}${_b64(self.digest)}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    if _b64(data) != text:  # non-zero padding bits: not the canonical encoding
        raise ValueError("not canonical base64")
    return data


def parse_hash(encoded: str) -> ScryptHash:
    """The parameters of a stored hash; ValueError (naming no secret) if it is not one."""
    m = _FORMAT.match(encoded) if isinstance(encoded, str) else None
    if m is None:
        raise ValueError("not a chunkyard scrypt hash ($scrypt$ln=..,r=..,p=..$salt$hash)")
    log2_n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if log2_n < LOG2_N or r < R or p < P:
        raise ValueError(f"scrypt parameters weaker than ln={LOG2_N},r={R},p={P}")
    if 128 * r * (1 << log2_n) > MAX_MEMORY or p > MAX_P:
        raise ValueError("scrypt parameters too expensive (more than 64 MiB or p > 4)")
    try:
        salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
    except ValueError:
        raise ValueError("scrypt hash has invalid base64") from None
    return ScryptHash(log2_n, r, p, salt, digest)


def _derive(secret: str, log2_n: int, r: int, p: int, salt: bytes) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024, dklen=HASH_BYTES)


def hash_secret(secret: str) -> str:
    """A new hash of `secret` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    return ScryptHash(LOG2_N, R, P, salt, _derive(secret, LOG2_N, R, P, salt)).encode()


_DUMMY = ScryptHash(LOG2_N, R, P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


def verify_secret(secret: str, encoded: str | None) -> bool:
    """True if `secret` matches `encoded`. With `encoded` None (no such user or token) the
    same work is done against a dummy, so timing does not tell which accounts exist."""
    stored = parse_hash(encoded) if encoded is not None else _DUMMY
    candidate = _derive(secret, stored.log2_n, stored.r, stored.p, stored.salt)
    return hmac.compare_digest(candidate, stored.digest) and encoded is not None


def new_token_secret() -> str:
    """A token secret as PBS makes them: a random UUID, shown to its owner once."""
    return str(uuid.uuid4())
