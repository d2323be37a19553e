"""Leak check of the server tests (a pytest plugin, loaded by ``conftest.py``).

A server that runs for hours must give back everything a session took. After each test of
the modules named in ``CHECKED`` (or marked ``leakcheck``), once its fixtures are torn down:

* no asyncio task it started is still pending (checked on the test's own loop, before the
  loop closes: pytest-asyncio would otherwise cancel such tasks silently);
* no thread it started is alive, no file descriptor it opened is open, and no aiortc
  ``RTCPeerConnection`` it made is still open (not ``closed``): checked once the loop is
  gone.

Threads and executors shut down asynchronously, so each check allows a bounded settle time
before it reports what is left, by name (task names and coroutines, thread names, fd
targets).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiortc import RTCPeerConnection

# Test modules checked (prefixes of their names): the server, its commands and its clients.
CHECKED = (
    "test_server_",
    "test_serve_",
    "test_kiosk",
    "test_offers",
    "test_limits",
    "test_auth",
    "test_access",
    "test_metrics",
    "test_lifecycle",
    "test_logs",
    "test_fuzz",
    "test_faults",
    "test_soak",
)
SETTLE_S = 5.0  # threads and executors wind down asynchronously; leaks do not
FD_DIR = "/proc/self/fd"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leakcheck: check that the test leaves no task, thread, fd or peer behind"
    )
    _warm_up_process_wide_resources()


def _warm_up_process_wide_resources() -> None:
    """Open now what libraries open once per process and keep (not a leak of a test's): the
    first ``uvloop.run`` leaves a pipe pair open for good (``serve`` runs on uvloop)."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.run(asyncio.sleep(0))


def _checked(request: pytest.FixtureRequest) -> bool:
    name = request.module.__name__.rsplit(".", 1)[-1]
    return name.startswith(CHECKED) or request.node.get_closest_marker("leakcheck") is not None


def _open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return fds  # no /proc: nothing to compare
    for name in names:
        try:
            fds[int(name)] = os.readlink(f"{FD_DIR}/{name}")
        except OSError:
            continue  # the listing's own fd, closed meanwhile
    return fds


@dataclass
class _Baseline:
    threads: set[int]
    fds: dict[int, str]
    peers: weakref.WeakSet[RTCPeerConnection]

    def leaks(self) -> list[str]:
        found = [
            f"thread {t.name!r}"
            for t in threading.enumerate()
            if t.ident not in self.threads and t.is_alive()
        ]
        found += [
            f"fd {fd} -> {target}"
            for fd, target in _open_fds().items()
            if self.fds.get(fd) != target
        ]
        found += [
            f"peer connection {id(pc):#x} ({pc.connectionState})"
            for pc in list(self.peers)
            if pc.connectionState != "closed"
        ]
        return found


def _settled(leaks: Callable[[], list[str]]) -> list[str]:
    """What ``leaks()`` still reports after up to ``SETTLE_S`` (polled: no event exists)."""
    deadline = time.monotonic() + SETTLE_S
    found = leaks()
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = leaks()
    return found


@pytest.fixture(autouse=True)
def _leak_baseline(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_Baseline | None]:
    if not _checked(request):
        yield None
        return
    peers: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()
    original = RTCPeerConnection.__init__

    def tracked(self: RTCPeerConnection, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        peers.add(self)

    monkeypatch.setattr(RTCPeerConnection, "__init__", tracked)
    baseline = _Baseline({t.ident for t in threading.enumerate() if t.ident}, _open_fds(), peers)
    yield baseline
    leaks = _settled(baseline.leaks)
    if leaks:
        pytest.fail(f"{request.node.nodeid} left behind: {'; '.join(leaks)}", pytrace=False)


@pytest.fixture(autouse=True)
async def _no_tasks_left(
    request: pytest.FixtureRequest, _leak_baseline: _Baseline | None
) -> AsyncIterator[None]:
    if _leak_baseline is None:
        yield
        return
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t not in before and t is not current]

    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    # Tasks that end on their own within the settle time are no leak (a finishing one may
    # start another: wait again, within the same deadline).
    while (left := pending()) and loop.time() < deadline:
        await asyncio.wait(left, timeout=deadline - loop.time())
    if left:
        names = "; ".join(f"task {t.get_name()!r} ({t.get_coro()!r})" for t in left)
        pytest.fail(f"{request.node.nodeid} left behind: {names}", pytrace=False)
