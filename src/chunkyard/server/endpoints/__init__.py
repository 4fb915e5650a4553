"""The API's endpoints, one module per area; `all_endpoints()` is what `create_app` serves.

| module | paths (below /api2/json) |
|---|---|
| `access.py` | `POST /access/ticket`, `GET /version` |
| `datastore.py` | `GET /admin/datastore`; `{store}/groups`, `snapshots`, `namespace` (3 methods) |
| `content.py` | `{store}/status`, `files`, `download[-decoded]`, (group-)`notes`, `protected`, … |
| `maintenance.py` | `POST {store}/prune`, `prune-datastore`, `verify`; `{store}/gc` (tasks) |
| `moves.py` | `POST {store}/move-group`, `{store}/move-namespace` (tasks) |
| `users.py` | `/access/users[/{userid}]`, `{userid}/token[/{name}]`, PUT `/access/password` |
| `acl.py` | GET/PUT `/access/acl`, GET `/access/permissions` |
| `config_datastore.py` | `/config/datastore` (list, create), `{name}` (GET, PUT, DELETE) |
| `node_tasks.py` | `/nodes/{node}/tasks` (list), `{upid}/status`, `{upid}/log`, DELETE `{upid}` |
| `../openapi.py` | `GET /openapi.json` (no authentication): this API's OpenAPI document |
"""

from __future__ import annotations

from chunkyard.server.app import Endpoint


def all_endpoints() -> list[Endpoint]:
    from chunkyard.server import openapi
    from chunkyard.server.endpoints import (
        access,
        acl,
        config_datastore,
        content,
        datastore,
        maintenance,
        moves,
        node_tasks,
        users,
    )

    return [*access.ENDPOINTS, *datastore.ENDPOINTS, *moves.ENDPOINTS,
            *content.ENDPOINTS, *maintenance.ENDPOINTS, *node_tasks.ENDPOINTS,
            *users.ENDPOINTS, *acl.ENDPOINTS, *config_datastore.ENDPOINTS,
            *openapi.ENDPOINTS]


__all__ = ["all_endpoints"]
