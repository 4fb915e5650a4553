"""Running the server: listen address rules, start-up, uvicorn, clean shutdown on SIGTERM.

SIGTERM (or SIGINT): uvicorn stops accepting connections and lets running requests finish
(at most `GRACEFUL_SECONDS`), then every task is asked to stop and given `TASK_SECONDS`
before it is ended as aborted (`TaskManager.shutdown`); the process exits 0 and its locks
die with it. Configuration and task files are only ever replaced atomically.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

from chunkyard.errors import ChunkyardError
from chunkyard.server.state import DEFAULT_ADMIN, ServerState

DEFAULT_PORT = 8007
GRACEFUL_SECONDS = 10
TASK_SECONDS = 10.0

log = logging.getLogger("chunkyard.server")


class ServeError(ChunkyardError):
    """The server cannot start as asked (bad listen address, plain HTTP off loopback)."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int


def parse_listen(text: str) -> Listen:
    """`HOST:PORT`, `[V6]:PORT`, `HOST` or `:PORT` (port default 8007, host 0.0.0.0)."""
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ServeError(f"invalid listen address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ServeError(f"invalid listen address {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "0.0.0.0"
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ServeError(f"invalid port in listen address {text!r}") from None
    if not 0 < port < 65536:
        raise ServeError(f"port {port} out of range")
    return Listen(host, port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(data_dir: str, listen: str, *, http: bool, sparse: bool = False,
          auth_failure_delay: float = 3.0, out: Callable[[str], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; returns after a clean shutdown."""
    import uvicorn

    from chunkyard.server.app import create_app
    from chunkyard.server.tls import ensure_certificate, fingerprint

    say = out or (lambda line: print(line, flush=True))
    addr = parse_listen(listen)
    if http and not is_loopback(addr.host):
        raise ServeError(f"plain HTTP is only allowed on a loopback address, not {addr.host!r}")
    state, defaults = ServerState.open(data_dir, sparse=sparse,
                                       auth_failure_delay=auth_failure_delay)
    if defaults.created_store:
        say(f"created datastore '{defaults.created_store}' at {state.data.default_store}")
    if defaults.admin:
        if defaults.admin_password is not None:
            say(f"created user {DEFAULT_ADMIN} with password: {defaults.admin_password}")
            say("(shown only this once; change it or set CHUNKYARD_ADMIN_PASSWORD before "
                "the first start)")
        else:
            say(f"created user {DEFAULT_ADMIN} with the password from "
                "CHUNKYARD_ADMIN_PASSWORD")
    cert: str | None = None
    key: str | None = None
    scheme = "http"
    if not http:
        cert, key, created = ensure_certificate(state.data.etc)
        say(f"{'created' if created else 'using'} TLS certificate {cert}")
        say(f"fingerprint: {fingerprint(cert)}")
        scheme = "https"
    config = uvicorn.Config(create_app(state), host=addr.host, port=addr.port,
                            lifespan="off", access_log=False, log_level="warning",
                            timeout_graceful_shutdown=GRACEFUL_SECONDS, server_header=False,
                            ssl_certfile=cert, ssl_keyfile=key)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it shut down on once it is done; with these no-op
    # handlers that re-raise does nothing and the tasks get their clean end below.
    previous = {sig: signal.signal(sig, lambda *_: None)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    say(f"listening on {scheme}://{host}:{addr.port}/api2/json (data: {state.data.root})")
    try:
        server.run()
    finally:
        forced = state.shutdown(TASK_SECONDS)
        for upid in forced:
            log.warning("task %s ended by shutdown", upid)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError(f"could not listen on {addr.host}:{addr.port}")
    say("stopped")


__all__ = ["Listen", "ServeError", "is_loopback", "parse_listen", "serve"]
