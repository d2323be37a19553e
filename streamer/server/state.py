"""What a running server holds: ``ServerState`` (one per app, under the typed key ``STATE``)
and one ``Peer`` per connection. Nothing is module-global: two apps in one process (tests)
share nothing."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection

from streamer.assembly import StageFactory
from streamer.broadcast.room_outputs import RoomOutputs
from streamer.clock import Clock
from streamer.config import Config
from streamer.fanout import Subscription
from streamer.io.aiortc_workarounds import resolve_loopback_mode
from streamer.logs import context_with
from streamer.server.auth import OPEN, Authenticator
from streamer.server.clients import ClientLimits
from streamer.server.cluster import Cluster, Forwarder
from streamer.server.endings import Endings
from streamer.server.ids import IdOwner, make_id, resolve_instance_id
from streamer.server.metrics import ServerMetrics
from streamer.server.offers import Role
from streamer.server.rooms import Room, RoomRegistry
from streamer.session import LiveSession


def keep_task(
    tasks: set[asyncio.Task[Any]],
    coro: Coroutine[Any, Any, Any],
    name: str,
    context: contextvars.Context | None = None,
) -> None:
    """Start ``coro`` as a task held in ``tasks`` until it is done (so it can be cancelled);
    ``context``: the one it runs in (its log fields), else a copy of the current one."""
    task = asyncio.get_running_loop().create_task(coro, name=name, context=context)
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
    # The credential subject that created it: only that subject may read or control it
    # (``streamer.server.access``). ``OPEN``'s is everyone's when no token is configured.
    owner: str = OPEN.subject
    subscriptions: list[Subscription[Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False
    # The cleanup under way (``peers.close_peer``): a second caller waits for it to finish.
    closing: asyncio.Task[None] | None = None
    # The address it came from (``streamer.server.clients``); until it has ``connected`` it
    # counts among that client's pending offers (``streamer.server.limits``).
    client: str = ""
    connected: bool = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A task of this peer; its log lines name the peer and its room."""
        context = context_with(session_id=self.id, room=self.room.id)
        keep_task(self.tasks, coro, f"{name}-{self.id}", context)


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
        # Every id this server makes names it (``streamer.server.ids``): the balancer in front
        # of several instances, and the workers among themselves, route follow-ups by it.
        self.instance_id = resolve_instance_id(config.server.instance_id)
        worker = cluster.index if cluster is not None else None
        self.id_prefix = make_id(IdOwner(self.instance_id, worker), "")
        auth = config.auth
        self.auth = Authenticator(auth.publisher_tokens, auth.viewer_tokens, auth.token_secret)
        self.peers: dict[str, Peer] = {}
        self.rooms: RoomRegistry[Peer] = RoomRegistry(self.id_prefix)
        self.negotiating = 0
        self.clients = ClientLimits(self.server)  # per-client budgets and offers in flight
        self.placing = 0  # offers whose worker is being chosen (``cluster``), counted as load
        self.draining = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing: set[asyncio.Task[None]] = set()  # peer cleanups under way
        self.endings = Endings()  # why recent sessions ended, for their owners (410)
        self.metrics = ServerMetrics(self)
        # Rooms' RTMP pushes and recordings (``streamer.broadcast``), counted in the metrics.
        self.broadcasts = RoomOutputs(config.broadcast, self.id_prefix, self.metrics.registry)
        self.loopback = resolve_loopback_mode(self.server.ice_loopback, self.server.host)
        self.poster: asyncio.Future[bytes] | None = None  # JPEG of the avatar at rest

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        keep_task(self.tasks, coro, name)

    @property
    def load(self) -> int:
        return len(self.peers) + self.negotiating + self.placing

    @property
    def full(self) -> bool:
        return self.load >= self.server.max_sessions

    def readiness(self) -> tuple[bool, str]:
        """(ready for a new session, why): "ok", "draining" or "full". The avatar and models
        are prepared before the port opens (``stage_factory``), so a server that answers has
        them."""
        if self.draining:
            return False, "draining"
        if self.full:
            return False, "full"
        return True, "ok"


STATE = web.AppKey("state", ServerState)
