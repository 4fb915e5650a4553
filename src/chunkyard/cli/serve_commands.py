"""`chunkyard serve`: the PBS-compatible REST API server (HTTPS on port 8007)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from chunkyard.cli.context import one_line_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(one_line_errors(serve))


def serve(
    data_dir: Annotated[str, typer.Option(
        "--data-dir", help="Configuration, task logs and the default datastore "
        "(default ./chunkyard-data).")] = "./chunkyard-data",
    listen: Annotated[str, typer.Option(
        "--listen", metavar="HOST:PORT", help="Address to listen on (default 0.0.0.0:8007).")
    ] = "0.0.0.0:8007",
    http: Annotated[bool, typer.Option(
        "--http", help="Plain HTTP instead of HTTPS; only on a loopback address.")] = False,
    sparse_datastore: Annotated[bool, typer.Option(
        "--sparse-datastore", hidden=True,
        help="Create the default datastore without its 65536 chunk directories (tests).")
    ] = False,
    auth_failure_delay: Annotated[float, typer.Option(
        "--auth-failure-delay", hidden=True, min=0.0,
        help="Seconds to delay failed authentications (default 3, as PBS).")] = 3.0,
) -> None:
    """Serve the REST API under /api2/json; SIGTERM stops it cleanly."""
    from chunkyard.server.serve import serve as run

    run(os.path.abspath(data_dir), listen, http=http, sparse=sparse_datastore,
        auth_failure_delay=auth_failure_delay)
