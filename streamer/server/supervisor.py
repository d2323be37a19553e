"""The parent of ``msadtalker serve --workers N``: starts N worker processes, watches them,
passes SIGTERM/SIGINT on, restarts nothing.

Each worker is ``python -m streamer.cli serve --worker I ...`` with the parent's flags: it
builds its config and stages exactly as a single-process server would (nothing is pickled;
the avatar is prepared in every worker, in parallel), and a worker is the same program one
can run and debug alone. What the parent sets up before spawning:

* the public port: probed with a plain bind (taken by anyone, including another reuse-port
  group of ours -> one clear line), then held by a bound, never listening SO_REUSEPORT socket
  until the end, so the port stays ours (port 0 is resolved here, once, for all workers) and
  no connection is ever queued on the parent;
* one listening loopback socket per worker on an ephemeral port; worker ``I`` inherits its own
  (its file descriptor), every worker is told all the ports. Binding here rather than in the
  workers means no port can be taken between choosing it and using it;
* a lifeline: each worker's stdin is a pipe from the parent; a worker whose parent vanished
  (even SIGKILLed) sees end-of-file, drains and exits;
* the hop secret: one random value per run in every worker's environment (never on a command
  line), which requests between workers carry (``streamer.server.cluster``).

A worker says on stdout (one JSON line) that it is ready, or why it could not start. The URL
is printed once all are ready. A worker that fails to start stops the others: one line, exit
code 2 for a user's mistake (port in use, a bad avatar), 1 otherwise. A worker that dies
later is logged (pid, exit status) and not replaced; the others go on serving (their sessions
are not cut because of another process's crash); its sessions, rooms and named rooms hashed
to it are gone (their requests get a JSON 503). The parent exits once no worker is left, and
its exit code is 1 whenever a worker died during the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msadtalker.errors import ConfigError
from streamer.server.cluster import HOP_SECRET_ENV

log = logging.getLogger(__name__)

# SIGTERM -> drained and exited: the workers' drain_s plus this for closing and exit.
EXIT_MARGIN_S = 15.0


class WorkerStartError(Exception):
    """A worker could not start; ``user_error``: the user's to fix (exit code 2)."""

    def __init__(self, message: str, user_error: bool) -> None:
        super().__init__(message)
        self.user_error = user_error


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    ready: asyncio.Future[dict[str, Any]]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    expected_exit: bool = False

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


def reserve_port(host: str, port: int) -> tuple[int, list[socket.socket]]:
    """Check that ``host:port`` is free and hold it for a reuse-port group: (the port, the
    holding sockets). Port 0 becomes one free port. ``ConfigError`` when it cannot be had."""
    where = f"{host}:{port}"
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers needs SO_REUSEPORT, which this system lacks (use Linux)")
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    held: list[socket.socket] = []
    chosen = port
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            address = (address[0], chosen, *address[2:])
            # A plain bind (SO_REUSEADDR, as aiohttp does, so TIME_WAIT does not count) fails
            # for any listener there, reuse-port groups included: a second `serve --workers`
            # on the same port must not silently join this one's group.
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
                chosen = int(probe.getsockname()[1])
            holder = socket.socket(family, kind, proto)
            held.append(holder)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            holder.bind((address[0], chosen, *address[2:]))
    except OSError as exc:
        for sock in held:
            sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {where}: {reason}") from None
    return chosen, held


