"""The server's TLS certificate: a self-signed one made on first start, PBS's file names.

`<config-dir>/proxy.key` (mode 0600) and `<config-dir>/proxy.pem`, as PBS's
/etc/proxmox-backup. The key is ECDSA P-256 (PBS makes RSA 4096; P-256 is as widely
supported and takes milliseconds). The fingerprint is the SHA-256 of the DER certificate,
lower-case hex pairs joined by colons: what `proxmox-backup-client --fingerprint` expects.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "proxy.pem"
KEY_FILE = "proxy.key"
VALID_DAYS = 3650


def fingerprint_of_der(der: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return ":".join(f"{b:02x}" for b in digest.finalize())


def fingerprint(cert_path: str) -> str:
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER))


def _write_new(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_certificate(config_dir: str) -> tuple[str, str, bool]:
    """(cert path, key path, created): makes a self-signed pair if either file is missing."""
    cert_path = os.path.join(config_dir, CERT_FILE)
    key_path = os.path.join(config_dir, KEY_FILE)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path, False
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "localhost"
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chunkyard"),
                      x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    os.makedirs(config_dir, mode=0o750, exist_ok=True)
    _write_new(key_path, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path, True


__all__ = ["CERT_FILE", "KEY_FILE", "ensure_certificate", "fingerprint", "fingerprint_of_der"]
