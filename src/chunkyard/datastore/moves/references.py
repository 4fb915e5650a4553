"""Hooks that rewrite configuration naming a moved namespace, in the same operation.

The datastore layer knows no configuration; a layer above that keeps some (ACL entries, job
definitions) registers a hook. After a namespace move's renames and before its locks are
released, every hook gets the (old, new) path of each namespace that moved, descendants
included, and returns log lines describing what it rewrote. A failing hook does not undo the
move (the data has moved); its error is reported with the move's result.

Hooks are per process: an interrupted move completed by `recovery` calls the hooks that the
completing process has registered, so a server that registers its hooks before opening its
datastores completes the rewrite too. Hooks must be idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from chunkyard.datastore.datastore import Datastore
from chunkyard.names import BackupNamespace


class NamespaceReferenceHook(Protocol):
    def __call__(self, ds: Datastore,
                 moved: list[tuple[BackupNamespace, BackupNamespace]]) -> list[str]: ...


_HOOKS: list[NamespaceReferenceHook] = []


def register_reference_hook(hook: NamespaceReferenceHook) -> Callable[[], None]:
    """Register `hook`; returns a function that unregisters it."""
    _HOOKS.append(hook)

    def unregister() -> None:
        if hook in _HOOKS:
            _HOOKS.remove(hook)

    return unregister


def rewrite_references(ds: Datastore,
                       moved: list[tuple[BackupNamespace, BackupNamespace]]) -> list[str]:
    """Run every hook; returns their log lines, failures included as 'failed: ...' lines."""
    if not moved:
        return []
    log: list[str] = []
    for hook in list(_HOOKS):
        name = getattr(hook, "__name__", type(hook).__name__)
        try:
            log.extend(hook(ds, list(moved)))
        except Exception as e:  # a hook's bug must not hide that the data has moved
            log.append(f"failed: reference hook {name}: {e}")
    return log
