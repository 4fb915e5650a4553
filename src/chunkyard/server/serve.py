"""Running the server: listen address rules, start-up, uvicorn, clean shutdown on SIGTERM.

SIGTERM (or SIGINT): uvicorn stops accepting connections and lets running requests finish
(at most `GRACEFUL_SECONDS`), then every task is asked to stop and given `TASK_SECONDS`
before it is ended as aborted (`TaskManager.shutdown`); the process exits 0 and its locks
die with it. Configuration and task files are only ever replaced atomically.

Idle connections end at once on shutdown (`PromptShutdownProtocol`). uvicorn closes an idle
keep-alive connection with `transport.close()`, which over TLS sends close_notify and then
waits for the peer's close_notify (asyncio's `ssl_shutdown_timeout`, 30 s) before the
connection counts as gone; a client that keeps its idle connection open without reading (most
HTTP clients' pools do) answers nothing, so every SIGTERM took the whole `GRACEFUL_SECONDS`.
Plain HTTP closes at once. The protocol therefore aborts a connection that is closing, has
nothing left to send and has waited `CLOSE_GRACE` seconds. A request in flight is not
touched: uvicorn turns keep-alive off, closes the connection once the response is complete
(with `Connection: close` if its headers were not sent yet), and only then does the same
apply, so a client that never reads its close_notify cannot hold the shutdown either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chunkyard.errors import ChunkyardError
from chunkyard.server.state import DEFAULT_ADMIN, DELETE_WAIT, ServerState

DEFAULT_PORT = 8007
GRACEFUL_SECONDS = 10
TASK_SECONDS = 10.0
DELETE_WAIT_ENV = "CHUNKYARD_DELETE_WAIT"  # seconds; tests shorten `DELETE_WAIT` with it
CLOSE_GRACE = 0.3  # seconds a closing connection with nothing left to send may take to end
_CLOSE_POLL = 0.05

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


def _unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes the transport still has to send: a TLS transport's own buffer plus that of the
    TCP transport below it (asyncio's private `_ssl_protocol._transport`, if there)."""
    size = 0
    if isinstance(transport, asyncio.WriteTransport):
        size = transport.get_write_buffer_size()
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    if isinstance(inner, asyncio.WriteTransport):
        size += inner.get_write_buffer_size()
    return size


def prompt_shutdown_protocol() -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, ending idle connections promptly on shutdown (see above)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class PromptShutdownProtocol(H11Protocol):
        _lost = False
        _idle_since: float | None = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._lost = True
            super().connection_lost(exc)

        def shutdown(self) -> None:
            # idle: uvicorn closes it now; in flight: after the response (keep-alive off)
            super().shutdown()
            self._end_when_closed()

        def _end_when_closed(self) -> None:
            if self._lost:
                return
            transport: Any = self.transport
            if transport.is_closing() and _unsent(transport) == 0:
                now = time.monotonic()
                if self._idle_since is None:
                    self._idle_since = now
                elif now - self._idle_since >= CLOSE_GRACE:
                    transport.abort()  # the peer did not answer close_notify: do not wait
                    return
            else:
                self._idle_since = None
            self.loop.call_later(_CLOSE_POLL, self._end_when_closed)

    return PromptShutdownProtocol


def _delete_wait() -> float:
    text = os.environ.get(DELETE_WAIT_ENV)
    if not text:
        return DELETE_WAIT
    try:
        value = float(text)
    except ValueError:
        raise ServeError(f"{DELETE_WAIT_ENV}: not a number of seconds: {text!r}") from None
    if not 0 <= value <= 3600:
        raise ServeError(f"{DELETE_WAIT_ENV}: {value:g} s out of range (0 to 3600)")
    return value


def serve(data_dir: str, listen: str, *, http: bool, sparse: bool = False,
          auth_failure_delay: float = 3.0, delete_wait: float | None = None,
          out: Callable[[str], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; returns after a clean shutdown. `delete_wait` (default
    `$CHUNKYARD_DELETE_WAIT`, else 10 s): how long deleting a store's data waits for it to
    be free (`ServerState.delete_wait`)."""
    import uvicorn

    from chunkyard.server.app import create_app
    from chunkyard.server.scheduler import Scheduler
    from chunkyard.server.tls import ensure_certificate, fingerprint

    say = out or (lambda line: print(line, flush=True))
    addr = parse_listen(listen)
    if http and not is_loopback(addr.host):
        raise ServeError(f"plain HTTP is only allowed on a loopback address, not {addr.host!r}")
    state, defaults = ServerState.open(
        data_dir, sparse=sparse, auth_failure_delay=auth_failure_delay,
        delete_wait=_delete_wait() if delete_wait is None else delete_wait)
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
                            http=prompt_shutdown_protocol(),
                            ssl_certfile=cert, ssl_keyfile=key)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it shut down on once it is done; with these no-op
    # handlers that re-raise does nothing and the tasks get their clean end below.
    previous = {sig: signal.signal(sig, lambda *_: None)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    say(f"listening on {scheme}://{host}:{addr.port}/api2/json (data: {state.data.root})")
    scheduler = Scheduler(state)
    scheduler.start()
    try:
        server.run()
    finally:
        scheduler.stop()  # no job starts while the tasks are stopped
        forced = state.shutdown(TASK_SECONDS)
        for upid in forced:
            log.warning("task %s ended by shutdown", upid)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError(f"could not listen on {addr.host}:{addr.port}")
    say("stopped")


__all__ = ["Listen", "ServeError", "is_loopback", "parse_listen", "prompt_shutdown_protocol",
           "serve"]
