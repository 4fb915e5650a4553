"""Login rate limiting: slows password guessing without letting strangers lock users out.

PBS itself only delays failed requests by 3 s and leaves the rest to fail2ban; chunkyard
counts failures itself. The policy (defaults; all are constructor arguments):

* At most 5 failed logins per (source, user) in any 300 s sliding window. The 6th attempt
  in the window is refused before the password is even looked at, until the oldest of the
  5 failures is 300 s old. A successful login clears that pair's count.
* At most 50 failed logins per source across all user names in the same window, against
  spraying one password over many accounts. A success does not clear it, so one known
  account cannot be used to reset the counter.
* There is deliberately no per-user limit across sources: it would let anyone lock out
  any account (root@pam included) by failing on purpose.
* Sources are IP addresses; IPv6 addresses count per /64 (one host usually owns a whole
  /64), IPv4-mapped IPv6 addresses as IPv4. Anything else (a Unix socket name) counts as is.

Memory is bounded: expired entries are dropped as they are met, and beyond `max_tracked`
keys the least recently failed ones are forgotten. The clock is injectable (monotonic time
by default) so tests need no sleeping; every method is thread-safe.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from chunkyard.server.auth.errors import LoginRateLimited

MAX_FAILURES = 5
MAX_FAILURES_PER_SOURCE = 50
WINDOW_SECONDS = 300.0
MAX_TRACKED = 65536

_Key = tuple[str, str | None]  # (source, user); user None is the per-source aggregate


def normalize_source(source: str) -> str:
    """The unit failures are counted per: an IPv4 address or an IPv6 /64 network."""
    try:
        addr = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class LoginRateLimiter:
    """Counts failed logins per (source, user) and per source in a sliding window."""

    def __init__(self, *, max_failures: int = MAX_FAILURES,
                 max_failures_per_source: int = MAX_FAILURES_PER_SOURCE,
                 window: float = WINDOW_SECONDS, max_tracked: int = MAX_TRACKED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_failures < 1 or max_failures_per_source < 1 or window <= 0 or max_tracked < 2:
            raise ValueError("rate limits must be positive")
        self._limits = (max_failures, max_failures_per_source)
        self._window = window
        self._max_tracked = max_tracked
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[_Key, deque[float]] = OrderedDict()

    def _recent(self, key: _Key, now: float) -> deque[float] | None:
        """The failure times of `key` still inside the window (drops the key if none)."""
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, source: str, user: str) -> float:
        """Seconds until a login for `user` from `source` is allowed again (0: allowed now)."""
        src = normalize_source(source)
        with self._lock:
            now = self._clock()
            wait = 0.0
            for key, limit in (((src, user), self._limits[0]), ((src, None), self._limits[1])):
                times = self._recent(key, now)
                if times is not None and len(times) >= limit:
                    wait = max(wait, times[-limit] + self._window - now)
            return wait

    def check(self, source: str, user: str) -> None:
        """Raise LoginRateLimited if this login may not even be tried now."""
        wait = self.retry_after(source, user)
        if wait > 0:
            raise LoginRateLimited(
                f"too many failed logins for {user!r} from {normalize_source(source)}, "
                f"retry in {wait:.0f} s", retry_after=wait)

    def record_failure(self, source: str, user: str) -> None:
        src = normalize_source(source)
        with self._lock:
            now = self._clock()
            for key, limit in (((src, user), self._limits[0]), ((src, None), self._limits[1])):
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = deque(maxlen=limit)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self._max_tracked:
                self._failures.popitem(last=False)

    def record_success(self, source: str, user: str) -> None:
        """Forget the pair's failures (not the source's: see the module docstring)."""
        with self._lock:
            self._failures.pop((normalize_source(source), user), None)

    def tracked(self) -> int:
        """How many keys hold failures (for tests and metrics)."""
        with self._lock:
            return len(self._failures)
