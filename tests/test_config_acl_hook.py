"""The namespace-move hook: ACL paths follow a moved namespace, in the move's operation, under
acl.cfg's lock; merges keep an explicit deny; other stores and paths are left alone."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
from pathlib import Path

import pytest

from chunkyard.config import ConfigDir, acl, datastore
from chunkyard.config.acl import AclConfig, make_acl_reference_hook, rewrite_acl_paths
from chunkyard.config.store import ACL_FILE
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.moves import move_namespace, register_reference_hook
from chunkyard.names import BackupNamespace
from tests.store_helpers import make_namespaces, ns

CTX = multiprocessing.get_context("fork")

ACL_BEFORE = (
    "acl:1:/:admin@pbs:Audit\n"
    "acl:1:/datastore/store:alice@pbs:DatastoreAudit\n"
    "acl:1:/datastore/store/a:alice@pbs:DatastoreBackup\n"
    "acl:0:/datastore/store/a/b:bob@pbs:DatastoreReader\n"
    "acl:1:/datastore/store/a/b/c:bob@pbs!ci:DatastoreBackup\n"
    "acl:1:/datastore/store/ab:carol@pbs:DatastoreAdmin\n"
    "acl:1:/datastore/other/a:dave@pbs:DatastoreAdmin\n"
)


def subtree(old: str, new: str, *below: str) -> list[tuple[BackupNamespace, BackupNamespace]]:
    """What a move passes its hooks: the namespace and each descendant that moved."""
    return [(ns(old), ns(new))] + [(ns(f"{old}/{b}"), ns(f"{new}/{b}")) for b in below]


def test_exact_paths_of_every_moved_namespace_are_rewritten() -> None:
    config = acl.parse_text(ACL_BEFORE)
    new, log = rewrite_acl_paths(config, "store", subtree("a", "x/y", "b", "b/c"))
    assert acl.write_text(new) == (
        "acl:1:/:admin@pbs:Audit\n"
        "acl:1:/datastore/other/a:dave@pbs:DatastoreAdmin\n"
        "acl:1:/datastore/store:alice@pbs:DatastoreAudit\n"
        "acl:1:/datastore/store/ab:carol@pbs:DatastoreAdmin\n"
        "acl:1:/datastore/store/x/y:alice@pbs:DatastoreBackup\n"
        "acl:0:/datastore/store/x/y/b:bob@pbs:DatastoreReader\n"
        "acl:1:/datastore/store/x/y/b/c:bob@pbs!ci:DatastoreBackup\n")
    assert log == ["acl /datastore/store/a -> /datastore/store/x/y",
                   "acl /datastore/store/a/b -> /datastore/store/x/y/b",
                   "acl /datastore/store/a/b/c -> /datastore/store/x/y/b/c"]
    assert acl.write_text(config) == acl.write_text(acl.parse_text(ACL_BEFORE)), "input kept"
    again, log = rewrite_acl_paths(new, "store", subtree("a", "x/y", "b", "b/c"))
    assert again == new and log == [], "idempotent"


def test_a_descendant_that_stayed_keeps_its_entries() -> None:
    new, _ = rewrite_acl_paths(acl.parse_text(ACL_BEFORE), "store", subtree("a", "t"))
    assert [acl.format_path(p) for p in new.paths()] == [
        "/", "/datastore/other/a", "/datastore/store", "/datastore/store/a/b",
        "/datastore/store/a/b/c", "/datastore/store/ab", "/datastore/store/t"]


def test_merging_into_existing_entries_unions_roles_and_keeps_a_deny() -> None:
    config = acl.parse_text(
        "acl:1:/datastore/s1/src:u@pbs:DatastoreBackup,DatastoreAudit\n"
        "acl:1:/datastore/s1/src:v@pbs:DatastoreReader\n"
        "acl:1:/datastore/s1/src:w@pbs:NoAccess\n"
        "acl:0:/datastore/s1/dst:u@pbs:DatastoreAudit,DatastoreReader\n"
        "acl:1:/datastore/s1/dst:v@pbs:NoAccess\n"
        "acl:1:/datastore/s1/dst:w@pbs:DatastoreAdmin\n"
        "acl:1:/datastore/s1/dst:x@pbs:DatastoreAudit\n")
    new, log = rewrite_acl_paths(config, "s1", subtree("src", "dst"))
    assert new.node("/datastore/s1/dst") == {
        "u@pbs": {"DatastoreAudit": True, "DatastoreReader": False, "DatastoreBackup": True},
        "v@pbs": {"NoAccess": True},
        "w@pbs": {"NoAccess": True},
        "x@pbs": {"DatastoreAudit": True}}
    assert new.node("/datastore/s1/src") == {}
    assert log[0] == "acl /datastore/s1/src -> /datastore/s1/dst"
    assert len(log) == 4 and all("merged" in line for line in log[1:])
    assert "merged u@pbs's roles DatastoreAudit,DatastoreBackup from /datastore/s1/src into " \
           "DatastoreAudit(no propagate),DatastoreReader(no propagate), now DatastoreAudit," \
           "DatastoreBackup,DatastoreReader(no propagate)" in log[1]


def test_moves_apply_at_once() -> None:
    config = acl.parse_text("acl:1:/datastore/s1/p:u@pbs:DatastoreAudit\n"
                            "acl:1:/datastore/s1/q:u@pbs:DatastoreBackup\n")
    new, _ = rewrite_acl_paths(config, "s1", [(ns("p"), ns("q")), (ns("q"), ns("r"))])
    assert new.node("/datastore/s1/q") == {"u@pbs": {"DatastoreAudit": True}}
    assert new.node("/datastore/s1/r") == {"u@pbs": {"DatastoreBackup": True}}


# -- with a real move --------------------------------------------------------------------------

@pytest.fixture
def cfg(tmp_path: Path, ds: Datastore) -> ConfigDir:
    cfg = ConfigDir(tmp_path / "etc", lock_timeout=0.5)
    cfg.update_datastore(lambda c: c.add(datastore.new_datastore("store", ds.path)))
    cfg.update_acl(lambda c: acl.parse_text(ACL_BEFORE))
    return cfg


def test_a_namespace_move_rewrites_acl_cfg_in_the_same_operation(ds: Datastore,
                                                                 cfg: ConfigDir) -> None:
    make_namespaces(ds, "a", "a/b", "a/b/c", "x")
    unregister = register_reference_hook(
        make_acl_reference_hook(cfg, acl.store_name_by_path(cfg)))
    try:
        result = move_namespace(ds, ns("a"), ns("x/y"))
    finally:
        unregister()
    assert result["references"] == ["acl /datastore/store/a -> /datastore/store/x/y",
                                     "acl /datastore/store/a/b -> /datastore/store/x/y/b",
                                     "acl /datastore/store/a/b/c -> /datastore/store/x/y/b/c"]
    assert ds.namespace_exists(ns("x/y/b/c"))
    text = Path(cfg.file_path(ACL_FILE)).read_text()
    assert "/datastore/store/a:" not in text and "/datastore/store/x/y/b/c:bob@pbs!ci" in text
    assert "acl:1:/datastore/other/a:dave@pbs:DatastoreAdmin\n" in text
    assert os.stat(cfg.file_path(ACL_FILE)).st_mode & 0o777 == 0o644


def test_the_hook_ignores_a_datastore_that_is_not_configured(ds: Datastore, tmp_path: Path,
                                                             cfg: ConfigDir) -> None:
    other = Datastore.create(str(tmp_path / "unlisted"), sparse=True)
    make_namespaces(other, "a")
    hook = make_acl_reference_hook(cfg, acl.store_name_by_path(cfg))
    before = os.stat(cfg.file_path(ACL_FILE))
    assert hook(other, subtree("a", "z")) == []
    assert os.stat(cfg.file_path(ACL_FILE)).st_mtime_ns == before.st_mtime_ns


def _hold_acl_lock(path: str, ready: multiprocessing.synchronize.Event,
                   release: multiprocessing.synchronize.Event) -> None:
    with ConfigDir(path).locked(ACL_FILE):
        ready.set()
        release.wait(30)


def test_a_busy_acl_cfg_fails_the_hook_not_the_move(ds: Datastore, cfg: ConfigDir) -> None:
    make_namespaces(ds, "a")
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_acl_lock, args=(cfg.path, ready, release))
    holder.start()
    unregister = register_reference_hook(make_acl_reference_hook(cfg, lambda d: "store"))
    try:
        assert ready.wait(10)
        result = move_namespace(ds, ns("a"), ns("moved"))
    finally:
        unregister()
        release.set()
        holder.join(10)
    assert ds.namespace_exists(ns("moved")) and not ds.namespace_exists(ns("a"))
    [line] = result["references"]
    assert line.startswith("failed: reference hook acl_reference_hook: ")
    assert "acl.cfg" in line and f"pid {holder.pid}" in line
    assert AclConfig(cfg.read_acl()[0].entries()) == acl.parse_text(ACL_BEFORE), "unchanged"
