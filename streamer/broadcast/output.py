"""One encoded output of a room (an RTMP push or a recording) and its life.

A bounded drop-oldest subscription to the room's session (``FanOut``) feeds an encoder
process (``EncoderProcess``): the live path only ever appends to that queue, so a slow
encoder or a far end that stalls costs frames of this output (counted by reason), never a
tick of the session.

Life of an output: ``connecting`` (encoder started, first frame sent, the far end not yet
accepting) -> ``live`` -> on a failure ``error: <why>`` while it waits for the next attempt
(RTMP: a jittered back-off, doubling, bounded in delay and in attempts; a recording does not
retry) -> ``finished`` once its room ended or it was stopped and the encoder wrote its
trailer, or ``error: <why>`` for good (``gave_up``). A far end that does not accept within
``connect_timeout_s`` or takes nothing for ``stall_timeout_s`` is a failure like a refusal:
its encoder process is killed, so nothing waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from streamer.broadcast.encoder import EncoderSettings
from streamer.broadcast.process import EncoderProcess
from streamer.config import BroadcastConfig
from streamer.fanout import Subscription
from streamer.logs import context_with

log = logging.getLogger(__name__)
# An encoder process that has not started (interpreter, PyAV) by then is killed; the far
# end's connect_timeout_s is counted from its start, not from the spawn.
STARTUP_TIMEOUT_S = 30.0


@dataclass
class OutputCounts:
    """Running figures of one output (read by the metrics and ``status``)."""

    frames_sent: int = 0  # handed to an encoder
    frames_encoded: int = 0  # over every connection
    dropped_queue: int = 0  # the subscription was full (filled from the subscription)
    dropped_encoder_busy: int = 0  # the encoder had not taken the previous ones
    dropped_offline: int = 0  # no connection (waiting for the next attempt)
    reconnects: int = 0
    encode_ms: float = 0.0  # mean encode time of a frame (the last encoder's report)

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_encoder_busy + self.dropped_offline


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``min_s`` doubling to ``max_s``, each times a random factor
    in [0.5, 1] (outputs of many rooms that lost the same server do not come back at once)."""

    min_s: float
    max_s: float
    attempts: int
    reset_s: float

    @classmethod
    def of(cls, config: BroadcastConfig) -> Backoff:
        return cls(
            config.reconnect_min_s,
            config.reconnect_max_s,
            config.reconnect_attempts,
            config.reconnect_reset_s,
        )

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_s, self.min_s * 2 ** max(0, attempt - 1))
        return base * rng.uniform(0.5, 1.0)


