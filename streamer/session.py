"""LiveSession: the one pipeline, driven in real time from a live audio source.

A session owns the same stages as offline render: the motion stages, run as a ``Pipeline`` on a
single-thread executor of their own (the event loop never waits on them), and the render stage,
run by a ``LiveRender`` on a second thread (so that a renderer slower than real time holds up
neither the motion nor the video). A ``JitterBuffer`` takes the mic audio and a tick loop paced
by an injected ``Clock`` makes one frame per tick:

    frame k is made as soon as its 640 samples are in the jitter buffer, and at its deadline
    t0 + (k + 1) / 25 + jitter at the latest (audio is placed at its arrival time, so a frame
    is never complete before t0 + (k + 1) / 25: the pace stays 25 fps):
        take frame k's samples from the jitter buffer (zeros where the mic did not deliver
        in time: a stalled mic or lost packets make the avatar idle, video goes on)
        push them through the motion stages (on the motion thread)
        get the pictures of the motion frames that came out (render thread, waited for until
        behind_frames frames past the due time at most), publish them, write the sinks

With a ``VirtualClock`` and a source that delivers everything in time no zeros are inserted,
every frame gets its own picture and the frames equal offline render's frame for frame.

Output fan-out: each subscriber (a video track, a viewer's tracks, an encoder) has its own
bounded queue; sinks (trace recorders) are written in order on the motion thread and get every
frame made. The voice has a fan-out of its own (``subscribe_voice``): mic audio is handed on
as soon as it is placed on the time line (or at its frame's tick at the latest, zeros where
the mic did not deliver), without waiting for the motion steps and the picture, so a
receiver can play it as early as its picture allows, and a session slower than real time
(the neural path on a CPU) still returns all of the voice.

Drop policy (every drop is counted in ``SessionStats``):

* Subscriber queue full: its oldest frame is dropped (``subscriber_drops``). A slow or dead
  subscriber never holds up the session or the other subscribers.
* Renderer slower than real time: a frame whose picture is not ready ``behind_frames``
  frames after its due time, or that comes while the renderer is still busy, shows the last
  finished picture (``renders_skipped``; ``renders_late`` of them had a render started that
  finished too late).
  Motion advances for every frame and video stays at 25 fps; the picture changes at the rate
  the renderer manages (see ``streamer.live_render``).
* Behind real time: when a tick starts more than ``behind_frames`` frames late, no render is
  started for it (the last picture is repeated, counted as above). Such frames cost next to
  nothing, so the session catches up within a few ticks.
* Audio that arrives after its frame was made is discarded (``JitterStats.samples_late``).

Barge-in (``interrupt``): buffered audio is cleared, queued output frames are purged, a frame
still being made is not published, and the next tick resets the stages (they drop buffered
input and return to rest): the next frame published is at rest, with its own picture.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.clock import Clock
from streamer.config import ServerConfig
from streamer.fanout import FanOut, Subscription
from streamer.ingest import JitterBuffer
from streamer.live_render import LiveRender
from streamer.logs import bind, context_with, current_context
from streamer.pipeline import Pipeline
from streamer.stages.contract import Stage
from streamer.types import AudioChunk, MotionFrame, VideoFrame, VoiceChunk
from streamer.voice_line import VoiceLine

log = logging.getLogger(__name__)

FRAME_S = 1.0 / FPS
END_OF_TIME_LINE = 1 << 62  # past any position: release all the voice held


class FrameSink(Protocol):
    """Gets every frame, in order, in the session's executor thread."""

    def write(self, frame: Any) -> None: ...

    def close(self) -> None: ...


class SessionObserver(Protocol):
    """Told what a session does, on the event loop's thread (the server's metrics,
    ``streamer.server.metrics``): each call is cheap, the figures are kept by the observer."""

    def opened(self, session: LiveSession) -> None: ...

    def closed(self, session: LiveSession) -> None: ...

    def motion_step(self, seconds: float, ingest_buffered_s: float) -> None: ...

    def rendered(self, seconds: float) -> None: ...

    def pipeline_failed(self) -> None: ...


