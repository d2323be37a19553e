"""Every room's outputs in one server process: add, list, stop; the defaults of
``[broadcast]``; the end of all of them at drain.

Bookkeeping on the event loop, no I/O of its own: outputs do their work in their encoder
processes. An output that ended stays listed (its final state says how it ended) until it is
deleted or its room ends; then it is forgotten, and its figures move into running totals so
that the metrics' counters never go backwards.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from streamer.broadcast.kinds import FrameSource, Output, OutputContext
from streamer.broadcast.metrics import BroadcastCollector, BroadcastTotals
from streamer.broadcast.registry import KINDS
from streamer.broadcast.targets import OutputTargetError, fill_template
from streamer.config import BroadcastConfig

log = logging.getLogger(__name__)


class TooManyOutputs(OutputTargetError):
    """The room has ``max_outputs_per_room`` outputs already."""


@dataclass
class _Room:
    session: FrameSource
    outputs: dict[str, Output] = field(default_factory=dict)


class RoomOutputs:
    """``registry``: where its metrics are collected (``streamer.broadcast.metrics``)."""

    def __init__(
        self,
        config: BroadcastConfig,
        id_prefix: str = "",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self._prefix = id_prefix  # a worker's (``streamer.server.cluster``)
        self._rooms: dict[str, _Room] = {}
        self.totals = BroadcastTotals()  # figures of the forgotten outputs
        self._watchers: set[asyncio.Task[None]] = set()
        if registry is not None:
            registry.register(BroadcastCollector(self.statuses, self.totals))

    def add(self, room: str, session: FrameSource, body: Mapping[str, Any]) -> Output:
        """A new output of ``room`` as ``body`` asks (``{"kind": ..., ...}``), started;
        ``OutputTargetError`` for a request that cannot be served."""
        kind_name = body.get("kind")
        kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            names = ", ".join(sorted(KINDS))
            raise OutputTargetError(f"kind: must be one of {names}, got {kind_name!r}")
        plan = kind.plan(body, room, self.config)
        entry = self._room(room, session)
        live = [o for o in entry.outputs.values() if not o.done]
        if len(live) >= self.config.max_outputs_per_room:
            raise TooManyOutputs(
                f"room {room!r} has {len(live)} outputs, the most allowed "
                f"(broadcast.max_outputs_per_room)"
            )
        output_id = f"{self._prefix}out-{secrets.token_hex(8)}"
        output = kind.start(plan, OutputContext(output_id, room, session, self.config))
        entry.outputs[output_id] = output
        log.info("room %s: output %s (%s) added: %s", room, output_id, kind.name, plan.shown)
        return output

    def open_defaults(self, room: str, session: FrameSource) -> list[Output]:
        """The outputs ``[broadcast]`` gives every room (a bad default was refused when the
        configuration was loaded)."""
        bodies: list[dict[str, Any]] = [
            {"kind": "rtmp", "url": fill_template(url, room)} for url in self.config.rtmp_urls
        ]
        if self.config.record:
            bodies.append({"kind": "record"})
        started = []
        for body in bodies:
            try:
                started.append(self.add(room, session, body))
            except (OutputTargetError, OSError) as exc:  # the room goes on without it
                log.error(
                    "room %s: a default %s output could not start: %s", room, body["kind"], exc
                )
        return started

    def of_room(self, room: str) -> list[Output]:
        entry = self._rooms.get(room)
        return list(entry.outputs.values()) if entry is not None else []

    def get(self, room: str, output_id: str) -> Output | None:
        entry = self._rooms.get(room)
        return entry.outputs.get(output_id) if entry is not None else None

    async def remove(self, room: str, output_id: str) -> Output | None:
        """Stop and forget one output; ``None`` when the room has no such output."""
        entry = self._rooms.get(room)
        output = entry.outputs.pop(output_id, None) if entry is not None else None
        if output is None:
            return None
        await output.stop()
        self.totals.add(output.status())
        return output

    def __len__(self) -> int:
        return sum(len(entry.outputs) for entry in self._rooms.values())

    def all(self) -> list[Output]:
        return [o for entry in self._rooms.values() for o in entry.outputs.values()]

    def statuses(self) -> list[dict[str, Any]]:
        return [o.status() for o in self.all()]

    async def aclose(self) -> None:
        """Drain: every output ends (their sessions have ended or are ended here: the
        recordings are finalised), within ``finish_timeout_s`` each."""
        outputs = self.all()
        await asyncio.gather(*(o.stop() for o in outputs), return_exceptions=True)
        for room in list(self._rooms):
            self._forget(room)
        watchers = list(self._watchers)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    def _room(self, room: str, session: FrameSource) -> _Room:
        entry = self._rooms.get(room)
        if entry is not None and entry.session is not session:
            self._forget(room)  # an earlier session of a room of the same name
            entry = None
        if entry is None:
            entry = _Room(session)
            self._rooms[room] = entry
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._forget_when_over(room, session), name=f"outputs-{room}")
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        return entry

    async def _forget_when_over(self, room: str, session: FrameSource) -> None:
        """Once the room's session ended and its outputs finished, forget them."""
        await session.finished.wait()
        entry = self._rooms.get(room)
        if entry is None or entry.session is not session:
            return
        await asyncio.gather(*(o.stop() for o in list(entry.outputs.values())))
        if self._rooms.get(room) is entry:
            self._forget(room)

    def _forget(self, room: str) -> None:
        entry = self._rooms.pop(room, None)
        if entry is not None:
            for output in entry.outputs.values():
                self.totals.add(output.status())
