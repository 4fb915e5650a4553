"""A small client for a PBS (or `chunkyard serve`) API, on the standard library only.

Authentication as proxmox-backup-client: an API token (`Authorization: PBSAPIToken=...`) or a
ticket from `POST /access/ticket` (cookie `PBSAuthCookie` plus the `CSRFPreventionToken`
header), got with a password at first use (`PasswordLogin`, e.g. $PBS_PASSWORD) or stored by
`chunkyard login` under `~/.cache/chunkyard/tickets/` (mode 0600). Tickets live two hours
(spec 11.2); like PBS's client, which renews its ticket every 15 minutes by posting it as the
password, a ticket older than `RENEW_AFTER` is renewed before the next request (a stored one
is stored again), and a stored ticket too old to be renewed is refused here with a hint to
log in again. Certificates: a pinned SHA-256 fingerprint (as `chunkyard serve` prints it) for
self-signed servers, else the system CA store. Replies are PBS's `{"data": ...}` envelope; an
error reply (plain text with an HTTP status) becomes a `RemoteError` with that text.

`PbsRepository` parses proxmox-backup-client's repository syntax
`[[user@realm[!token]@]host[:port]:]datastore` ($PBS_REPOSITORY).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import re
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chunkyard.errors import ChunkyardError
from chunkyard.names.patterns import SAFE_ID

API = "/api2/json"
DEFAULT_PORT = 8007
NODE = "localhost"
DEFAULT_AUTHID = "root@pam"  # proxmox-backup-client's default user

TICKET_LIFETIME = 2 * 3600  # spec 11.2
RENEW_AFTER = 3600  # a ticket older than this is renewed before the next request
# proxmox-backup-client stops using a cached ticket a minute before it expires; so do we
TICKET_USABLE = TICKET_LIFETIME - 60


class RemoteError(ChunkyardError):
    """The server refused a request, could not be reached, or a task failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a refused request


class InvalidRepository(RemoteError):
    """A repository is not of the form `[[user@realm[!token]@]host[:port]:]datastore`."""


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

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


# proxmox-backup-client's BACKUP_REPO_URL_REGEX (pbs-api-types), with its building blocks:
# USER_ID_REGEX_STR | APITOKEN_ID_REGEX_STR, then DNS_NAME_STR | IPRE_BRACKET_STR (IPv4
# addresses match DNS_NAME_STR already; the bracketed IPv6 text is checked by `ipaddress`).
_DNS_LABEL = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
_DNS_NAME = rf"(?:(?:{_DNS_LABEL}\.)*{_DNS_LABEL})"
_USER_ID = rf"(?:[^\s:/\x00-\x1f\x7f]+@{SAFE_ID})"
_REPO_RE = re.compile(
    rf"^(?:(?:({_USER_ID}|{_USER_ID}!{SAFE_ID})@)?({_DNS_NAME}|\[[0-9A-Fa-f:.]+\]):)?"
    rf"(?:([0-9]{{1,5}}):)?({SAFE_ID})\Z")
REPOSITORY_SYNTAX = "[[user@realm[!token]@]host[:port]:]datastore"


@dataclass(frozen=True)
class PbsRepository:
    """A repository in proxmox-backup-client's syntax; user root@pam, host localhost and
    port 8007 when left out, as there."""

    authid: str | None
    host: str | None  # an IPv6 address without its brackets
    port: int | None
    store: str

    @classmethod
    def parse(cls, text: str) -> PbsRepository:
        from chunkyard.names import Authid

        shown = repr(text if len(text) <= 80 else text[:77] + "...")
        match = _REPO_RE.match(text) if len(text) <= 256 else None  # PBS's max_length
        if match is None:
            raise InvalidRepository(f"invalid repository {shown} (expected "
                                    f"{REPOSITORY_SYNTAX})")
        authid, host, port_text, store = match.groups()
        if authid is not None:
            try:
                authid = str(Authid.parse(authid))
            except ChunkyardError as err:
                raise InvalidRepository(f"invalid repository {shown}: {err}") from None
        if host is not None and host.startswith("["):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise InvalidRepository(f"invalid repository {shown}: {host!r} is not "
                                        "an IPv6 address") from None
        port = None if port_text is None else int(port_text)
        if port is not None and not 0 < port < 65536:
            raise InvalidRepository(f"invalid repository {shown}: port {port} is out of "
                                    "range")
        return cls(authid, host, port, store)

    @property
    def user(self) -> str:
        """The auth id to log in as (a user, or a token whose secret is the password)."""
        return self.authid or DEFAULT_AUTHID

    @property
    def is_token(self) -> bool:
        return "!" in self.user

    def server(self) -> ServerUrl:
        """The server; PBS speaks HTTPS only."""
        return ServerUrl("https", self.host or "localhost", self.port or DEFAULT_PORT)


