"""The leak check (``leakcheck.py``) fails a test that leaves a task, a thread, a file
descriptor or an open peer connection behind, and names it; a clean test passes."""

from __future__ import annotations

import os

import leakcheck
import pytest

pytest_plugins = ["pytester"]

LEAKY = """
import asyncio
import os
import threading

from aiortc import RTCPeerConnection

STOP = threading.Event()
OPENED = []
PEERS = []


def test_clean():
    pass


def test_thread():
    # Ends by itself a little later (the outer test cannot reach this module once it ran).
    threading.Thread(target=STOP.wait, args=(2.0,), name="leaky-thread", daemon=True).start()


def test_fd():
    OPENED.append(os.open(os.devnull, os.O_RDONLY))


async def test_task():
    asyncio.get_running_loop().create_task(asyncio.sleep(60), name="leaky-task")


async def test_peer_connection():
    PEERS.append(RTCPeerConnection())


async def test_closed_peer_connection():
    pc = RTCPeerConnection()
    await pc.close()
    PEERS.append(pc)
"""


def test_leaks_are_reported_by_name(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leakcheck, "SETTLE_S", 0.2)
    before = leakcheck._open_fds()
    pytester.makepyfile(test_server_leaky=LEAKY)
    options = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
    result = pytester.runpytest_inprocess("-p", "leakcheck", *options)
    try:
        result.assert_outcomes(passed=6, errors=4)
        text = result.stdout.str()
        assert "left behind: thread 'leaky-thread'" in text
        assert "/dev/null" in text
        assert "task 'leaky-task'" in text
        assert "peer connection" in text and "(new)" in text
        assert "test_clean" not in text.split("short test summary")[-1]
    finally:
        for fd, target in leakcheck._open_fds().items():  # the inner test_fd's descriptor
            if target == os.devnull and fd not in before:
                os.close(fd)
