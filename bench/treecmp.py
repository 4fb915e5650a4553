"""Byte-for-byte comparison of a restored tree against its source.

A benchmark number is worthless if the restore was wrong, so every restore is checked:
the same set of paths, the same kinds, and for files the same size and SHA-256. Hashing
runs in a thread pool (hashlib releases the GIL), and the source's summary is computed once.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# relative path -> ("dir", 0, "") | ("file", size, sha256 hex) | ("link", 0, target)
TreeSummary = dict[str, tuple[str, int, str]]

HASH_WORKERS = 4
READ_SIZE = 1 << 20


class TreeMismatch(Exception):
    """A restored tree differs from its source; the message lists the first differences."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_SIZE):
            h.update(block)
    return h.hexdigest()


def summarize(root: Path) -> TreeSummary:
    """Every entry below `root` (not `root` itself) with its kind, size and content hash."""
    entries: TreeSummary = {}
    files: list[tuple[str, str, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if os.path.islink(full):
                entries[rel] = ("link", 0, os.readlink(full))
                if name in dirnames:
                    dirnames.remove(name)  # os.walk does not follow it anyway; be explicit
            elif name in dirnames:
                entries[rel] = ("dir", 0, "")
            else:
                files.append((rel, full, st.st_size))
    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        digests = pool.map(_sha256, [full for _, full, _ in files])
        for (rel, _, size), digest in zip(files, digests, strict=True):
            entries[rel] = ("file", size, digest)
    return entries


def compare(source: TreeSummary, restored_root: Path, *, limit: int = 10) -> None:
    """Raise TreeMismatch unless `restored_root` holds exactly the tree `source` describes."""
    restored = summarize(restored_root)
    problems: list[str] = []
    for rel in sorted(source.keys() - restored.keys()):
        problems.append(f"missing {rel}")
    for rel in sorted(restored.keys() - source.keys()):
        problems.append(f"unexpected {rel}")
    for rel in sorted(source.keys() & restored.keys()):
        want, got = source[rel], restored[rel]
        if want != got:
            problems.append(
                f"differs {rel}: {want[0]} {want[1]} bytes, restored {got[0]} {got[1]} bytes"
                + (" (same size, other content)" if want[:2] == got[:2] else "")
            )
    if problems:
        more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
        raise TreeMismatch(
            f"restore in {restored_root} differs from the source in {len(problems)} entries: "
            + "; ".join(problems[:limit])
            + more
        )


def locate_restored_root(target: Path, source_root: Path, source: TreeSummary) -> Path:
    """Where in `target` a tool put the tree: directly, under the source's name, or under the
    source's absolute path (restic keeps absolute paths). Chosen by the top-level names."""
    top = {rel for rel in source if "/" not in rel}
    candidates = [
        target,
        target / source_root.name,
        target / str(source_root.resolve()).lstrip("/"),
    ]
    for cand in candidates:
        try:
            names = set(os.listdir(cand))
        except OSError:
            continue
        if names == top:
            return cand
    try:
        found = sorted(os.listdir(target))[:10]
    except OSError as exc:
        found = [f"<cannot list: {exc.strerror}>"]
    raise TreeMismatch(
        f"restore target {target} does not hold the source tree at any expected place "
        f"(top level has {found})"
    )
