"""Deterministic pax/ustar headers: equal metadata gives equal bytes, so the metadata cache can
reuse unchanged parts of the previous archive stream without regenerating them."""

from __future__ import annotations

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)

REGTYPE = b"0"
LNKTYPE = b"1"
SYMTYPE = b"2"
CHRTYPE = b"3"
BLKTYPE = b"4"
DIRTYPE = b"5"
FIFOTYPE = b"6"
PAXTYPE = b"x"
XATTR_PREFIX = "SCHILY.xattr."

_MAX_OCTAL = {8: 8**7 - 1, 12: 8**11 - 1}


def padding(size: int) -> int:
    """Zero bytes that follow `size` bytes of content to fill the last 512-byte block."""
    return -size % BLOCK


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    n = len(body)
    length = n + len(str(n))
    if len(str(length)) != len(str(n)):
        length = n + len(str(length))
    return str(length).encode() + body


def _ustar_block(name: bytes, prefix: bytes, mode: int, uid: int, gid: int, size: int,
                 mtime: int, typeflag: bytes, linkname: bytes, uname: bytes, gname: bytes,
                 devmajor: int, devminor: int) -> bytes:
    parts = [
        name.ljust(100, b"\0"),
        _octal(mode & 0o7777, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
        b"        ",
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        uname.ljust(32, b"\0"),
        gname.ljust(32, b"\0"),
        _octal(devmajor, 8),
        _octal(devminor, 8),
        prefix.ljust(155, b"\0"),
        b"\0" * 12,
    ]
    block = bytearray(b"".join(parts))
    checksum = sum(block)
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def _split_name(path: bytes) -> tuple[bytes, bytes] | None:
    """ustar's prefix/name split, or None when the path needs a pax record."""
    if len(path) <= 100:
        return path, b""
    cut = path.rfind(b"/", 0, 156)
    while cut > 0:
        if len(path) - cut - 1 <= 100 and cut <= 155:
            return path[cut + 1:], path[:cut]
        cut = path.rfind(b"/", 0, cut)
    return None


def _fits(value: int, width: int) -> bool:
    return 0 <= value <= _MAX_OCTAL[width]


def build_header(path: str, typeflag: bytes, *, mode: int, uid: int, gid: int, size: int,
                 mtime_ns: int, linkname: str = "", uname: str = "", gname: str = "",
                 devmajor: int = 0, devminor: int = 0,
                 xattrs: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """The header blocks of one entry: an optional pax extended header, then the ustar block.

    Names are encoded with surrogateescape so undecodable file names survive byte-exact.
    Extended attributes (ACLs and capabilities are xattrs too) become `SCHILY.xattr.<name>`
    records, as GNU tar and star write them.
    """
    bpath = path.encode("utf-8", "surrogateescape")
    blink = linkname.encode("utf-8", "surrogateescape")
    records: list[bytes] = []
    binary = False
    for raw in (bpath, blink):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            binary = True
    if binary:
        records.append(_pax_record("hdrcharset", b"BINARY"))
    split = _split_name(bpath) if bpath.isascii() else None
    if split is None:
        records.append(_pax_record("path", bpath))
        split = (bpath[:100] if bpath.isascii() else b"pax-path", b"")
    if len(blink) > 100 or not blink.isascii():
        records.append(_pax_record("linkpath", blink))
        blink = b""
    seconds, nanos = divmod(abs(mtime_ns), 1_000_000_000)
    if mtime_ns < 0:
        records.append(_pax_record("mtime", b"-%d.%09d" % (seconds, nanos)))
        seconds = 0
    elif nanos or not _fits(seconds, 12):
        records.append(_pax_record("mtime", b"%d.%09d" % (seconds, nanos)))
    if not _fits(seconds, 12):
        seconds = 0
    if not _fits(size, 12):
        records.append(_pax_record("size", b"%d" % size))
    ustar_size = size if _fits(size, 12) else 0
    if not _fits(uid, 8):
        records.append(_pax_record("uid", b"%d" % uid))
    if not _fits(gid, 8):
        records.append(_pax_record("gid", b"%d" % gid))
    buname = uname.encode("utf-8", "surrogateescape")
    bgname = gname.encode("utf-8", "surrogateescape")
    if len(buname) > 32 or not buname.isascii():
        records.append(_pax_record("uname", buname))
        buname = b""
    if len(bgname) > 32 or not bgname.isascii():
        records.append(_pax_record("gname", bgname))
        bgname = b""
    for name, value in xattrs:
        records.append(_pax_record(XATTR_PREFIX + name, value))
    ustar = _ustar_block(
        split[0], split[1], mode, uid if _fits(uid, 8) else 0, gid if _fits(gid, 8) else 0,
        ustar_size, seconds, typeflag, blink, buname, bgname,
        devmajor if _fits(devmajor, 8) else 0, devminor if _fits(devminor, 8) else 0,
    )
    if not records:
        return ustar
    data = b"".join(records)
    base = bpath.rsplit(b"/", 1)[-1][:80] if bpath.isascii() else b"entry"
    pax = _ustar_block(b"PaxHeaders/" + base, b"", 0o644, 0, 0, len(data), seconds, PAXTYPE,
                       b"", b"", b"", 0, 0)
    return pax + data + b"\0" * padding(len(data)) + ustar
