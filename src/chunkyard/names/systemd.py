"""systemd's unit-name escaping, which PBS uses for task worker ids and lock file names."""

from __future__ import annotations

from chunkyard.errors import InvalidName

_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.")
_HEX = "0123456789abcdefABCDEF"


def escape_unit(text: str) -> str:
    """systemd unit-name escaping (`systemd-escape`): '/' becomes '-', bytes outside
    [A-Za-z0-9_.] (and a leading '.') become `\\xNN`. PBS escapes task worker ids and lock
    file names this way."""
    out: list[str] = []
    for i, b in enumerate(text.encode("utf-8")):
        if b == 0x2F:
            out.append("-")
        elif b in _KEEP and not (i == 0 and b == 0x2E):
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def unescape_unit(text: str) -> str:
    """The inverse of `escape_unit`; InvalidName if malformed."""
    data = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x5C:  # backslash
            seq = raw[i:i + 4].decode("ascii", "replace")
            if len(seq) < 4 or seq[1] != "x" or seq[2] not in _HEX or seq[3] not in _HEX:
                raise InvalidName(f"escaped name {text!r} has an invalid escape sequence")
            data.append(int(seq[2:4], 16))
            i += 4
        elif b == 0x2D:  # '-'
            data.append(0x2F)
            i += 1
        else:
            data.append(b)
            i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"escaped name {text!r} does not decode to UTF-8") from None
