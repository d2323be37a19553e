"""``msadtalker kiosk``: the local microphone drives the avatar, shown on this machine.

The same live session as the server (same pipeline, same real-time clock), fed from
``sounddevice`` instead of WebRTC. The avatar is shown in an OpenCV window when OpenCV has a
GUI and a display is available; otherwise (headless, or ``--no-window``) the server runs on
loopback and the kiosk room can be watched at ``/viewer?room=kiosk``. Both can be on at once.
The kiosk is always one process (``server.workers`` does not apply).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable

import numpy as np
from aiohttp import web

from streamer.assembly import StageFactory
from streamer.clock import RealtimeClock
from streamer.commands._options import (
    add_avatar_flags,
    add_config_flags,
    avatar_overrides,
    config_from_args,
    stage_factory_from_args,
)
from streamer.config import Config
from streamer.fanout import Subscription
from streamer.io.mic import MicSource, list_input_devices
from streamer.server.peers import add_local_publisher
from streamer.server.run import run_async, serve
from streamer.server.state import STATE
from streamer.session import LiveSession

log = logging.getLogger(__name__)

KIOSK_ROOM = "kiosk"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "kiosk",
        help="local microphone -> avatar on this machine (window, or viewer page on loopback)",
        description="Drive the avatar from a local microphone and show it locally.",
    )
    parser.add_argument(
        "--device",
        metavar="N",
        help="input device index or name (default: the system default; see --list-devices)",
    )
    parser.add_argument(
        "--list-devices", action="store_true", help="list the input devices and exit"
    )
    parser.add_argument(
        "--no-window",
        action="store_true",
        help="do not open a window even if a display is available",
    )
    parser.add_argument(
        "--port", type=int, help="port of the loopback viewer page (default 8080; 0 = any)"
    )
    add_avatar_flags(parser)
    add_config_flags(parser, live=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        for index, name, rate in list_input_devices():
            print(f"{index:3d}  {name}  ({rate:.0f} Hz)")
        return 0
    overrides = {"server.host": "127.0.0.1", "server.port": args.port, **avatar_overrides(args)}
    config = config_from_args(args, overrides, live=True)
    if config.server.workers > 1:
        # One microphone, one session, one machine: nothing to spread over processes.
        log.warning(
            "kiosk runs in one process; server.workers = %d is ignored", config.server.workers
        )
    device: int | str | None = args.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    stages = stage_factory_from_args(config, args, lookahead_ms=config.server.lookahead_ms)
    window = not args.no_window and has_display()

    def announce(url: str) -> None:
        print(
            f"msadtalker kiosk: watch at {url}/viewer?room={KIOSK_ROOM}; Ctrl-C stops", flush=True
        )

    run_async(run_kiosk(config, stages, device, window=window, announce=announce))
    return 0


async def run_kiosk(
    config: Config,
    stages: StageFactory,
    device: int | str | None,
    window: bool = False,
    announce: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Mic -> session -> (window and) the loopback server until SIGINT/SIGTERM or ``stop``."""
    session = LiveSession(stages(), RealtimeClock(), config.server, session_id=KIOSK_ROOM)
    mic = MicSource(session.feed, device)
    await mic.start()
    shower = CvWindow(session.subscribe("window")) if window else None
    session.start()

    def publish(app: web.Application) -> None:
        add_local_publisher(app[STATE], session, KIOSK_ROOM)

    try:
        await serve(config, stages, announce, stop=stop, on_start=publish)
    finally:
        await mic.aclose()
        if shower is not None:
            await shower.aclose()
        await session.aclose()


def has_display() -> bool:
    """A display to open a window on, and an OpenCV built with a GUI."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2

    return "GUI:                           NONE" not in cv2.getBuildInformation()


class CvWindow:
    """Shows a subscription's frames in an OpenCV window (a thread owns the window)."""

    def __init__(self, subscription: Subscription, title: str = "msadtalker") -> None:
        self._sub = subscription
        self._frames: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._show, args=(title,), daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self._forward(), name="kiosk-window")

    async def _forward(self) -> None:
        while (frame := await self._sub.get()) is not None:
            try:
                self._frames.put_nowait(frame.image)
            except queue.Full:
                pass  # the window shows the newest frames it can; the session never waits
        await asyncio.to_thread(self._frames.put, None)

    def _show(self, title: str) -> None:
        import cv2

        while (image := self._frames.get()) is not None:
            cv2.imshow(title, image[..., ::-1])
            cv2.waitKey(1)
        cv2.destroyWindow(title)

    async def aclose(self) -> None:
        self._sub.close()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._thread.join, 2.0)
