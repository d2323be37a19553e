"""Per-client token buckets (streamer.server.ratelimit) on a scripted clock."""

from __future__ import annotations

import pytest

from streamer.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(10.0)  # one request per 10 s
    clock.now += 9.9
    assert limiter.take("a") is not None
    clock.now += 0.2
    assert limiter.take("a") is None


def test_clients_have_separate_budgets() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock())
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    assert limiter.take("b") is None


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=1, clock=clock)
    assert limiter.take("a") is None
    for _ in range(100):
        assert limiter.take("a") is not None
    clock.now += 1.0
    assert limiter.take("a") is None


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock(), max_clients=100)
    for i in range(10_000):
        limiter.take(f"client-{i}")
    assert len(limiter) == 100
    assert limiter.take("client-9999") is not None  # recently seen: still remembered


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(per_minute=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(per_minute=1, burst=0)
