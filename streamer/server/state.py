"""What a running server holds: ``ServerState`` (one per app, under the typed key ``STATE``)
and one ``Peer`` per connection. Nothing is module-global: two apps in one process (tests)
share nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection

from streamer.assembly import StageFactory
from streamer.clock import Clock
from streamer.config import Config
from streamer.fanout import Subscription
from streamer.io.aiortc_workarounds import resolve_loopback_mode
from streamer.server.cluster import Cluster, Forwarder
from streamer.server.offers import Role
from streamer.server.rooms import Room, RoomRegistry
from streamer.session import LiveSession


def keep_task(tasks: set[asyncio.Task[Any]], coro: Awaitable[Any], name: str) -> None:
    """Start ``coro`` as a task held in ``tasks`` until it is done (so it can be cancelled)."""
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    task.set_name(name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@dataclass
class Peer:
    """One peer connection: a publisher (owns the room's session) or a viewer. A local
    publisher (the kiosk's microphone) has no peer connection."""

    id: str
    role: Role
    room: Room[Peer]
    pc: RTCPeerConnection | None
    session: LiveSession
    subscriptions: list[Subscription] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        keep_task(self.tasks, coro, f"{name}-{self.id}")


class ServerState:
    """Everything the running server holds; one per app."""

    def __init__(
        self,
        config: Config,
        stage_factory: StageFactory,
        clock_factory: Callable[[], Clock],
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self.server = config.server
        self.stage_factory = stage_factory
        self.clock_factory = clock_factory
        self.cluster = cluster
        self.forwarder = (
            Forwarder(cluster, offer_timeout_s=config.server.connect_timeout_s)
            if cluster is not None
            else None
        )
        self.id_prefix = cluster.prefix if cluster is not None else ""
        self.peers: dict[str, Peer] = {}
        self.rooms: RoomRegistry[Peer] = RoomRegistry(self.id_prefix)
        self.negotiating = 0
        self.placing = 0  # offers whose worker is being chosen (``cluster``), counted as load
        self.draining = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loopback = resolve_loopback_mode(self.server.ice_loopback, self.server.host)
        self.poster: asyncio.Future[bytes] | None = None  # JPEG of the avatar at rest

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        keep_task(self.tasks, coro, name)

    @property
    def load(self) -> int:
        return len(self.peers) + self.negotiating + self.placing

    @property
    def full(self) -> bool:
        return self.load >= self.server.max_sessions


STATE = web.AppKey("state", ServerState)
