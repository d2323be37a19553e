"""The run loop: bind, announce, serve until told to stop, drain, exit.

* ``serve``: one server process (``msadtalker serve``, the kiosk, a worker of
  ``serve --workers N``) until SIGTERM/SIGINT or ``stop``. Signals only set the stop flag;
  the drain then runs here, in order (stop accepting, flush every session into its sinks,
  close every peer), before the port closes.
* ``serve_worker``: worker ``I`` of ``serve --workers N`` (``streamer.server.supervisor``):
  ``serve`` on the shared port and on the internal socket the parent made for it, saying on
  stdout (one JSON line, ``tell_parent``) once it is ready; its stdin is the parent's lifeline:
  when it closes (the parent is gone, even SIGKILLed), the worker drains and exits.
* ``run_async``: the event loop (uvloop when installed).
* ``check_exposure``: a server without tokens (open: anyone may publish) listens on a
  loopback address only, unless ``server.insecure`` says the operator means it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from msadtalker.errors import ConfigError
from streamer.assembly import StageFactory
from streamer.config import Config
from streamer.server.app import make_app
from streamer.server.cluster import Cluster
from streamer.server.connections import ConnectionLimits, GuardedSite
from streamer.server.peers import drain
from streamer.server.state import STATE

log = logging.getLogger(__name__)
T = TypeVar("T")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """uvloop when it is installed, asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    else:
        return uvloop.run(main)


async def serve(
    config: Config,
    stages: StageFactory,
    announce: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[web.Application], None] | None = None,
    cluster: Cluster | None = None,
    internal_sock: socket.socket | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop``), then drain and return.

    ``announce(url)`` once the port is open. ``on_start(app)`` runs before the port opens
    (the kiosk adds its local room there). ``cluster``: one worker of several; the public
    port is shared (SO_REUSEPORT) and ``internal_sock`` (a listening loopback socket) takes
    the other workers' requests. A port that cannot be had is a ``ConfigError``."""
    check_exposure(config, warn=cluster is None)  # a worker's parent has warned already
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    app = make_app(config, stages, cluster=cluster)
    if on_start is not None:
        on_start(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        host, port = config.server.host, config.server.port
        reuse_port = True if cluster is not None else None
        # The public port has deadlines for slow requests and caps on connections; the
        # internal one only ever hears the other workers.
        limits = ConnectionLimits.of(config.server)
        site = GuardedSite(runner, host, port, limits, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
        bound = _bound_port(runner, port)  # before the internal site adds its address
        if internal_sock is not None:
            await web.SockSite(runner, internal_sock).start()
        shown = f"[{host}]" if ":" in host else host
        if announce is not None:
            announce(f"http://{shown}:{bound}")
        worker = f" (worker {cluster.index} of {len(cluster)})" if cluster is not None else ""
        log.info("serving on %s:%d%s", host, bound, worker)
        await stop.wait()
        log.info("draining %d sessions", len(app[STATE].peers))
        await drain(app[STATE])
    finally:
        await runner.cleanup()
        for sig in _STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def check_exposure(config: Config, warn: bool = True) -> None:
    """``ConfigError`` when an open server (no tokens, no secret) would listen beyond
    loopback without ``server.insecure``; with it, one WARNING (``warn``)."""
    host = config.server.host
    if not config.auth.open or is_loopback(host):
        return
    if not config.server.insecure:
        raise ConfigError(
            f"refusing to serve on {host or 'every address'} without tokens: anyone who can "
            "reach it could publish; set auth.publisher_tokens (or MSADTALKER_PUBLISHER_TOKENS) "
            "or auth.token_secret, or pass --insecure"
        )
    if warn:
        log.warning(
            "serving on %s without tokens (--insecure): anyone who can reach it may publish",
            host or "every address",
        )


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.x, ::1); an empty host is every address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that could resolve anywhere


def _bound_port(runner: web.AppRunner, fallback: int) -> int:
    """The port the first site listens on (port 0 resolved)."""
    for address in runner.addresses:
        return int(address[1])
    return fallback


async def serve_worker(
    config: Config, stages: StageFactory, cluster: Cluster, internal: socket.socket
) -> None:
    """Worker ``cluster.index`` of a ``serve --workers N`` parent (see the module docstring)."""
    stop = asyncio.Event()
    lifeline = await _watch_parent(stop)

    def ready(url: str) -> None:
        tell_parent({"ready": True, "worker": cluster.index, "url": url})

    try:
        await serve(config, stages, ready, stop=stop, cluster=cluster, internal_sock=internal)
    finally:
        if lifeline is not None:
            lifeline.close()


def tell_parent(message: dict[str, Any]) -> None:
    """One JSON line on stdout, the worker's control channel to its parent: ``{"ready":
    true, ...}`` or ``{"error": ..., "user_error": ...}`` (read by the supervisor)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Lifeline(asyncio.Protocol):
    """The parent's end of our stdin: when it closes, the parent is gone (even SIGKILLed)."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("the supervising process is gone; draining")
        self._stop.set()


async def _watch_parent(stop: asyncio.Event) -> asyncio.BaseTransport | None:
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        # asyncio's subprocess PIPE is a socketpair on some loops (uvloop), a pipe on others.
        is_pipe = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
    except (OSError, ValueError):
        is_pipe = False
    if not is_pipe:
        return None  # run by hand: nothing to watch
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: _Lifeline(stop), sys.stdin)
    return transport