@dataclass
class _Attempt:
    """One encoder process and what it said."""

    encoder: EncoderProcess
    started: float
    ready_at: float | None = None
    opened_at: float | None = None
    last_progress: float = 0.0
    waiting_since: float | None = None  # the first frame sent since the last progress report
    encoded: int = 0
    error: str = ""
    kill_reason: str = ""
    reader: asyncio.Task[None] | None = None
    killing: asyncio.Task[int] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class EncodedOutput:
    """One output (see the module docstring). ``shown``: the target as it may be shown
    (a redacted URL, a file name); ``backoff``: ``None`` = no retry (recordings)."""

    def __init__(
        self,
        output_id: str,
        kind: str,
        room: str,
        shown: str,
        settings: EncoderSettings,
        source: Subscription,
        config: BroadcastConfig,
        backoff: Backoff | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.id = output_id
        self.kind = kind
        self.room = room
        self.shown = shown
        self.extra = dict(extra or {})  # more fields of ``status`` (a recording's path)
        self._settings = settings
        self._source = source
        self._config = config
        self._backoff = backoff
        self._rng = random.Random()
        self.counts = OutputCounts()
        self.state = "connecting"
        self.last_error = ""
        self.gave_up = False
        self._attempt: _Attempt | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    @property
    def encoder_pid(self) -> int | None:
        """The process id of the encoder running now (for operators' tools and tests)."""
        return self._attempt.encoder.pid if self._attempt is not None else None

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def start(self) -> None:
        context = context_with(room=self.room)  # its log lines name the room
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"output-{self.id}", context=context)

    async def stop(self) -> None:
        """Stop taking frames, let the encoder flush and write its trailer (bounded by
        ``finish_timeout_s``), return once it is done."""
        self._source.close()
        if self._task is not None:
            await asyncio.shield(self._task)

    def status(self) -> dict[str, Any]:
        c = self.counts
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "room": self.room,
            "target": self.shown,
            "state": self.state,
            "frames_encoded": c.frames_encoded,
            "frames_dropped": c.dropped,
            "dropped": {
                "queue_full": c.dropped_queue,
                "encoder_busy": c.dropped_encoder_busy,
                "offline": c.dropped_offline,
            },
            "reconnects": c.reconnects,
            "encode_ms": round(c.encode_ms, 3),
        }
        if self.last_error:
            body["last_error"] = self.last_error
        if self._retry_at and self.state.startswith("error") and not self.gave_up:
            loop = asyncio.get_running_loop()
            body["retry_in_s"] = round(max(0.0, self._retry_at - loop.time()), 1)
        return {**body, **self.extra}

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.gave_up:
                frame = await self._source.get()
                self.counts.dropped_queue = self._source.dropped
                if frame is None or self.gave_up:  # it may have given up while waiting
                    break
                now = loop.time()
                attempt = self._attempt
                if attempt is None:
                    if now < self._retry_at:
                        self.counts.dropped_offline += 1
                        continue
                    try:
                        attempt = await self._begin(now)
                    except OSError as exc:  # no process could be started: not the far end's fault
                        self.gave_up = True
                        self.last_error = f"the encoder could not start: {exc.strerror or exc}"
                        self.state = f"error: {self.last_error}"
                        break
                elif self._stuck(attempt, now):
                    self.counts.dropped_offline += 1
                    continue
                if attempt.encoder.send(frame):
                    self.counts.frames_sent += 1
                    if attempt.waiting_since is None:
                        attempt.waiting_since = now
                else:
                    self.counts.dropped_encoder_busy += 1
        finally:
            self._source.close()
            await self._end()

    async def _begin(self, now: float) -> _Attempt:
        if self._failures:
            self.counts.reconnects += 1
        self.state = "connecting"
        encoder = await EncoderProcess.start(self._settings, self._config.queue_frames)
        attempt = _Attempt(encoder=encoder, started=now, last_progress=now)
        attempt.reader = asyncio.get_running_loop().create_task(
            self._read_reports(attempt), name=f"output-reports-{self.id}"
        )
        self._attempt = attempt
        return attempt

    def _stuck(self, attempt: _Attempt, now: float) -> bool:
        """Kill the encoder of a far end that hangs; True once it is being killed."""
        if attempt.kill_reason:
            return True
        if attempt.ready_at is None:
            if now - attempt.started > STARTUP_TIMEOUT_S:
                self._kill(attempt, f"the encoder did not start within {STARTUP_TIMEOUT_S:g} s")
                return True
        elif attempt.opened_at is None:
            limit = self._config.connect_timeout_s
            if now - attempt.ready_at > limit:
                self._kill(attempt, f"{self.shown} did not accept the stream within {limit:g} s")
                return True
        elif (
            attempt.waiting_since is not None
            and now - max(attempt.waiting_since, attempt.last_progress)
            > self._config.stall_timeout_s
        ):
            limit = self._config.stall_timeout_s
            self._kill(attempt, f"{self.shown} took nothing for {limit:g} s")
            return True
        return False

    def _kill(self, attempt: _Attempt, reason: str) -> None:
        attempt.kill_reason = reason
        loop = asyncio.get_running_loop()
        attempt.killing = loop.create_task(attempt.encoder.kill(), name=f"output-kill-{self.id}")

    async def _read_reports(self, attempt: _Attempt) -> None:
        loop = asyncio.get_running_loop()
        async for report in attempt.encoder.reports():
            now = loop.time()
            if report.event == "ready":
                attempt.ready_at = now
            elif report.event == "open":
                attempt.opened_at = attempt.last_progress = now
                self.state = "live"
                log.info("output %s (%s) is live: %s", self.id, self.kind, self.shown)
            elif report.event in ("progress", "closed"):
                attempt.last_progress = now
                attempt.waiting_since = None
                self._encoded(attempt, report.frames)
                self.counts.encode_ms = report.encode_ms or self.counts.encode_ms
            elif report.event == "error":
                attempt.error = report.message
                self._encoded(attempt, report.frames)
        code = await attempt.encoder.wait()
        self._ended(attempt, code, loop.time())
        attempt.ended.set()

    def _encoded(self, attempt: _Attempt, frames: int) -> None:
        if frames > attempt.encoded:
            self.counts.frames_encoded += frames - attempt.encoded
            attempt.encoded = frames

    def _ended(self, attempt: _Attempt, code: int, now: float) -> None:
        """An encoder exited: the end of the output (its input was closed and it wrote its
        trailer), or a failure, retried after a back-off when this kind retries."""
        if self._attempt is attempt:
            self._attempt = None
        if code == 0 and not attempt.kill_reason:
            return
        reason = attempt.kill_reason or attempt.error or f"the encoder exited with code {code}"
        if self.shown and self.shown not in reason:
            reason = f"{self.shown}: {reason}"
        self.last_error = reason
        lived = now - attempt.opened_at if attempt.opened_at is not None else 0.0
        if self._backoff is not None and lived >= self._backoff.reset_s:
            self._failures = 0
        self._failures += 1
        if self._backoff is None or self._failures > self._backoff.attempts:
            self.gave_up = True
            tries = f" (gave up after {self._failures} attempts)" if self._backoff else ""
            self.state = f"error: {reason}{tries}"
            log.warning("output %s (%s) failed: %s%s", self.id, self.kind, reason, tries)
            return
        delay = self._backoff.delay(self._failures, self._rng)
        self._retry_at = now + delay
        self.state = f"error: {reason}"
        log.warning("output %s (%s): %s; trying again in %.1f s", self.id, self.kind, reason, delay)

    async def _finish(self, attempt: _Attempt) -> None:
        """Close the encoder's input and wait for it to write its trailer: up to
        ``finish_timeout_s`` once the far end accepted; before that, only while the far end
        may still accept (one that hangs has nothing of ours to save); then kill it."""
        loop = asyncio.get_running_loop()
        attempt.encoder.close_input()
        while not attempt.ended.is_set():
            progress = (attempt.ready_at, attempt.opened_at)
            if attempt.opened_at is not None:
                deadline, why = loop.time() + self._config.finish_timeout_s, "finish"
            elif attempt.ready_at is None:
                deadline, why = attempt.started + STARTUP_TIMEOUT_S, "start"
            else:
                deadline, why = attempt.ready_at + self._config.connect_timeout_s, "connect"
            while not attempt.ended.is_set() and (attempt.ready_at, attempt.opened_at) == progress:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._kill(attempt, f"the encoder did not {why} in time")
                    return
                try:  # woken at least every 0.1 s to see whether it started or connected
                    await asyncio.wait_for(attempt.ended.wait(), min(0.1, remaining))
                except TimeoutError:
                    pass

    async def _end(self) -> None:
        """The input ended (room over, stopped) or the output gave up: the encoder flushes
        and writes its trailer, within ``finish_timeout_s``."""
        attempt = self._attempt
        try:
            if attempt is not None:
                if attempt.killing is None:
                    await self._finish(attempt)
                if attempt.killing is not None:
                    await attempt.killing
                if attempt.reader is not None:
                    await attempt.reader
        finally:
            if attempt is not None and attempt.reader is not None and not attempt.reader.done():
                attempt.reader.cancel()
            if not self.gave_up and not self.state.startswith("error"):
                self.state = "finished"
            elif not self.gave_up:
                self.state = f"finished after error: {self.last_error}"
            self.finished.set()
            log.info(
                "output %s (%s) %s: %d frames encoded, %d dropped",
                self.id,
                self.kind,
                self.state,
                self.counts.frames_encoded,
                self.counts.dropped,
            )
