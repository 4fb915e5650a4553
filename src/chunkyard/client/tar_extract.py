"""Extract a pax/ustar tar byte stream into a directory, streaming, without trusting it.

Member paths are confined to the target: absolute paths and `..` are refused, and no member is
written through a symbolic link (parents are checked with lstat, files opened O_NOFOLLOW).
Metadata (mode, owner when root, mtime) is applied after content; directories last, deepest
first, so their mtimes survive.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field

from chunkyard.client import tar_header as th
from chunkyard.errors import FormatError

_HEADER_FIELDS = {
    "name": (0, 100), "mode": (100, 108), "uid": (108, 116), "gid": (116, 124),
    "size": (124, 136), "mtime": (136, 148), "chksum": (148, 156), "linkname": (157, 257),
    "magic": (257, 263), "devmajor": (329, 337), "devminor": (337, 345), "prefix": (345, 500),
}


def _field(block: bytes, name: str) -> bytes:
    a, b = _HEADER_FIELDS[name]
    return block[a:b].split(b"\0", 1)[0]


def _number(block: bytes, name: str, offset: int) -> int:
    a, b = _HEADER_FIELDS[name]
    raw = block[a:b]
    if raw[:1] and raw[0] & 0x80:  # GNU base-256
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * (len(raw) - 1))) if raw[0] & 0x40 else value
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise FormatError(f"tar header at offset {offset}: bad number in field {name}") from None


def _parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise FormatError(f"tar pax header at offset {offset} is malformed") from None
        record = data[space + 1:pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise FormatError(f"tar pax header at offset {offset} is malformed")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


@dataclass
class _Pending:
    path: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    xattrs: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class ExtractStats:
    files: int = 0
    directories: int = 0
    links: int = 0
    other: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


class TarExtractor:
    """Feed the stream with `feed()`, call `finish()` at its end."""

    def __init__(self, target: str, *, same_owner: bool | None = None) -> None:
        os.makedirs(target, exist_ok=True)
        self._target = os.path.realpath(target)
        self._same_owner = os.geteuid() == 0 if same_owner is None else same_owner
        self._buf = bytearray()
        self._offset = 0
        self._need = th.BLOCK
        self._state = "header"
        self._pax: dict[str, bytes] = {}
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._meta_kind = ""
        self._meta_buf = bytearray()
        self._fd = -1
        self._remaining = 0
        self._pad = 0
        self._file_meta: _Pending | None = None
        self._dirs: list[_Pending] = []
        self._safe_dirs: set[str] = {self._target}
        self._zero_blocks = 0
        self._ended = False
        self.stats = ExtractStats()

    # -- stream state machine -------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._ended:
                return
            if self._state == "content":
                n = min(len(view), self._remaining)
                self._write_content(view[:n])
                view = view[n:]
                self._offset += n
                self._remaining -= n
                if self._remaining == 0:
                    self._close_file()
                    self._state, self._need = "skip", self._pad
                continue
            if self._state == "skip":
                n = min(len(view), self._need)
                view = view[n:]
                self._offset += n
                self._need -= n
                if self._need == 0:
                    self._state, self._need = "header", th.BLOCK
                continue
            n = min(len(view), self._need - len(self._buf))
            self._buf += view[:n]
            view = view[n:]
            self._offset += n
            if len(self._buf) < self._need:
                continue
            block = bytes(self._buf)
            self._buf.clear()
            if self._state == "header":
                self._header(block)
            else:  # "meta": pax or GNU long-name data
                self._meta(block)

    def _header(self, block: bytes) -> None:
        offset = self._offset - th.BLOCK
        if block == bytes(th.BLOCK):
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self._ended = True
            return
        self._zero_blocks = 0
        stored = _number(block, "chksum", offset)
        computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != computed:
            raise FormatError(f"tar header at offset {offset}: checksum mismatch")
        typeflag = block[156:157] or b"0"
        size = _number(block, "size", offset)
        if typeflag in (th.PAXTYPE, b"g", b"L", b"K"):
            if size > 16 * 1024 * 1024:
                raise FormatError(f"tar header at offset {offset}: extended header too large")
            self._meta_kind = typeflag.decode()
            self._state = "meta"
            self._need = size + th.padding(size)
            self._meta_size = size
            if self._need == 0:
                self._state, self._need = "header", th.BLOCK
            return
        self._member(block, typeflag, size, offset)

    def _meta(self, block: bytes) -> None:
        data = block[:self._meta_size]
        offset = self._offset - len(block)
        if self._meta_kind == "x":
            self._pax.update(_parse_pax(data, offset))
        elif self._meta_kind == "L":
            self._long_name = data.split(b"\0", 1)[0]
        elif self._meta_kind == "K":
            self._long_link = data.split(b"\0", 1)[0]
        self._state, self._need = "header", th.BLOCK

    # -- members ---------------------------------------------------------------------------
    def _member(self, block: bytes, typeflag: bytes, size: int, offset: int) -> None:
        pax, self._pax = self._pax, {}
        name = _field(block, "name")
        prefix = _field(block, "prefix") if _field(block, "magic").startswith(b"ustar") else b""
        raw_path = pax.get("path") or self._long_name or (prefix + b"/" + name if prefix else name)
        raw_link = pax.get("linkpath") or self._long_link or _field(block, "linkname")
        self._long_name = self._long_link = None
        if "size" in pax:
            size = int(pax["size"])
        mode = _number(block, "mode", offset) & 0o7777
        uid = int(pax["uid"]) if "uid" in pax else _number(block, "uid", offset)
        gid = int(pax["gid"]) if "gid" in pax else _number(block, "gid", offset)
        if "mtime" in pax:
            mtime_ns = _parse_pax_time(pax["mtime"], offset)
        else:
            mtime_ns = _number(block, "mtime", offset) * 1_000_000_000
        path = os.fsdecode(raw_path)
        rel = _safe_relative(path, offset)
        carries_data = typeflag in (th.REGTYPE, b"\0", b"7")
        if rel == "":
            if typeflag == th.DIRTYPE:
                self._dirs.append(_Pending(self._target, mode, uid, gid, mtime_ns, _xattrs(pax)))
            self._skip_data(size if carries_data else 0)
            return
        dest = os.path.join(self._target, rel)
        self._check_parents(dest, offset)
        meta = _Pending(dest, mode, uid, gid, mtime_ns, _xattrs(pax))
        if typeflag == th.DIRTYPE:
            self._make_dir(dest, offset)
            self._dirs.append(meta)
            self.stats.directories += 1
            self._skip_data(0)
        elif carries_data:
            self._remove_existing(dest)
            self._fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o600)
            self._file_meta = meta
            self.stats.files += 1
            if size == 0:
                self._close_file()
                self._skip_data(0)
            else:
                self._state, self._remaining, self._pad = "content", size, th.padding(size)
        elif typeflag == th.SYMTYPE:
            self._remove_existing(dest)
            os.symlink(os.fsdecode(raw_link), dest)
            self._apply_link_meta(meta)
            self.stats.links += 1
            self._skip_data(0)
        elif typeflag == th.LNKTYPE:
            source = os.path.join(self._target, _safe_relative(os.fsdecode(raw_link), offset))
            self._check_parents(source, offset)
            self._remove_existing(dest)
            os.link(source, dest, follow_symlinks=False)
            self.stats.links += 1
            self._skip_data(0)
        elif typeflag in (th.FIFOTYPE, th.CHRTYPE, th.BLKTYPE):
            self._make_special(dest, typeflag, mode, block, offset)
            self._apply_meta(meta, fd=None)
            self.stats.other += 1
            self._skip_data(0)
        else:
            self.stats.warnings.append(f"skipped {path!r}: unsupported tar type {typeflag!r}")
            self._skip_data(size)

    def _skip_data(self, size: int) -> None:
        total = size + th.padding(size)
        self._state, self._need = ("skip", total) if total else ("header", th.BLOCK)

    def _write_content(self, data: memoryview) -> None:
        while data:
            n = os.write(self._fd, data)
            data = data[n:]
            self.stats.bytes += n

    def _close_file(self) -> None:
        assert self._file_meta is not None
        try:
            self._apply_meta(self._file_meta, fd=self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._file_meta = None

    # -- filesystem helpers ------------------------------------------------------------
    def _check_parents(self, dest: str, offset: int) -> None:
        """Every parent of dest below the target must be a real directory, not a link."""
        parent = os.path.dirname(dest)
        missing: list[str] = []
        while parent not in self._safe_dirs:
            if len(parent) <= len(self._target):
                raise FormatError(f"tar member at offset {offset} escapes the target")
            try:
                st = os.lstat(parent)
            except FileNotFoundError:
                missing.append(parent)
                parent = os.path.dirname(parent)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise FormatError(
                    f"tar member at offset {offset} would be written through "
                    f"{parent!r}, which is not a directory")
            self._safe_dirs.add(parent)
            break
        for directory in reversed(missing):
            os.mkdir(directory, 0o755)
            self._safe_dirs.add(directory)

    def _make_dir(self, dest: str, offset: int) -> None:
        try:
            os.mkdir(dest, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(dest).st_mode):
                self._remove_existing(dest)
                os.mkdir(dest, 0o700)
        self._safe_dirs.add(dest)

    def _remove_existing(self, dest: str) -> None:
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise FormatError(f"cannot replace directory {dest!r} with a non-directory")
        os.unlink(dest)

    def _make_special(self, dest: str, typeflag: bytes, mode: int, block: bytes,
                      offset: int) -> None:
        self._remove_existing(dest)
        if typeflag == th.FIFOTYPE:
            os.mkfifo(dest, 0o600)
            return
        kind = stat.S_IFCHR if typeflag == th.CHRTYPE else stat.S_IFBLK
        device = os.makedev(_number(block, "devmajor", offset), _number(block, "devminor", offset))
        try:
            os.mknod(dest, kind | 0o600, device)
        except PermissionError:
            self.stats.warnings.append(f"skipped device {dest!r}: not permitted")

    def _apply_meta(self, meta: _Pending, fd: int | None) -> None:
        target: int | str = fd if fd is not None else meta.path
        if fd is None and not os.path.lexists(meta.path):
            return
        if self._same_owner:
            try:
                os.chown(target, meta.uid, meta.gid) if fd is not None else os.chown(
                    meta.path, meta.uid, meta.gid, follow_symlinks=False)
            except OSError as e:
                self.stats.warnings.append(f"cannot set owner of {meta.path!r}: {e.strerror}")
        os.chmod(target, meta.mode)
        for name, value in meta.xattrs:  # after chown, which would drop security.capability
            try:
                os.setxattr(target, name, value)
            except OSError as e:
                self.stats.warnings.append(
                    f"cannot set extended attribute {name!r} on {meta.path!r}: {e.strerror}")
        os.utime(target, ns=(meta.mtime_ns, meta.mtime_ns))

    def _apply_link_meta(self, meta: _Pending) -> None:
        if self._same_owner:
            try:
                os.chown(meta.path, meta.uid, meta.gid, follow_symlinks=False)
            except OSError as e:
                self.stats.warnings.append(f"cannot set owner of {meta.path!r}: {e.strerror}")
        with contextlib.suppress(NotImplementedError, OSError):
            os.utime(meta.path, ns=(meta.mtime_ns, meta.mtime_ns), follow_symlinks=False)

    def finish(self) -> ExtractStats:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            raise FormatError("tar stream ends inside a member's content")
        if self._state != "header" or self._buf:
            raise FormatError("tar stream ends inside a header")
        for meta in sorted(self._dirs, key=lambda m: m.path.count(os.sep), reverse=True):
            self._apply_meta(meta, fd=None)
        return self.stats

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _xattrs(pax: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [(key[len(th.XATTR_PREFIX):], value) for key, value in pax.items()
            if key.startswith(th.XATTR_PREFIX) and len(key) > len(th.XATTR_PREFIX)]


def _parse_pax_time(raw: bytes, offset: int) -> int:
    try:
        text = raw.decode("ascii")
        negative = text.startswith("-")
        whole, _, frac = text.lstrip("-").partition(".")
        ns = int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
    except ValueError:
        raise FormatError(f"tar pax header at offset {offset}: bad mtime") from None
    return -ns if negative else ns


def _safe_relative(path: str, offset: int) -> str:
    """`./a/b` -> `a/b`; refuses absolute paths and `..` (tar member must stay inside)."""
    if "\0" in path:
        raise FormatError(f"tar member at offset {offset} has a NUL in its name")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise FormatError(f"tar member {path!r} at offset {offset} escapes the target directory")
    return "/".join(parts)
