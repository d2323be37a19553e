"""``msadtalker serve``: the live server (microphone in over WebRTC, avatar video + voice out)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from msadtalker.errors import ConfigError
from streamer.build import StageFactory
from streamer.commands._options import (
    add_avatar_flags,
    add_config_flags,
    avatar_overrides,
    config_from_args,
    stage_factory_from_args,
)
from streamer.config import Config
from streamer.server import STATE, drain, make_app

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="live server: speak into the browser, the avatar speaks back (WebRTC)",
        description="Serve the publisher page (mic -> avatar), the viewer page and the "
        "WebRTC signalling endpoint.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    add_avatar_flags(parser)
    add_config_flags(parser, live=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"server.host": args.host, "server.port": args.port, **avatar_overrides(args)}
    config = config_from_args(args, overrides, live=True)
    stages = stage_factory_from_args(config, args)

    def announce(url: str) -> None:
        print(
            f"msadtalker live: open {url}/ (viewers: {url}/viewer?room=ID); Ctrl-C stops",
            flush=True,
        )

    run_async(serve(config, stages, announce))
    return 0


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when it is installed, asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def serve(
    config: Config,
    stages: StageFactory,
    announce: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[web.Application], None] | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT (or ``stop``), then drain and exit.

    ``on_start(app)`` runs before the port opens (the kiosk adds its local room there)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Signals only set a flag; the drain runs here, in order.
        loop.add_signal_handler(sig, stop.set)
    app = make_app(config, stages)
    if on_start is not None:
        on_start(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        try:
            await site.start()
        except OSError as exc:
            where = f"{config.server.host}:{config.server.port}"
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(f"cannot listen on {where}: {reason}") from None
        port = _bound_port(site, config.server.port)
        host = config.server.host
        shown = f"[{host}]" if ":" in host else host
        if announce is not None:
            announce(f"http://{shown}:{port}")
        log.info("serving on %s:%d", host, port)
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
