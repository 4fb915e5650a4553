"""Namespace lifecycle under the lock protocol: create and delete (spec §1.3, §1.7).

create: NS(parent) S, NS(c) X, existence checked after the locks are held (rule 2).
delete: NS X on the namespace and every descendant, top-down; removal deepest first.
"""

from __future__ import annotations

from dataclasses import dataclass

from chunkyard.datastore.datastore import Datastore
from chunkyard.errors import AlreadyExists, DatastoreError, InvalidName, NotFound
from chunkyard.names import BackupNamespace
from chunkyard.names.namespace import MAX_COMPONENT_CREATE_LENGTH


@dataclass
class DeleteStats:
    """PBS's `{removed-groups, protected-snapshots, removed-snapshots}`."""

    removed_groups: int = 0
    protected_snapshots: int = 0
    removed_snapshots: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"removed-groups": self.removed_groups,
                "protected-snapshots": self.protected_snapshots,
                "removed-snapshots": self.removed_snapshots}

    def add(self, other: DeleteStats) -> None:
        self.removed_groups += other.removed_groups
        self.protected_snapshots += other.protected_snapshots
        self.removed_snapshots += other.removed_snapshots


def create_namespace(ds: Datastore, ns: BackupNamespace, *, wait: float = 0.0) -> BackupNamespace:
    """Create `ns`; its parent must exist and the new name is SAFE_ID of 1..32 characters."""
    if ns.is_root:
        raise InvalidName("the root namespace always exists and cannot be created")
    if len(ns.name) > MAX_COMPONENT_CREATE_LENGTH:
        raise InvalidName(f"namespace name {ns.name!r} is longer than "
                          f"{MAX_COMPONENT_CREATE_LENGTH} characters")
    with ds.locks.session(f"create namespace {ns}", wait=wait) as session:
        session.namespace_create(ns)
        if not ds.namespace_exists(ns.parent):
            raise NotFound(f"parent namespace '{ns.parent.display()}' does not exist")
        if ds.namespace_exists(ns):
            raise AlreadyExists(f"namespace '{ns}' already exists")
        ds.make_namespace_dir(ns)
    return ns


def delete_namespace(ds: Datastore, ns: BackupNamespace, *, delete_groups: bool = False,
                     error_on_protected: bool = True, wait: float = 0.0) -> DeleteStats:
    """Delete `ns` and its descendants, deepest first. Protected snapshots survive with their
    directories; without `delete_groups` only empty namespaces are removed."""
    if ns.is_root:
        raise DatastoreError("the root namespace cannot be deleted")
    from chunkyard.datastore.groups import destroy_group_locked

    stats = DeleteStats()
    kept: list[str] = []
    with ds.locks.session(f"delete namespace {ns}", wait=wait) as session:
        guard = session.namespace_subtree_exclusive(ns, ds.list_child_namespaces)
        if not ds.namespace_exists(ns):
            raise NotFound(f"namespace '{ns}' does not exist")
        for current in reversed(guard.namespaces):
            groups = ds.list_groups(current)
            if groups and not delete_groups:
                kept.append(str(current))
                continue
            for group in groups:
                stats.add(destroy_group_locked(ds, session, current, group))
            if ds.remove_namespace_dir_if_empty(current):
                session.unlink_namespace_lock_files(current)
            elif not groups:
                kept.append(str(current))
    if kept and not delete_groups and error_on_protected:
        raise DatastoreError(
            f"namespace '{kept[0]}' is not empty: it holds backup groups "
            "(use --delete-groups to remove them)")
    if stats.protected_snapshots and error_on_protected:
        raise DatastoreError(
            f"namespace '{ns}' kept {stats.protected_snapshots} protected snapshot(s); "
            f"removed {stats.removed_snapshots} snapshot(s) and {stats.removed_groups} group(s)")
    return stats

