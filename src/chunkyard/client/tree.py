"""Walk a directory tree in a deterministic order and describe each entry as a tar member."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from chunkyard.client import tar_header as th
from chunkyard.errors import ChunkyardError

# The fields of lstat that the header or the content depend on; equal tuples mean the
# previous stream's bytes for this entry can be reused (as restic and borg decide).
Fingerprint = tuple[int, int, int, int, int, int, int, int, int, str, str, str]


@lru_cache(maxsize=4096)
def _uname(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def _gname(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def open_regular(path: str) -> int:
    """Open a file to archive its content: never through a symlink, never blocking on a FIFO
    that replaced the file since it was listed; OSError unless it is still a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "no longer a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    """Extended attributes of `path` (not following links), sorted; none where unsupported.

    Changing one changes the inode's ctime, which the fingerprint covers."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out: list[tuple[str, bytes]] = []
    for name in sorted(names):
        try:
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(out)


@dataclass(slots=True)
class TreeEntry:
    """One archive member: its path inside the archive, where to read it, and its lstat."""

    path: str
    source: str
    st: os.stat_result
    typeflag: bytes
    linkname: str = ""

    @property
    def content_size(self) -> int:
        return self.st.st_size if self.typeflag == th.REGTYPE else 0

    def fingerprint(self) -> Fingerprint:
        st = self.st
        return (st.st_mode, st.st_uid, st.st_gid, self.content_size, st.st_mtime_ns,
                st.st_ctime_ns, st.st_ino, st.st_dev, st.st_rdev, self.linkname,
                _uname(st.st_uid), _gname(st.st_gid))

    def header(self) -> bytes:
        st = self.st
        rdev = st.st_rdev if self.typeflag in (th.CHRTYPE, th.BLKTYPE) else 0
        return th.build_header(
            self.path, self.typeflag, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
            gid=st.st_gid, size=self.content_size, mtime_ns=st.st_mtime_ns,
            linkname=self.linkname, uname=_uname(st.st_uid), gname=_gname(st.st_gid),
            devmajor=os.major(rdev) if rdev else 0, devminor=os.minor(rdev) if rdev else 0,
            xattrs=read_xattrs(self.source),
        )


class TreeWalker:
    """Depth-first, names sorted bytewise, directory before its contents; skips sockets.

    Hard links: the first path of an inode is stored as a file, later ones as links to it.
    Unreadable directories are reported through `warnings` and skipped, as tar does.
    """

    def __init__(self, root: str) -> None:
        try:
            st = os.lstat(root)
        except OSError as e:
            raise ChunkyardError(f"cannot read {root!r}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ChunkyardError(f"{root!r} is not a directory")
        self.root = root
        self.root_st = st
        self.warnings: list[str] = []
        self._inodes: dict[tuple[int, int], str] = {}

    def __iter__(self) -> Iterator[TreeEntry]:
        yield TreeEntry("./", self.root, self.root_st, th.DIRTYPE)
        # Pre-order with an explicit stack: nested generators would cost O(depth) per entry.
        # Entries are classified in stream order, so a hard link always follows its target.
        stack = [iter(self._children(self.root, "."))]
        while stack:
            for path, source, st in stack[-1]:
                entry = self._classify(path, source, st)
                if entry is None:
                    continue
                yield entry
                if entry.typeflag == th.DIRTYPE:
                    stack.append(iter(self._children(source, path)))
                    break
            else:
                stack.pop()

    def _classify(self, path: str, source: str, st: os.stat_result) -> TreeEntry | None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = self._inodes.get(key)
                if first is not None:
                    return TreeEntry(path, source, st, th.LNKTYPE, first)
                self._inodes[key] = path
            return TreeEntry(path, source, st, th.REGTYPE)
        if stat.S_ISDIR(mode):
            return TreeEntry(path + "/", source, st, th.DIRTYPE)
        if stat.S_ISLNK(mode):
            try:
                target = os.readlink(source)
            except OSError as e:
                self.warnings.append(f"cannot read link {source!r}: {e.strerror}")
                return None
            return TreeEntry(path, source, st, th.SYMTYPE, target)
        if stat.S_ISFIFO(mode):
            return TreeEntry(path, source, st, th.FIFOTYPE)
        if stat.S_ISCHR(mode):
            return TreeEntry(path, source, st, th.CHRTYPE)
        if stat.S_ISBLK(mode):
            return TreeEntry(path, source, st, th.BLKTYPE)
        return None  # sockets and doors are not archived, like tar

    def _children(self, directory: str,
                  prefix: str) -> list[tuple[str, str, os.stat_result]]:
        try:
            with os.scandir(directory) as it:
                names = sorted((e.name for e in it), key=os.fsencode)
        except OSError as e:
            self.warnings.append(f"cannot read directory {directory!r}: {e.strerror}")
            return []
        children: list[tuple[str, str, os.stat_result]] = []
        for name in names:
            source = f"{directory}/{name}"
            try:
                children.append((f"{prefix}/{name}", source, os.lstat(source)))
            except OSError as e:
                self.warnings.append(f"cannot stat {source!r}: {e.strerror}")
        return children


def start_size_estimate(root: str, report: Callable[[int], None]) -> threading.Thread:
    """Sum the tree's sizes on a background thread and report the archive size it implies,
    so a first backup's progress bar can show an ETA (restic scans the same way)."""

    def scan() -> None:
        total = 2 * th.BLOCK
        linked: set[tuple[int, int]] = set()  # hard links are stored once
        stack = [root]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        total += 2 * th.BLOCK  # header, usually with a pax record
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            elif entry.is_file(follow_symlinks=False):
                                st = entry.stat(follow_symlinks=False)
                                if st.st_nlink > 1:
                                    if (st.st_dev, st.st_ino) in linked:
                                        continue
                                    linked.add((st.st_dev, st.st_ino))
                                total += st.st_size + th.padding(st.st_size)
                        except OSError:
                            continue
            except OSError:
                continue
        report(total)

    thread = threading.Thread(target=scan, name="size-estimate", daemon=True)
    thread.start()
    return thread
