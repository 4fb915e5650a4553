"""Suite-wide settings: the lock order checker is on everywhere (also in child processes),
locks and client caches live in per-run temporary directories."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chunkyard.datastore.datastore import Datastore

os.environ["CHUNKYARD_LOCKDEP"] = "1"
_RUN_DIR = tempfile.mkdtemp(prefix="chunkyard-tests-")
os.environ.setdefault("CHUNKYARD_LOCK_DIR", os.path.join(_RUN_DIR, "locks"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--stress-seconds", type=float, default=None,
                     help="run the stress test for this long (make stress)")


@pytest.fixture(autouse=True)
def _lock_order_checking() -> Iterator[None]:
    try:
        from chunkyard.datastore.locking import set_order_checking
    except ImportError:  # pragma: no cover - during bootstrap
        yield
        return
    set_order_checking(True)
    yield


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one (for full 65536-directory datastores)."""
    from tests.helpers import fast_tmp_dir

    with fast_tmp_dir(tmp_path) as d:
        yield d


@pytest.fixture(autouse=True)
def _client_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHUNKYARD_CACHE_DIR", str(tmp_path / "client-cache"))


@pytest.fixture
def ds(tmp_path: Path) -> Datastore:
    """A fresh datastore without the 65,536 prefix directories (fast; see ChunkStore)."""
    from chunkyard.datastore.datastore import Datastore  # after CHUNKYARD_LOCKDEP is set

    return Datastore.create(str(tmp_path / "store"), sparse=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    """A real `chunkyard serve` process on a prepared data directory (tests/server_helpers)."""
    from tests.server_helpers import running_server

    yield from running_server(tmp_path_factory)


@pytest.fixture(scope="module")
def admin(server: tuple[Any, dict[str, str]]) -> Any:
    """An API client logged in as admin@pbs on `server`."""
    from tests.server_helpers import login

    return login(server[0].base)