@dataclass
class SessionStats:
    ticks: int = 0  # frames pushed into the pipeline (one per tick)
    frames_out: int = 0  # frames published
    frames_rendered: int = 0  # pictures the renderer made
    renders_skipped: int = 0  # drop policy: published with the last picture, not their own
    renders_late: int = 0  # of those: a render was started but missed the frame's deadline
    late_ticks: int = 0  # ticks that started after their deadline
    max_lag_ms: float = 0.0
    step_ms_last: float = 0.0  # wall time of the last motion step (motion stages)
    step_ms_max: float = 0.0
    render_ms_max: float = 0.0  # wall time of the slowest render of one frame
    interrupts: int = 0
    purged_on_interrupt: int = 0  # frames queued or being made when a barge-in came
    silent: bool = True
    silence_weight: float = 0.0
    mouth_open: float = 0.0
    last_index: int = -1
    step_ms_recent: deque[float] = field(default_factory=lambda: deque(maxlen=250))


class LiveSession:
    """Real-time driver of one pipeline (see the module docstring).

    ``stages``: the motion stages followed by the render stage (``renders``, run by a
    ``LiveRender``); with ``renders=False`` the stage list ends with the motion stage and the
    session publishes ``MotionFrame``s. ``clock``: the pacer (``RealtimeClock`` live,
    ``VirtualClock`` in tests). ``sinks``: written with every output frame in order, closed when
    the session ends. ``render_executor``: where the render stage runs (default: a thread of
    the session's own). ``observer``: told of every step, render, failure and the close.
    Log lines of the session's task and threads carry its id (``streamer.logs``).
    """

    def __init__(
        self,
        stages: Sequence[Stage[Any, Any]],
        clock: Clock,
        config: ServerConfig | None = None,
        *,
        session_id: str | None = None,
        sinks: Sequence[FrameSink] = (),
        renders: bool = True,
        render_executor: Executor | None = None,
        observer: SessionObserver | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        self.id = session_id or uuid.uuid4().hex[:12]
        self._observer = observer
        self._log_fields = {**current_context(), "session_id": self.id}
        stage_list = list(stages)
        self._render: LiveRender | None = None
        if renders:
            if len(stage_list) < 2:
                raise ValueError("a rendering session needs motion stages and a render stage")
            render_stage = stage_list.pop()
            idle = getattr(render_stage, "idle_picture", None)
            self._render = LiveRender(
                render_stage,
                clock,
                self.id,
                render_executor,
                on_render=observer.rendered if observer is not None else None,
                log_fields=self._log_fields,
                idle=idle() if callable(idle) else None,
            )
        self.pipeline: Pipeline[Any] = Pipeline(stage_list)  # the motion stages
        self._clock = clock
        self._jitter_s = self.config.jitter_ms / 1000.0
        self.ingest = JitterBuffer(capacity_s=max(2.0, 4 * self._jitter_s))
        self._sinks = list(sinks)
        self._fanout: FanOut[Any] = FanOut(self.config.queue_frames)
        self._voice: FanOut[VoiceChunk] = FanOut(2 * self.config.queue_frames)
        self._voice_line = VoiceLine()
        self._epoch_s: float | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"session-{self.id}",
            initializer=bind,
            initargs=(self._log_fields,),
        )
        # The voice leaves this much behind the mic: a picture shows its audio only after the
        # pipeline's lookahead (``streamer.voice_line``).
        self._voice_hold = self.delay_frames * SAMPLES_PER_FRAME
        self.stats = SessionStats()
        self._t0 = 0.0
        self._pushed = 0
        self._reset_pending = False
        self._generation = 0  # barge-ins so far: a frame made across one is not published
        self._input_ended = False
        self._task: asyncio.Task[None] | None = None
        self._audio_waiter: tuple[int, asyncio.Future[None]] | None = None
        self._tick_event = asyncio.Event()
        self.finished = asyncio.Event()
        # Why it ended: "error" (the pipeline raised: ``error`` says what, without the
        # exception's text, which may name a path), "input_ended", "closed"; None while live.
        self.ended: str | None = None
        self.error: str | None = None
        self._closed = False
        if observer is not None:
            observer.opened(self)

    # ------------------------------------------------------------------ public API

    @property
    def delay_frames(self) -> int:
        render = self._render.delay_frames if self._render is not None else 0
        return self.pipeline.delay_frames + render

    @property
    def render(self) -> LiveRender | None:
        return self._render

    @property
    def latency_s(self) -> float:
        """Mic sample to frame out by construction, at worst: the wait for the rest of the
        sample's frame (up to one frame) + the pipeline's lookahead. The jitter allowance adds
        to it only while mic audio arrives late."""
        return FRAME_S + self.delay_frames * FRAME_S

    @property
    def fanout(self) -> FanOut[Any]:
        return self._fanout

    @property
    def epoch_s(self) -> float | None:
        """Wall-clock time (Unix seconds) of session time 0, once started: the mic time of
        time line position ``p`` is ``epoch_s + p / 16000`` (audio is placed on the time line
        by its arrival time)."""
        return self._epoch_s

    @property
    def started(self) -> bool:
        return self._task is not None or self._closed

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("session already started")
        self._t0 = self._clock.now()
        self._epoch_s = time.time()
        # Its own log fields, whichever callback happens to start it.
        context = context_with(**self._log_fields)
        self._task = asyncio.create_task(self._run(), name=f"session-{self.id}", context=context)

    def now(self) -> float:
        """Session time in seconds (0 at ``start``)."""
        return self._clock.now() - self._t0

    def feed(self, samples: np.ndarray, discontinuity: bool = False) -> None:
        """Mic audio: contiguous 16 kHz mono float32, arriving now (ignored before ``start``:
        the time line begins there)."""
        if self._input_ended or self._closed or self._task is None:
            return
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        start = self.ingest.write(samples, self.now(), discontinuity)
        self._wake_if_ready()
        self._hand_on_voice(start, samples)

    def end_input(self) -> None:
        """No more audio: the session plays what it has, flushes the pipeline and ends."""
        self._input_ended = True
        self._wake_if_ready()

    def interrupt(self) -> int:
        """Barge-in; returns the index of the first frame pushed after the reset."""
        self.ingest.clear()
        purged = self._fanout.purge()
        self._voice.purge()
        self._voice_line.drop()
        self.stats.purged_on_interrupt += purged
        self.stats.interrupts += 1
        self._reset_pending = True
        self._generation += 1
        return self.stats.ticks

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription[Any]:
        return self._fanout.subscribe(name, maxsize)

    def subscribe_voice(self, name: str, maxsize: int | None = None) -> Subscription[VoiceChunk]:
        """The voice as soon as it is in (module docstring); the same time line as the
        frames (frame ``i``: positions ``i * 640`` on)."""
        return self._voice.subscribe(name, maxsize)

    async def wait_ticks(self, count: int) -> None:
        """Until ``count`` ticks are done (or the session ended); for tests and tools."""
        while self.stats.ticks < count and not self.finished.is_set():
            self._tick_event.clear()
            await self._tick_event.wait()

    async def drain(self, timeout_s: float) -> bool:
        """End the input, let the pipeline flush into the sinks, then close. True if flushed."""
        self.end_input()
        flushed = True
        if self._task is not None and not self.finished.is_set():
            try:
                await asyncio.wait_for(self.finished.wait(), timeout_s)
            except TimeoutError:
                flushed = False
                log.warning("session %s did not flush within %.1f s", self.id, timeout_s)
        await self.aclose()
        return flushed

    async def aclose(self) -> None:
        """Stop ticking, end every subscription, close the sinks, release the thread."""
        if self._closed:
            return
        self._closed = True
        self.ended = self.ended or "closed"
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._fanout.end()
        self._voice.end()
        self.finished.set()
        loop = asyncio.get_running_loop()
        # A step may still be running in a thread: wait for it before closing the sinks.
        if self._render is not None:
            await self._render.aclose()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("session %s: closing sink %r failed", self.id, sink)
        if self._observer is not None:
            self._observer.closed(self)

    def snapshot(self) -> dict[str, Any]:
        """Live figures as plain JSON-able values."""
        stats = asdict(self.stats)
        stats.pop("step_ms_recent")
        renders = self._render.render_ms_recent if self._render is not None else ()
        for prefix, values in (("step_ms", self.stats.step_ms_recent), ("render_ms", renders)):
            recent = np.asarray(values, dtype=np.float64)
            for q in (50, 95):
                value = round(float(np.percentile(recent, q)), 3) if len(recent) else 0.0
                stats[f"{prefix}_p{q}"] = value
        stats["subscriber_drops"] = self._fanout.dropped
        stats["subscribers"] = len(self._fanout.subscribers)
        stats["ingest"] = asdict(self.ingest.stats)
        stats["render_on_own_thread"] = bool(self._render is not None and self._render.threaded)
        stats["render_thread_switches"] = self._render.switches if self._render is not None else 0
        if self._render is not None and self._render.repeated > self._render.rendered:
            # More frames showed an earlier picture than got their own: the page says so.
            fps = self._render.rendered / max(self.now(), 1e-3) if self._task else 0.0
            stats["notice"] = (
                f"the server renders slower than real time ({fps:.1f} pictures/s of 25): "
                "the avatar moves in steps; a GPU or the mesh renderer makes it live"
            )
        stats["pipeline_delay_frames"] = self.delay_frames
        stats["latency_ms_designed"] = round(self.latency_s * 1000.0, 1)
        elapsed = self.now() if self._task is not None else 0.0
        stats["fps"] = round(self.stats.frames_out / elapsed, 2) if elapsed > 0 else 0.0
        stats["uptime_s"] = round(elapsed, 3)
        stats["ended"] = self.ended
        stats["error"] = self.error
        # Frames some receiver did not get as rendered: skipped renders + the worst-served
        # subscriber's queue drops (a frame can be both: never more than the frames made).
        dropped = self.stats.renders_skipped + self._fanout.worst_dropped
        stats["dropped_frames"] = min(dropped, self.stats.frames_out)
        return stats

    # ------------------------------------------------------------------ tick loop

    def due_time(self, index: int) -> float:
        """Clock time at which frame ``index`` is made."""
        return self._t0 + (index + 1) * FRAME_S + self._jitter_s

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        index = 0
        try:
            while True:
                due = self.due_time(index)
                await self._wait_for_frame(index, due)
                lag = self._clock.now() - due
                if lag > 1e-9:
                    self.stats.late_ticks += 1
                    self.stats.max_lag_ms = max(self.stats.max_lag_ms, lag * 1000.0)
                skip = lag > self.config.behind_frames * FRAME_S
                final = False
                end = self.ingest.end_position
                if self._input_ended and (end is None or end <= (index + 1) * SAMPLES_PER_FRAME):
                    samples = self.ingest.read_tail()
                    final = True
                else:
                    samples = self.ingest.read(index)
                self._hand_on_frame_voice(index * SAMPLES_PER_FRAME, samples, final)
                reset, self._reset_pending = self._reset_pending, False
                generation = self._generation
                inline = None
                if self._render is not None:
                    if reset:
                        self._render.reset()
                    inline = self._render.plan_inline(may_start=not skip)
                motions, step_ms, rendered = await loop.run_in_executor(
                    self._executor, self._step, samples, reset, final, inline
                )
                self._count_step(step_ms)
                frames = await self._pictures(motions, index, skip, final, rendered)
                if generation == self._generation:
                    self._publish(frames)
                else:  # a barge-in came while this frame was being made
                    self.stats.purged_on_interrupt += len(frames)
                if self._sinks and frames:
                    await loop.run_in_executor(self._executor, self._write_sinks, frames)
                index += 1
                self.stats.ticks = index
                self._tick_event.set()
                if final:
                    self.ended = self.ended or "input_ended"
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug of ours: one ERROR with its traceback; the session ends, the others go on.
            log.exception("session %s: pipeline failed; ending the session", self.id)
            self.ended = "error"
            self.error = f"the avatar pipeline failed ({type(exc).__name__})"
            if self._observer is not None:
                self._observer.pipeline_failed()
        finally:
            self._fanout.end()
            self._voice.end()
            self.finished.set()
            self._tick_event.set()

    def frame_ready(self, index: int) -> bool:
        """All of frame ``index``'s audio is here (or no more is coming)."""
        end = self.ingest.end_position
        return self._input_ended or (end is not None and end >= (index + 1) * SAMPLES_PER_FRAME)

    async def _wait_for_frame(self, index: int, due: float) -> None:
        """Until frame ``index``'s audio is complete, or its deadline ``due`` at the latest.

        Audio is placed on the time line at its arrival time, so it cannot complete a frame
        before the frame's nominal time (``due - jitter``): making the frame as soon as its
        audio is here keeps 25 fps and spends the jitter allowance only when audio is late.
        """
        # 1 us of slack: the mic's own clock arithmetic may round the other way.
        earliest = self._t0 + (index + 1) * FRAME_S - 1e-6
        if self._clock.now() < earliest:
            # Never ahead of real time, whatever the input claims.
            await self._clock.sleep_until(earliest)
        if self.frame_ready(index) or self._clock.now() >= due:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._audio_waiter = (index, waiter)
        sleeper = asyncio.ensure_future(self._clock.sleep_until(due))
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._audio_waiter = None
            sleeper.cancel()
            waiter.cancel()
            await asyncio.gather(sleeper, return_exceptions=True)

    def _hand_on_voice(self, start: int, samples: np.ndarray) -> None:
        """Mic audio just placed at ``start``: on to the voice subscribers, ``_voice_hold``
        behind the newest position."""
        self._voice_line.add(start, samples)
        self._publish_voice(start + len(samples) - self._voice_hold)

    def _hand_on_frame_voice(self, start: int, samples: np.ndarray, final: bool) -> None:
        """At a frame's tick: its audio where the mic did not deliver it in time (zeros), so
        the voice never falls behind the video; everything at the end of the input."""
        self._voice_line.add(start, samples)
        end = start + len(samples)
        self._publish_voice(END_OF_TIME_LINE if final else end - self._voice_hold)

    def _publish_voice(self, upto: int) -> None:
        for chunk in self._voice_line.release(upto):
            self._voice.publish(chunk)

    def _wake_if_ready(self) -> None:
        if self._audio_waiter is not None:
            index, waiter = self._audio_waiter
            if not waiter.done() and self.frame_ready(index):
                waiter.set_result(None)

    def _step(
        self,
        samples: np.ndarray,
        reset: bool,
        final: bool,
        inline: Callable[[list[MotionFrame]], Any] | None,
    ) -> tuple[list[MotionFrame], float, Any]:
        """One frame of audio through the motion stages, and the render ``inline`` when the
        renderer runs in this job; on the session's thread."""
        started = time.perf_counter()
        if reset:
            self.pipeline.reset()
        out: list[Any] = []
        if len(samples):
            out = self.pipeline.push(AudioChunk(samples=samples, start=self._pushed))
            self._pushed += len(samples)
        if final:
            out.extend(self.pipeline.flush())
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        return out, elapsed_ms, inline(out) if inline is not None else None

    async def _pictures(
        self, motions: list[MotionFrame], index: int, skip: bool, final: bool, rendered: Any
    ) -> list[Any]:
        """The frames to publish for this tick's motion (MotionFrames when not rendering);
        ``rendered``: the pictures when the render ran inline with the motion step."""
        render = self._render
        if render is None:
            return list(motions)
        if rendered is not None:
            frames = render.took_inline(rendered)
        else:
            # A frame may wait for its picture as long as a tick may be late before it is not
            # rendered at all (``behind_frames``); at the end of the stream every remaining
            # frame gets its own picture.
            late_by = self.config.behind_frames * FRAME_S
            deadline = None if final else self.due_time(index) + late_by
            frames = await render.frames(motions, deadline, may_start=not skip)
        if final:
            frames.extend(await render.flush())
        self.stats.frames_rendered = render.rendered
        self.stats.renders_skipped = render.repeated
        self.stats.renders_late = render.late
        self.stats.render_ms_max = render.render_ms_max
        return frames

    def _count_step(self, elapsed_ms: float) -> None:
        self.stats.step_ms_last = elapsed_ms
        self.stats.step_ms_max = max(self.stats.step_ms_max, elapsed_ms)
        self.stats.step_ms_recent.append(elapsed_ms)
        if self._observer is not None:
            buffered_s = self.ingest.buffered / SAMPLE_RATE
            self._observer.motion_step(elapsed_ms / 1000.0, buffered_s)

    def _write_sinks(self, frames: list[Any]) -> None:
        """On the session's thread (file writes stay off the event loop)."""
        for sink in self._sinks:
            for frame in frames:
                sink.write(frame)

    def _publish(self, frames: list[Any]) -> None:
        for frame in frames:
            motion = frame.motion if isinstance(frame, VideoFrame) else frame
            self.stats.silent = bool(motion.silence.silent)
            self.stats.silence_weight = float(motion.silence.weight)
            self.stats.mouth_open = float(motion.mouth_open)
            self.stats.last_index = int(motion.index)
            self.stats.frames_out += 1
            self._fanout.publish(frame)
