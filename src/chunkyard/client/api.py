"""A small client for a PBS (or `chunkyard serve`) API, on the standard library only.

Authentication as proxmox-backup-client: an API token (`Authorization: PBSAPIToken=...`) or a
ticket from `POST /access/ticket` (cookie `PBSAuthCookie` plus the `CSRFPreventionToken`
header), stored by `chunkyard login` under `~/.cache/chunkyard/tickets/` (mode 0600).
Certificates: a pinned SHA-256 fingerprint (as `chunkyard serve` prints it) for self-signed
servers, else the system CA store. Replies are PBS's `{"data": ...}` envelope; an error reply
(plain text with an HTTP status) becomes a `RemoteError` with that text.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chunkyard.errors import ChunkyardError

API = "/api2/json"
DEFAULT_PORT = 8007
NODE = "localhost"


class RemoteError(ChunkyardError):
    """The server refused a request, could not be reached, or a task failed."""


@dataclass(frozen=True)
class ServerUrl:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ServerUrl:
        """`https://host:8007`, `http://host:port`, or a bare `host[:port]` (https)."""
        url = urllib.parse.urlsplit(text if "://" in text else f"https://{text}")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise RemoteError(f"invalid server URL {text!r} (use https://HOST[:PORT])")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError:
            raise RemoteError(f"invalid port in server URL {text!r}") from None
        return cls(url.scheme, url.hostname, port)

    def key(self) -> str:
        """The ticket file's name: `<host>_<port>`."""
        return f"{self.host.replace(':', '_')}_{self.port}"


@dataclass(frozen=True)
class Credentials:
    """An API token (`user@realm!name:secret`) or a ticket with its CSRF token."""

    token: str | None = None
    ticket: str | None = None
    csrf: str | None = None

    def headers(self, method: str) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"PBSAPIToken={self.token}"}
        if self.ticket:
            headers = {"Cookie": "PBSAuthCookie=" + urllib.parse.quote(self.ticket, safe="")}
            if method != "GET" and self.csrf:
                headers["CSRFPreventionToken"] = self.csrf
            return headers
        return {}


def normalize_fingerprint(text: str) -> str:
    hexdigits = text.replace(":", "").strip().lower()
    if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise RemoteError(f"invalid fingerprint {text!r} (SHA-256, hex pairs joined by ':')")
    return ":".join(hexdigits[i:i + 2] for i in range(0, 64, 2))


class ApiClient:
    """One server: `get`/`post`/`put`/`delete` return the envelope's `data`."""

    def __init__(self, server: ServerUrl, credentials: Credentials,
                 fingerprint: str | None = None, timeout: float = 60.0) -> None:
        self.server = server
        self.credentials = credentials
        self.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
        self.timeout = timeout

    # -- requests -------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params)

    def post(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, params)

    def put(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, params)

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, params)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        url = API + path
        body: bytes | None = None
        headers = {"Accept": "application/json", **self.credentials.headers(method)}
        if method in ("GET", "DELETE"):
            if clean:
                url += "?" + urllib.parse.urlencode([(k, _text(v)) for k, v in clean.items()])
        else:
            body = json.dumps(clean).encode()
            headers["Content-Type"] = "application/json"
        status, data = self._send(method, url, body, headers)
        text = data.decode("utf-8", "replace")
        if status != 200:
            raise RemoteError(_error_message(status, text))
        try:
            return json.loads(text).get("data") if text else None
        except (ValueError, AttributeError):
            raise RemoteError(f"unexpected reply from the server: {text[:200]!r}") from None

    def _send(self, method: str, url: str, body: bytes | None,
              headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.connect()
            self._check_certificate(conn)
            conn.request(method, url, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except ssl.SSLCertVerificationError as e:
            raise RemoteError(f"certificate verification failed for {self.server.host}: "
                              f"{e.verify_message} (pin it with --fingerprint)") from None
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(f"cannot reach {self.server.host}:{self.server.port}: "
                              f"{e}") from None
        finally:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self.server.host, self.server.port
        if self.server.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        context = ssl.create_default_context()
        if self.fingerprint:  # the pin replaces the CA check (self-signed servers)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)

    def _check_certificate(self, conn: http.client.HTTPConnection) -> None:
        if not self.fingerprint or not isinstance(conn, http.client.HTTPSConnection):
            return
        sock = conn.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        digest = hashlib.sha256(der or b"").hexdigest()
        actual = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        if actual != self.fingerprint:
            raise RemoteError(f"certificate fingerprint mismatch: the server has {actual}")

    # -- tasks ----------------------------------------------------------------------------

    def wait_task(self, upid: str, on_line: Callable[[str], None],
                  poll: float = 0.2) -> str:
        """Follow a task's log until it stops; its exit status, or `RemoteError` if failed."""
        base = f"/nodes/{NODE}/tasks/{urllib.parse.quote(upid, safe='')}"
        next_line = 1
        while True:
            status = self.get(base + "/status")
            stopped = status.get("status") == "stopped"
            lines = self.get(base + "/log", {"start": next_line, "limit": 0}) or []
            for line in lines:
                on_line(str(line.get("t", "")))
                next_line = max(next_line, int(line.get("n", 0)) + 1)
            if stopped:
                break
            time.sleep(poll)
        exit_status = str(status.get("exitstatus", "unknown"))
        if exit_status != "OK" and not exit_status.startswith("WARNINGS"):
            raise RemoteError(f"task failed: {exit_status}")
        return exit_status


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error_message(status: int, text: str) -> str:
    message = text.strip()
    try:  # some servers wrap errors in JSON ({"message": ..., "errors": ...})
        parsed = json.loads(message)
        if isinstance(parsed, dict) and parsed.get("message"):
            message = str(parsed["message"]).strip()
    except ValueError:
        pass
    message = " ".join(message.split()) or http.client.responses.get(status, "error")
    return f"{message} (HTTP {status})"


# -- stored tickets ---------------------------------------------------------------------------

def ticket_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "chunkyard" / "tickets"


def ticket_path(server: ServerUrl) -> Path:
    return ticket_dir() / f"{server.key()}.json"


def login(server: ServerUrl, user: str, password: str,
          fingerprint: str | None = None) -> Path:
    """`POST /access/ticket`; stores the ticket and CSRF token (0600) and returns the file."""
    client = ApiClient(server, Credentials(), fingerprint)
    data = client.post("/access/ticket", {"username": user, "password": password})
    record = {"username": data["username"], "ticket": data["ticket"],
              "CSRFPreventionToken": data["CSRFPreventionToken"], "created": int(time.time())}
    path = ticket_path(server)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path


def stored_ticket(server: ServerUrl) -> Credentials | None:
    try:
        record = json.loads(ticket_path(server).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("ticket"):
        return None
    return Credentials(ticket=str(record["ticket"]),
                       csrf=str(record.get("CSRFPreventionToken") or ""))


__all__ = ["ApiClient", "Credentials", "RemoteError", "ServerUrl", "login", "stored_ticket",
           "ticket_path"]
