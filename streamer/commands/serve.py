"""``msadtalker serve``: the live server (microphone in over WebRTC, avatar video + voice out).

``--workers N`` (``server.workers``) > 1: this process supervises N worker processes that
share the port (``streamer.supervisor``); each worker is this command with ``--worker I``
(hidden flags), a full server that forwards requests for other workers' ids to them
(``streamer.cluster``). ``--workers 1``, the default, is one process exactly as before.
"""

from __future__ import annotations

import argparse
import asyncio
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

from msadtalker.errors import ConfigError, InputError
from streamer.build import StageFactory
from streamer.cluster import Cluster
from streamer.commands._options import (
    add_avatar_flags,
    add_config_flags,
    avatar_overrides,
    config_from_args,
    stage_factory_from_args,
)
from streamer.config import Config
from streamer.server import STATE, drain, make_app
from streamer.supervisor import WorkerStartError, supervise

log = logging.getLogger(__name__)
T = TypeVar("T")
# Flags a worker does not inherit from the parent's command line (it gets its own).
_PARENT_ONLY = {"help", "host", "port", "workers", "worker", "worker_ports", "worker_fd"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="live server: speak into the browser, the avatar speaks back (WebRTC)",
        description="Serve the publisher page (mic -> avatar), the viewer page and the "
        "WebRTC signalling endpoint.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port, sessions spread over them (default 1; "
        "limits such as server.max_sessions are per worker)",
    )
    # A worker process of `serve --workers N` (set by the parent, not for people).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ports", help=argparse.SUPPRESS)
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    add_avatar_flags(parser)
    add_config_flags(parser, live=True)
    parser.set_defaults(run=run, serve_parser=parser)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.workers": args.workers,
        **avatar_overrides(args),
    }
    config = config_from_args(args, overrides, live=True)
    if args.worker is not None:
        return _run_worker(args, config)
    if config.server.workers > 1:
        return _run_parent(args, config)
    stages = stage_factory_from_args(config, args)
    run_async(serve(config, stages, _announce))
    return 0


def _announce(url: str) -> None:
    print(f"msadtalker live: open {url}/ (viewers: {url}/viewer?room=ID); Ctrl-C stops", flush=True)


def _run_parent(args: argparse.Namespace, config: Config) -> int:
    """The supervisor of ``server.workers`` workers (``streamer.supervisor``)."""
    server = config.server
    argv = ["-v"] * int(getattr(args, "verbose", 0) or 0) + ["serve", *_worker_flags(args)]
    # The config file may set server.workers without --workers: the workers must be told
    # they are workers, which --worker does; their own count is not used.
    try:
        return run_async(
            supervise(
                server.workers, server.host, server.port, argv, server.drain_timeout_s, _announce
            )
        )
    except WorkerStartError as exc:
        if exc.user_error:
            raise ConfigError(str(exc)) from None
        sys.stderr.write(f"msadtalker: error: {exc}\n")
        return 1


def _worker_flags(args: argparse.Namespace) -> list[str]:
    """The parent's own ``serve`` flags (avatar, renderer, config, lookahead, ...), as given."""
    flags: list[str] = []
    for action in args.serve_parser._actions:
        if not action.option_strings or action.dest in _PARENT_ONLY:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False:
            continue
        flag = action.option_strings[-1]
        flags += [flag] if action.nargs == 0 else [flag, str(value)]
    return flags


def _run_worker(args: argparse.Namespace, config: Config) -> int:
    """Worker ``--worker I`` of a ``serve --workers N`` parent: a full server on the shared
    port and its own internal port; says on stdout (one JSON line) that it is ready, or why
    it could not start."""
    try:
        ports = tuple(int(p) for p in str(args.worker_ports or "").split(",") if p)
        try:
            cluster = Cluster(args.worker, ports)
        except ValueError as exc:
            raise ConfigError(f"--worker {args.worker}: {exc}") from None
        if args.worker_fd is None:
            raise ConfigError("--worker needs --worker-fd (it is set by `serve --workers`)")
        internal = socket.socket(fileno=args.worker_fd)
        stages = stage_factory_from_args(config, args)
        run_async(_serve_worker(config, stages, cluster, internal))
    except InputError as exc:
        _tell_parent({"error": str(exc), "user_error": True})
        return 2
    return 0


def _tell_parent(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve_worker(
    config: Config, stages: StageFactory, cluster: Cluster, internal: socket.socket
) -> None:
    stop = asyncio.Event()
    lifeline = await _watch_parent(stop)

    def ready(url: str) -> None:
        _tell_parent({"ready": True, "worker": cluster.index, "url": url})

    try:
        await serve(config, stages, ready, stop=stop, cluster=cluster, internal_sock=internal)
    finally:
        if lifeline is not None:
            lifeline.close()


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
    """Run the server until SIGTERM/SIGINT (or ``stop``), then drain and exit.

    ``on_start(app)`` runs before the port opens (the kiosk adds its local room there).
    ``cluster``: one worker of several; the public port is shared (SO_REUSEPORT) and
    ``internal_sock`` (a listening loopback socket) takes the other workers' requests."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Signals only set a flag; the drain runs here, in order.
        loop.add_signal_handler(sig, stop.set)
    app = make_app(config, stages, cluster=cluster)
    if on_start is not None:
        on_start(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        reuse_port = True if cluster is not None else None
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:
            where = f"{config.server.host}:{config.server.port}"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"cannot listen on {where}: {reason}") from None
        if internal_sock is not None:
            await web.SockSite(runner, internal_sock).start()
        port = _bound_port(site, config.server.port)
        host = config.server.host
        shown = f"[{host}]" if ":" in host else host
        if announce is not None:
            announce(f"http://{shown}:{port}")
        worker = f" (worker {cluster.index} of {len(cluster)})" if cluster is not None else ""
        log.info("serving on %s:%d%s", host, port, worker)
        await stop.wait()
        log.info("draining %d sessions", len(app[STATE].peers))
        await drain(app)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _bound_port(site: web.TCPSite, fallback: int) -> int:
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return fallback
