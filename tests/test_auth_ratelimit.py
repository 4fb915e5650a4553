"""Login rate limiting with an injected clock: the sliding window, resets, the per-source
limit, address grouping, bounded memory and thread safety."""

from __future__ import annotations

import threading

import pytest

from chunkyard.server.auth.errors import LoginRateLimited
from chunkyard.server.auth.ratelimit import LoginRateLimiter, normalize_source


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, max_failures_per_source: int = 50,
            max_tracked: int = 65536) -> LoginRateLimiter:
    return LoginRateLimiter(clock=clock, max_failures_per_source=max_failures_per_source,
                            max_tracked=max_tracked)


def test_five_failures_in_five_minutes_lock_the_pair() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(5):  # at 1000, 1010, ..., 1040
        rl.check("192.0.2.1", "alice@pbs")
        rl.record_failure("192.0.2.1", "alice@pbs")
        clock.now += 10
    with pytest.raises(LoginRateLimited) as err:
        rl.check("192.0.2.1", "alice@pbs")
    # the first failure was at 1000, so the pair is free at 1300
    assert err.value.retry_after == pytest.approx(1300 - 1050)
    assert err.value.http_status == 429
    rl.check("192.0.2.2", "alice@pbs")  # other sources and users are not affected
    rl.check("192.0.2.1", "bob@pbs")
    clock.now = 1299.9
    assert rl.retry_after("192.0.2.1", "alice@pbs") > 0
    clock.now = 1300.0
    rl.check("192.0.2.1", "alice@pbs")  # the oldest failure left the window
    rl.record_failure("192.0.2.1", "alice@pbs")
    with pytest.raises(LoginRateLimited):  # but four recent ones remain: one more locks
        rl.check("192.0.2.1", "alice@pbs")


def test_failures_spread_out_never_lock() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(50):
        rl.check("192.0.2.1", "alice@pbs")
        rl.record_failure("192.0.2.1", "alice@pbs")
        clock.now += 61  # five per 305 s
    assert rl.retry_after("192.0.2.1", "alice@pbs") == 0


def test_success_clears_the_pair_but_not_the_source() -> None:
    clock = Clock()
    rl = limiter(clock, max_failures_per_source=7)
    for _ in range(4):
        rl.record_failure("192.0.2.1", "alice@pbs")
    rl.record_success("192.0.2.1", "alice@pbs")
    for _ in range(2):
        rl.record_failure("192.0.2.1", "alice@pbs")
    rl.check("192.0.2.1", "alice@pbs")  # 2 pair failures since the success, 6 from the source
    rl.record_failure("192.0.2.1", "carol@pbs")
    with pytest.raises(LoginRateLimited):  # the success did not reset the source's count
        rl.check("192.0.2.1", "dave@pbs")


def test_spraying_many_users_from_one_source_is_limited() -> None:
    clock = Clock()
    rl = limiter(clock)
    for i in range(50):
        rl.check("198.51.100.7", f"user{i}@pbs")
        rl.record_failure("198.51.100.7", f"user{i}@pbs")
    with pytest.raises(LoginRateLimited):
        rl.check("198.51.100.7", "fresh@pbs")
    rl.check("198.51.100.8", "fresh@pbs")


def test_sources_are_grouped_per_ipv6_64() -> None:
    assert normalize_source("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert normalize_source("2001:db8:1:2:bbbb::9%eth0") == "2001:db8:1:2::/64"
    assert normalize_source("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_source("192.0.2.1") == "192.0.2.1"
    assert normalize_source("unix:/run/socket") == "unix:/run/socket"
    clock = Clock()
    rl = limiter(clock)
    for i in range(5):
        rl.record_failure(f"2001:db8:1:2::{i + 1:x}", "alice@pbs")
    with pytest.raises(LoginRateLimited):
        rl.check("2001:db8:1:2:ffff::", "alice@pbs")
    rl.check("2001:db8:1:3::1", "alice@pbs")


def test_memory_is_bounded() -> None:
    clock = Clock()
    rl = limiter(clock, max_tracked=10)
    for i in range(100):
        rl.record_failure(f"10.0.0.{i}", "alice@pbs")
    assert rl.tracked() <= 10
    clock.now += 301
    assert rl.retry_after("10.0.0.99", "alice@pbs") == 0
    assert rl.tracked() <= 8  # expired entries go when met


def test_invalid_limits() -> None:
    with pytest.raises(ValueError):
        LoginRateLimiter(max_failures=0)
    with pytest.raises(ValueError):
        LoginRateLimiter(window=0)


def test_thread_safety() -> None:
    # exactly 8 * 250 failures: the source is locked only if none of them was lost
    rl = LoginRateLimiter(max_failures=1000, max_failures_per_source=2000)
    barrier = threading.Barrier(8)

    def hammer(n: int) -> None:
        barrier.wait()
        for i in range(250):
            rl.record_failure("192.0.2.1", f"u{(n * 250 + i) % 40}@pbs")
            rl.retry_after("192.0.2.1", "u1@pbs")
            if i % 50 == 0:
                rl.record_success("192.0.2.1", f"u{n}@pbs")

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rl.tracked() <= 41
    assert rl.retry_after("192.0.2.1", "new@pbs") > 0
    assert rl.retry_after("192.0.2.2", "new@pbs") == 0
