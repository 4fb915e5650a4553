"""`make demo`: a tour of the local client without a server, no configuration needed.

Creates (or reuses) a datastore under the given path, writes a small sample tree, backs it up
into the namespace `demo`, restores it and prints the restored tree and the comparison.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.names import Authid, BackupGroup, BackupNamespace, BackupType

SAMPLE = {
    "README.txt": "chunkyard demo tree\n" * 20,
    "etc/app.conf": "[server]\nport = 8007\nworkers = 4\n",
    "data/log.txt": "".join(f"2026-11-23T12:{i // 60:02d}:{i % 60:02d} event {i}\n"
                            for i in range(3000)),
    "data/nested/deeper/notes.md": "# notes\n\n- deduplication\n- namespaces\n",
}


def _write_sample(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    for rel, text in SAMPLE.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(os.path.join(root, "data", "random.bin"), "wb") as f:
        f.write(hashlib.shake_256(b"chunkyard").digest(1 << 20))
    os.symlink("etc/app.conf", os.path.join(root, "app.conf"))


def _tree_digest(root: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_demo(base: str) -> None:
    from rich.console import Console
    from rich.tree import Tree

    console = Console()
    store_path = os.path.join(base, "datastore")
    sample = os.path.join(base, "sample")
    restored = os.path.join(base, "restored")
    os.makedirs(base, exist_ok=True)
    if os.path.isdir(os.path.join(store_path, ".chunks")):
        ds = Datastore.open(store_path)
    else:
        console.print(f"creating datastore {store_path}")
        ds = Datastore.create(store_path)
    ns = BackupNamespace.parse("demo")
    if not ds.namespace_exists(ns):
        create_namespace(ds, ns)
    _write_sample(sample)
    group = BackupGroup(BackupType.HOST, "demo")
    last = ds.last_finished_snapshot(ns, group) if ds.group_exists(ns, group) else None
    when = max(int(time.time()), last.dir.time + 1 if last else 0)
    result = run_backup(ds, BackupRequest(
        namespace=ns, group=group, backup_time=when,
        archives=[ArchiveSpec.parse(f"root.tar:{sample}")], owner=Authid.parse("root@pam")))
    console.print(f"backed up {sample} as snapshot {result.snapshot} in namespace 'demo' "
                  f"({result.archives[0].size} bytes, {result.upload.count} chunks)")
    shutil.rmtree(restored, ignore_errors=True)
    run_restore(ds, RestoreRequest(namespace=ns, snapshot=result.snapshot, archive="root.tar",
                                   target=restored))
    tree = Tree(f"[bold]{restored}[/]")
    nodes = {restored: tree}
    for directory, dirs, files in os.walk(restored):
        dirs.sort()
        node = nodes[directory]
        for name in dirs:
            nodes[os.path.join(directory, name)] = node.add(f"[blue]{name}/[/]")
        for name in sorted(files):
            path = os.path.join(directory, name)
            label = f"{name} -> {os.readlink(path)}" if os.path.islink(path) else (
                f"{name} ({os.lstat(path).st_size} bytes)")
            node.add(label)
    console.print(tree)
    same = _tree_digest(sample) == _tree_digest(restored)
    console.print("restored tree is identical to the sample" if same
                  else "[red]restored tree differs from the sample[/]")
    if not same:
        raise SystemExit(1)