def internal_sockets(count: int) -> list[socket.socket]:
    """One listening loopback socket per worker, each on an ephemeral port."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        socks.append(sock)
    return socks


async def supervise(
    count: int,
    host: str,
    port: int,
    worker_argv: Sequence[str],
    drain_s: float,
    announce: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``count`` workers on ``host:port`` until SIGTERM/SIGINT (or ``stop``); the exit code.

    ``worker_argv``: the ``msadtalker`` arguments every worker gets before its own
    (``[-v...] serve FLAGS``). Raises ``WorkerStartError`` / ``ConfigError`` when not all of
    them start."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port, held = reserve_port(host, port)
    workers: list[Worker] = []
    try:
        internal = internal_sockets(count)
        hop_secret = secrets.token_urlsafe(32)
        try:
            ports = ",".join(str(s.getsockname()[1]) for s in internal)
            for index, sock in enumerate(internal):
                workers.append(
                    await _spawn(index, sock, host, port, ports, worker_argv, hop_secret)
                )
        finally:
            for sock in internal:
                sock.close()  # the workers have their copies; a dead worker's port refuses
        await _wait_ready(workers, stop)
        if stop.is_set():
            await _stop_all(workers, drain_s)
            return 0
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        log.info("%d workers serving on %s", count, url)
        if announce is not None:
            announce(url)
        died = await _watch(workers, stop)
        clean = await _stop_all(workers, drain_s)
        return 0 if clean and not died else 1
    except BaseException:
        await _stop_all(workers, drain_s)
        raise
    finally:
        for sock in held:
            sock.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _spawn(
    index: int,
    sock: socket.socket,
    host: str,
    port: int,
    ports: str,
    worker_argv: Sequence[str],
    hop_secret: str,
) -> Worker:
    fd = sock.fileno()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli",
        *worker_argv,
        "--host",
        host,
        "--port",
        str(port),
        "--worker",
        str(index),
        "--worker-ports",
        ports,
        "--worker-fd",
        str(fd),
        stdin=asyncio.subprocess.PIPE,  # the lifeline: never written, closed when we go
        stdout=asyncio.subprocess.PIPE,  # the control line; stderr (the logs) is ours
        pass_fds=(fd,),
        env={**os.environ, HOP_SECRET_ENV: hop_secret},
        # Signals come from the parent only (a terminal's Ctrl-C reaches the parent, which
        # passes it on once), so every worker drains exactly once.
        start_new_session=True,
    )
    loop = asyncio.get_running_loop()
    worker = Worker(index, proc, loop.create_future())
    task = asyncio.create_task(_read_control(worker), name=f"worker-{index}-control")
    worker.tasks.add(task)
    task.add_done_callback(worker.tasks.discard)
    log.info("worker %d started (pid %d)", index, proc.pid)
    return worker


async def _read_control(worker: Worker) -> None:
    """The worker's stdout: its first JSON line settles ``ready``; anything else is logged."""
    stream = worker.proc.stdout
    assert stream is not None
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").strip()
        message: object = None
        with contextlib.suppress(ValueError):
            message = json.loads(text)
        if isinstance(message, dict) and not worker.ready.done():
            worker.ready.set_result(message)
        elif text:
            log.info("worker %d: %s", worker.index, text)
    if not worker.ready.done():
        code = await worker.proc.wait()
        worker.ready.set_result({"exit": code})


async def _wait_ready(workers: list[Worker], stop: asyncio.Event) -> None:
    """Until every worker is ready (or ``stop``); the first failure raises."""
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: dict[asyncio.Future[Any], Worker] = {w.ready: w for w in workers}
    try:
        while waiting:
            done, _ = await asyncio.wait({stopping, *waiting}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return
            for future in done:
                worker = waiting.pop(future)
                _check_ready(worker, future.result())
    finally:
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)


def _check_ready(worker: Worker, message: dict[str, Any]) -> None:
    if message.get("ready"):
        log.info("worker %d ready (pid %d)", worker.index, worker.proc.pid)
        return
    if "error" in message:
        raise WorkerStartError(str(message["error"]), user_error=bool(message.get("user_error")))
    code = message.get("exit")
    raise WorkerStartError(
        f"worker {worker.index} exited ({_describe_exit(code)}) before it was ready "
        "(its log is above)",
        user_error=False,
    )


async def _watch(workers: list[Worker], stop: asyncio.Event) -> bool:
    """Until ``stop`` or no worker is left; whether a worker died meanwhile."""
    died = False
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    exits: dict[asyncio.Future[Any], Worker] = {
        asyncio.ensure_future(w.proc.wait()): w for w in workers
    }
    try:
        while exits:
            done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return died
            for task in done:
                worker = exits.pop(task)
                died = True
                left = sum(w.running for w in workers)
                log.error(
                    "worker %d (pid %d) died (%s); its sessions and rooms are gone and it is "
                    "not restarted; %d of %d workers still serve",
                    worker.index,
                    worker.proc.pid,
                    _describe_exit(worker.proc.returncode),
                    left,
                    len(workers),
                )
        log.error("no worker left; exiting")
        return died
    finally:
        for task in (stopping, *exits):
            task.cancel()
        await asyncio.gather(stopping, *exits, return_exceptions=True)


async def _stop_all(workers: list[Worker], drain_s: float) -> bool:
    """SIGTERM to every running worker, wait for their drain (SIGKILL past the deadline);
    whether all of them that were asked to stop exited cleanly."""
    asked = [w for w in workers if w.running]
    for worker in asked:
        worker.expected_exit = True
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signal.SIGTERM)
    clean = True
    deadline = drain_s + EXIT_MARGIN_S
    for worker in asked:
        try:
            code = await asyncio.wait_for(worker.proc.wait(), deadline)
        except TimeoutError:
            log.error("worker %d did not exit in %.0f s; killing it", worker.index, deadline)
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            code = await worker.proc.wait()
        # Killed by our SIGTERM before it could install its handler (still starting): fine.
        if code not in (0, -signal.SIGTERM):
            log.error("worker %d exited (%s) while stopping", worker.index, _describe_exit(code))
            clean = False
    for worker in workers:
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
        tasks = list(worker.tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
    return clean


def _describe_exit(code: object) -> str:
    if isinstance(code, int) and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
