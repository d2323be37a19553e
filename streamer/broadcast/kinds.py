"""The kinds of output a room can have, one small module each, and what they share.

A kind (``OutputKind``) checks a request for an output of its kind (the body of
``POST /rooms/{room}/outputs``, or a default from ``[broadcast]``) into an ``OutputPlan`` and
starts a planned output (``Output``) on a room's session. ``streamer.broadcast.registry``
lists the kinds; a new kind is a module with one ``OutputKind`` and a line there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streamer.config import BroadcastConfig
from streamer.fanout import Subscription


class FrameSource(Protocol):
    """What an output reads: a room's session (``LiveSession``), or any source of frames
    with the same two members."""

    finished: asyncio.Event

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription: ...


@dataclass(frozen=True)
class OutputPlan:
    """A checked request for an output: its kind, its target (a URL or a path: may hold a
    secret, never shown) and the target as it may be shown (redacted)."""

    kind: str
    target: str
    shown: str


@dataclass(frozen=True)
class OutputContext:
    """What a starting output gets: its id, its room and the room's session (to
    ``subscribe`` to), the ``[broadcast]`` settings."""

    output_id: str
    room: str
    session: FrameSource
    config: BroadcastConfig


class Output(Protocol):
    """A running output of a room."""

    id: str
    kind: str

    @property
    def done(self) -> bool:
        """It ended (its room ended, it was stopped, or it gave up)."""

    def status(self) -> dict[str, Any]:
        """JSON figures: at least ``id``, ``kind``, ``target`` (shown), ``state`` ("live",
        "error: ...", "finished", ...), ``frames_encoded``, ``frames_dropped``,
        ``reconnects``."""

    async def stop(self) -> None:
        """End it cleanly (a recording is finalised); returns once done (bounded)."""


class OutputKind(Protocol):
    name: str

    def plan(self, body: Mapping[str, Any], room: str, config: BroadcastConfig) -> OutputPlan:
        """The checked request; ``OutputTargetError`` naming what is wrong."""

    def start(self, plan: OutputPlan, context: OutputContext) -> Output:
        """Start it (it runs on the event loop; its work never blocks the loop)."""