@dataclass(frozen=True)
class Credentials:
    """An API token (`user@realm!name:secret`) or a ticket with its CSRF token.

    A ticket may carry its user and when it was got (this machine's clock), so it can be
    renewed, and the file `chunkyard login` stored it in, to store the renewed one."""

    token: str | None = field(default=None, repr=False)
    ticket: str | None = field(default=None, repr=False)
    csrf: str | None = field(default=None, repr=False)
    username: str | None = None
    issued: float | None = None
    stored: Path | None = None

    def headers(self, method: str) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"PBSAPIToken={self.token}"}
        if self.ticket:
            headers = {"Cookie": "PBSAuthCookie=" + urllib.parse.quote(self.ticket, safe="")}
            if method != "GET" and self.csrf:
                headers["CSRFPreventionToken"] = self.csrf
            return headers
        return {}


@dataclass(frozen=True)
class PasswordLogin:
    """Log in with a password at the first request (`POST /access/ticket`)."""

    username: str
    password: str = field(repr=False)


def normalize_fingerprint(text: str) -> str:
    hexdigits = text.replace(":", "").strip().lower()
    if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise RemoteError(f"invalid fingerprint {text!r} (SHA-256, hex pairs joined by ':')")
    return ":".join(hexdigits[i:i + 2] for i in range(0, 64, 2))


