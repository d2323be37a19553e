"""What the live benches share: a ``msadtalker serve`` child process, and the figures of a
session the way the server reports them."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from typing import IO, Any

import aiohttp

log = logging.getLogger(__name__)

_URL = re.compile(r"(http://[^\s/]+)/")


class ServerProcess:
    """``msadtalker serve`` on a free loopback port, in its own process (its own event loop and
    its own share of the CPU, as in production). ``argv``: extra flags for ``serve``; ``env``:
    its environment (default: this process's); ``stderr``: where its log goes (a file);
    ``cwd``: its working directory (where relative paths such as recordings land)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        stderr: IO[bytes] | None = None,
        cwd: str | None = None,
    ) -> None:
        self._argv = argv
        self._env = env
        self._stderr = stderr
        self._cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> ServerProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamer.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *self._argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            env=self._env,
            cwd=self._cwd,
        )
        assert self._proc.stdout is not None
        line = (await asyncio.wait_for(self._proc.stdout.readline(), 120)).decode()
        match = _URL.search(line)
        if match is None:
            await self.__aexit__()
            raise RuntimeError(f"msadtalker serve did not start: {line!r}")
        self.url = match.group(1)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    async def __aexit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, all cores (Linux /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc): a ``serve --workers N`` parent and workers."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii") as f:
                parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = [pid]
    for member in tree:
        tree.extend(child for child, parent in parents.items() if parent == member)
    return tree


async def session_stats(http: aiohttp.ClientSession, url: str, session_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/sessions/{session_id}") as resp:
        if resp.status != 200:
            return {}
        return dict(await resp.json())
