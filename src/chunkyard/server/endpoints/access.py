"""`/access/ticket` (password login, ticket renewal) and `/version`."""

from __future__ import annotations

from typing import Any

from chunkyard import __version__
from chunkyard.server.app import Call, Endpoint
from chunkyard.server.auth import login
from chunkyard.server.params import Param

# The PBS release whose API chunkyard follows (clients check it, e.g. for namespaces and
# move-group, which need 4.1.9).
PBS_VERSION = "4.1"
PBS_RELEASE = "9"


def create_ticket(call: Call) -> dict[str, str]:
    state = call.state
    result = login(call.params["username"], call.params["password"], call.source,
                   keys=state.keys, accounts=state.accounts, limiter=state.limiter)
    return result.to_api()


def version(call: Call) -> dict[str, Any]:
    return {"version": PBS_VERSION, "release": PBS_RELEASE,
            "repoid": f"chunkyard-{__version__}"}


ENDPOINTS = [
    Endpoint("POST", "/access/ticket", create_ticket, {
        "username": Param(optional=False, max_length=64),
        "password": Param(optional=False, max_length=4096),
    }, auth=False, description="Create or verify an authentication ticket."),
    Endpoint("GET", "/version", version, {},
             description="API version details (any authenticated user)."),
]