class ApiClient:
    """One server: `get`/`post`/`put`/`delete` return the envelope's `data`."""

    def __init__(self, server: ServerUrl, credentials: Credentials | PasswordLogin,
                 fingerprint: str | None = None, timeout: float = 60.0) -> None:
        self.server = server
        self._login = credentials if isinstance(credentials, PasswordLogin) else None
        self.credentials = credentials if isinstance(credentials, Credentials) else \
            Credentials()
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
        credentials = self.authenticate()
        try:
            return self._call(method, path, params, credentials)
        except RemoteError as err:
            if err.status == 401 and credentials.stored is not None:
                raise RemoteError(f"{err}; the ticket stored by 'chunkyard login' was "
                                  f"refused: {self._relogin(credentials)}", 401) from None
            raise

    def _call(self, method: str, path: str, params: dict[str, Any] | None,
              credentials: Credentials) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        url = API + path
        body: bytes | None = None
        headers = {"Accept": "application/json", **credentials.headers(method)}
        if method in ("GET", "DELETE"):
            if clean:
                url += "?" + urllib.parse.urlencode([(k, _text(v)) for k, v in clean.items()])
        else:
            body = json.dumps(clean).encode()
            headers["Content-Type"] = "application/json"
        status, data = self._send(method, url, body, headers)
        text = data.decode("utf-8", "replace")
        if status != 200:
            raise RemoteError(_error_message(status, text), status)
        try:
            return json.loads(text).get("data") if text else None
        except (ValueError, AttributeError):
            raise RemoteError(f"unexpected reply from the server: {text[:200]!r}") from None

    # -- authentication -------------------------------------------------------------------

    def authenticate(self) -> Credentials:
        """The credentials for the next request: a pending password login done, a ticket
        older than `RENEW_AFTER` renewed (and stored again if it came from a file)."""
        if self._login is not None:
            login, self._login = self._login, None
            try:
                self.credentials = self.create_ticket(login.username, login.password)
            except RemoteError as err:
                raise RemoteError(f"login as {login.username} on {self.server.url()} "
                                  f"failed: {err}", err.status) from None
        credentials = self.credentials
        if not credentials.ticket or credentials.issued is None:
            return credentials
        age = time.time() - credentials.issued
        if age >= TICKET_USABLE:
            raise RemoteError(f"the ticket for {credentials.username} on {self.server.url()} "
                              f"has expired (tickets live {TICKET_LIFETIME // 3600} hours): "
                              f"{self._relogin(credentials)}")
        if age >= RENEW_AFTER:
            self.credentials = self.renew(credentials)
        return self.credentials

    def create_ticket(self, username: str, password: str) -> Credentials:
        """`POST /access/ticket`: a new ticket for a password, or for a current ticket."""
        data = self._call("POST", "/access/ticket",
                          {"username": username, "password": password}, Credentials())
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), str)
                for k in ("username", "ticket", "CSRFPreventionToken")):
            raise RemoteError("unexpected reply from the server to a login")
        return Credentials(ticket=data["ticket"], csrf=data["CSRFPreventionToken"],
                           username=data["username"], issued=time.time())

    def renew(self, credentials: Credentials) -> Credentials:
        """Renew a ticket as PBS's client does: post it as the password of its user."""
        username = credentials.username or _ticket_user(credentials.ticket or "")
        if not username or not credentials.ticket:
            raise RemoteError("cannot renew a ticket that names no user")
        try:
            renewed = self.create_ticket(username, credentials.ticket)
        except RemoteError as err:
            if err.status != 401:
                raise
            raise RemoteError(f"renewing the ticket of {username} on {self.server.url()} "
                              f"was refused ({err}): {self._relogin(credentials)}",
                              401) from None
        if credentials.stored is not None:
            store_ticket(credentials.stored, renewed)
            renewed = replace(renewed, stored=credentials.stored)
        return renewed

    def _relogin(self, credentials: Credentials) -> str:
        if credentials.stored is None:
            return "log in again"
        user = credentials.username or "USER@REALM"
        return f"run 'chunkyard login --server {self.server.url()} --user {user}' again"

    # -- transport ------------------------------------------------------------------------

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


def store_ticket(path: Path, credentials: Credentials) -> None:
    """Write a ticket file atomically (a unique temporary file, mode 0600, renamed)."""
    record = {"username": credentials.username, "ticket": credentials.ticket,
              "CSRFPreventionToken": credentials.csrf,
              "created": int(credentials.issued if credentials.issued is not None
                             else time.time())}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def login(server: ServerUrl, user: str, password: str,
          fingerprint: str | None = None) -> Path:
    """`POST /access/ticket`; stores the ticket and CSRF token (0600) and returns the file."""
    credentials = ApiClient(server, Credentials(), fingerprint).create_ticket(user, password)
    path = ticket_path(server)
    store_ticket(path, credentials)
    return path


_TICKET_RE = re.compile(r"^PBS:([^:]+):([0-9A-Fa-f]{8,16})::")


def _ticket_user(ticket: str) -> str | None:
    match = _TICKET_RE.match(ticket)
    return match.group(1) if match else None


def stored_ticket(server: ServerUrl) -> Credentials | None:
    """The ticket `chunkyard login` stored for `server`, if any (checked and renewed at the
    first request: `ApiClient.authenticate`)."""
    path = ticket_path(server)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("ticket"), str):
        return None
    ticket = record["ticket"]
    username = record.get("username")
    if not isinstance(username, str):
        username = _ticket_user(ticket)
    created = record.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        match = _TICKET_RE.match(ticket)  # older files: the ticket's own time
        created = int(match.group(2), 16) if match else 0
    return Credentials(ticket=ticket, csrf=str(record.get("CSRFPreventionToken") or ""),
                       username=username, issued=float(created), stored=path)


__all__ = ["DEFAULT_AUTHID", "ApiClient", "Credentials", "InvalidRepository", "PasswordLogin",
           "PbsRepository", "RemoteError", "ServerUrl", "login", "store_ticket",
           "stored_ticket", "ticket_path"]
