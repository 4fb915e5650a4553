"""The API's endpoints, one module per area; `all_endpoints()` is what `create_app` serves.

| module | paths (below /api2/json) |
|---|---|
| `access.py` | `POST /access/ticket`, `GET /version` |
| `datastore.py` | `GET /admin/datastore`; `{store}/groups`, `snapshots`, `namespace` (3 methods) |
| `moves.py` | `POST {store}/move-group`, `{store}/move-namespace` (tasks) |
| `node_tasks.py` | `/nodes/{node}/tasks` (list), `{upid}/status`, `{upid}/log`, DELETE `{upid}` |
"""

from __future__ import annotations

from chunkyard.server.app import Endpoint


def all_endpoints() -> list[Endpoint]:
    from chunkyard.server.endpoints import access, datastore, moves, node_tasks

    return [*access.ENDPOINTS, *datastore.ENDPOINTS, *moves.ENDPOINTS, *node_tasks.ENDPOINTS]


__all__ = ["all_endpoints"]
