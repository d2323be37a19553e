"""LiveRender: a live session's render stage, on its own thread, never holding up the video.

The motion stages are cheap and run every tick; a renderer may be far slower than real time
(the neural renderer on a CPU). So the render stage runs on a thread of its own, one frame at
a time, and the session asks it for frame k's picture with a deadline (the next tick's due
time):

* the renderer is idle: frame k is rendered; if the picture is ready by the deadline it is
  frame k's picture, otherwise frame k shows the last finished picture and the render goes on
  in the background (``late``); its picture is shown by the frames after it.
* the renderer is still busy with an earlier frame: frame k shows the last finished picture
  at once (``repeated``), no new render is queued behind the busy one.
* the session is behind real time (``may_start`` false, or the deadline has passed already):
  as busy.

So a tick waits at most until its deadline, video keeps its 25 fps and the picture changes at
whatever rate the renderer manages. After a barge-in (``reset``) the speaking picture must not
be repeated: until a picture made after the reset is ready, frames show the last picture
rendered of the avatar at rest (``at_rest``: head at the photo's pose, mouth closed, eyes open;
a session starts at rest, so there is one), and a render still running from before the reset
is thrown away. A frame with nothing it may show (the very first, or a barge-in before any
rest picture) waits for its own picture, however long that takes, unless the render stage
offers an idle picture (``idle``: the neural path's photo, ``NeuralRenderStage.idle_picture``):
then frames show it until the first picture is ready, and the renderer starts on its own
thread, so a renderer far slower than real time (SadTalker's networks on a CPU) never holds
up the session's frames and voice.

Where the render runs. A thread of its own costs two more thread hand-overs per frame, and on
a loaded machine every hand-over waits for a core: a renderer that needs a small part of a
frame (the CPU mesh renderer, a few ms) is better run right after the motion stages, in the
same job on the session's thread (``plan_inline``), where it cannot be late by construction.
So a ``LiveRender`` starts inline and moves the renderer to its own thread once it is slow:
the median CPU time of its last 5 renders over half a frame, or the median time of its last 25
on the session's clock over a whole frame (a renderer that waits, e.g. for a GPU). It moves
back once 25 renders since cost under a quarter of a frame of CPU and took under half a frame.
CPU time is what decides in the first place because a loaded machine stretches the time of
every render (waiting for a core) but not its CPU time.

A render stage with a lookahead (``delay_frames > 0``) is not one picture per motion frame;
it is pushed in order on the thread and awaited, without the drop policy.

Input: ``MotionFrame``s; output: ``VideoFrame``s, one per input, in order. Delay: the stage's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from msadtalker.timing import FPS
from streamer.at_rest import at_rest
from streamer.clock import Clock
from streamer.logs import bind
from streamer.stages.contract import Stage
from streamer.types import MotionFrame, VideoFrame

RenderStage = Stage[MotionFrame, VideoFrame]
FRAME_MS = 1000.0 / FPS
SLOW_MS = FRAME_MS / 2  # median CPU above this: the renderer gets its own thread
FAST_MS = FRAME_MS / 4  # median CPU of SETTLE renders below this: back inline
SLOW_WINDOW = 5
SETTLE = 25
# The pictures, and per pushed frame (ms on the session's clock, ms of CPU).
_Rendered = tuple[list[VideoFrame], list[tuple[float, float]]]

log = logging.getLogger(__name__)


class LiveRender:
    """See the module docstring. ``executor``: where the stage runs (default: its own thread).
    ``cpu_time``: the CPU seconds of the calling thread (``time.thread_time``; tests script
    render costs with it), read before and after each render on the thread that renders.
    ``on_render(seconds)``: told the time of every render (metrics), on the event loop's
    thread. ``log_fields``: bound in the own thread (``streamer.logs``)."""

    def __init__(
        self,
        stage: RenderStage,
        clock: Clock,
        name: str = "render",
        executor: Executor | None = None,
        *,
        cpu_time: Callable[[], float] = time.thread_time,
        on_render: Callable[[float], None] | None = None,
        log_fields: Mapping[str, str] | None = None,
        idle: np.ndarray | None = None,
    ) -> None:
        self._stage = stage
        self._clock = clock
        self._cpu_time = cpu_time
        self._on_render = on_render
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"render-{name}",
            initializer=bind,
            initargs=(dict(log_fields or {}),),
        )
        self._inflight: asyncio.Future[_Rendered] | None = None
        self._inflight_stale = False
        self._last: np.ndarray | None = None
        self._reset_next = False
        self._after_reset = False  # no picture made since the barge-in yet
        self._rest: np.ndarray | None = None  # the last picture of the avatar at rest
        self.rendered = 0  # frames rendered (pictures made)
        self.repeated = 0  # frames published with the last picture instead of their own
        self.late = 0  # renders that missed their frame's deadline (shown by later frames)
        self.render_ms_recent: deque[float] = deque(maxlen=250)
        self._cpu_ms_recent: deque[float] = deque(maxlen=SETTLE)
        self.render_ms_max = 0.0
        # Until when (clock time) a frame is waiting for its picture: None when none is,
        # inf when one waits for its own picture without a deadline.
        self.waiting_until: float | None = None
        self.threaded = False  # the renderer runs on its own thread (see the module docstring)
        self.switches = 0
        self._since_switch = 0
        if idle is not None:
            self._last = self._rest = idle
            self.threaded = True

    @property
    def stage(self) -> RenderStage:
        return self._stage

    @property
    def delay_frames(self) -> int:
        return self._stage.delay_frames

    @property
    def busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    def reset(self) -> None:
        """Barge-in: the next render starts with ``stage.reset()``; a render still running is
        thrown away when it ends; until a picture made after the reset is ready, frames show
        the avatar's last picture at rest."""
        self._reset_next = True
        self._after_reset = True
        if self._inflight is not None:
            self._inflight_stale = True

    async def frames(
        self, motions: list[MotionFrame], deadline: float | None, may_start: bool = True
    ) -> list[VideoFrame]:
        """The pictures of ``motions``; ``deadline`` (clock time) bounds the wait for a
        render (None: wait for every render, as at the end of the stream)."""
        if not motions:
            return []
        if self._stage.delay_frames > 0:
            return await self._in_order(motions)
        return [await self._frame(m, deadline, may_start) for m in motions]

    def plan_inline(self, may_start: bool) -> Callable[[list[MotionFrame]], _Rendered] | None:
        """On the event loop, before a motion step: the render to run right after it in the
        same job (on the session's thread), or None (then ``frames`` as usual)."""
        if self.threaded or self._stage.delay_frames > 0 or self._inflight is not None:
            return None
        if not may_start and self._fallback() is not None:
            return None
        reset, self._reset_next = self._reset_next, False
        self.waiting_until = math.inf  # the frame waits for its picture, in the same job
        return functools.partial(self._render, reset=reset)

    def took_inline(self, rendered: _Rendered) -> list[VideoFrame]:
        """On the event loop: the pictures of a render run inline."""
        self.waiting_until = None
        frames, times = rendered
        self.rendered += len(frames)
        self._note(times)
        self._remember(frames)
        return frames

    async def flush(self) -> list[VideoFrame]:
        """End of stream: what a stage with a lookahead still holds."""
        await self._settle()
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(self._executor, self._stage.flush)
        self.rendered += len(frames)
        self._remember(frames)
        return frames

    async def aclose(self) -> None:
        """Wait for a render still running, then release the thread. A render that failed
        meanwhile is logged here: the session is closing, nobody else will see it."""
        try:
            await self._settle()
        except Exception:
            log.exception("a render failed while the session was closing")
        if self._own_executor:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._executor.shutdown, True)

    # ------------------------------------------------------------------ internals

    async def _frame(
        self, motion: MotionFrame, deadline: float | None, may_start: bool
    ) -> VideoFrame:
        self._collect()
        if self._fallback() is None:
            return await self._held(motion)
        # A render that could not be ready for its own frame only competes for the CPU.
        in_time = deadline is None or self._clock.now() < deadline
        if self._inflight is None and may_start and in_time:
            future = self._submit([motion])
            if deadline is None:
                await future
            else:
                await self._wait_until(future, deadline)
            if future.done():
                frames = self._collect()
                if len(frames) == 1:
                    return frames[0]
            else:
                self.late += 1
        fallback = self._fallback()
        if fallback is None:
            raise RuntimeError("the render stage returned no picture for a frame")
        self.repeated += 1
        return VideoFrame(motion=motion, image=fallback)

    async def _held(self, motion: MotionFrame) -> VideoFrame:
        """Wait for the frame's own picture: there is none it may show instead."""
        self.waiting_until = math.inf
        try:
            await self._settle()
            future = self._submit([motion])
            await future
            frames = self._collect()
        finally:
            self.waiting_until = None
        if len(frames) != 1:
            raise RuntimeError("the render stage returned no picture for a frame")
        return frames[0]

    def _fallback(self) -> np.ndarray | None:
        """The picture a frame shows when its own is not ready."""
        return self._rest if self._after_reset else self._last

    async def _in_order(self, motions: list[MotionFrame]) -> list[VideoFrame]:
        await self._settle()
        future = self._submit(motions)
        await future
        return self._collect()

    def _submit(self, motions: list[MotionFrame]) -> asyncio.Future[_Rendered]:
        reset, self._reset_next = self._reset_next, False
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._render, motions, reset)
        self._inflight = future
        self._inflight_stale = False
        return future

    def _render(self, motions: list[MotionFrame], reset: bool) -> _Rendered:
        """On the render (or session) thread; touches nothing but the stage (the figures are
        kept on the event loop's thread). Per frame: the time on the session's clock (how
        long the video waits) and the CPU time of the thread (what the render costs, which
        waiting for a core on a loaded machine does not change)."""
        if reset:
            self._stage.reset()
        out: list[VideoFrame] = []
        times: list[tuple[float, float]] = []
        for motion in motions:
            started, cpu = self._clock.now(), self._cpu_time()
            out.extend(self._stage.push(motion))
            elapsed = (self._clock.now() - started) * 1000.0
            times.append((elapsed, (self._cpu_time() - cpu) * 1000.0))
        return out, times

    def _note(self, times: list[tuple[float, float]]) -> None:
        """Keep the figures; move the renderer when it has turned slow or fast (module
        docstring): slow = costs over half a frame of CPU, or takes over a frame of time."""
        self.render_ms_recent.extend(elapsed for elapsed, _ in times)
        if self._on_render is not None:
            for elapsed, _ in times:
                self._on_render(elapsed / 1000.0)
        self._cpu_ms_recent.extend(cpu for _, cpu in times)
        self.render_ms_max = max([self.render_ms_max, *(elapsed for elapsed, _ in times)])
        self._since_switch += len(times)
        if not times:
            return
        elapsed_ms = list(self.render_ms_recent)[-SETTLE:]
        cpu_ms = list(self._cpu_ms_recent)
        if not self.threaded:
            slow_cpu = float(np.median(cpu_ms[-SLOW_WINDOW:])) > SLOW_MS
            if slow_cpu or float(np.median(elapsed_ms)) > FRAME_MS:
                self._switch(threaded=True)
        elif self._since_switch >= SETTLE:
            fast_cpu = float(np.median(cpu_ms[-SETTLE:])) < FAST_MS
            if fast_cpu and float(np.median(elapsed_ms)) < SLOW_MS:
                self._switch(threaded=False)

    def _switch(self, threaded: bool) -> None:
        self.threaded = threaded
        self.switches += 1
        self._since_switch = 0
        elapsed = float(np.median(list(self.render_ms_recent)[-SETTLE:]))
        cpu = float(np.median(list(self._cpu_ms_recent)[-SETTLE:]))
        where = "its own thread" if threaded else "the session's thread"
        log.info("renderer moves to %s (median %.1f ms, %.1f ms CPU)", where, elapsed, cpu)

    def _collect(self) -> list[VideoFrame]:
        """Take a finished render's pictures (raises what the render raised)."""
        future = self._inflight
        if future is None or not future.done():
            return []
        self._inflight = None
        frames, times = future.result()
        self.rendered += len(frames)
        self._note(times)
        if self._inflight_stale:
            self._inflight_stale = False
            return []
        self._remember(frames)
        return frames

    def _remember(self, frames: list[VideoFrame]) -> None:
        for frame in frames:
            if at_rest(frame.motion):
                self._rest = frame.image
        if frames:
            self._last = frames[-1].image
            self._after_reset = False

    async def _settle(self) -> None:
        """Let a running render finish (its picture becomes the last one unless stale)."""
        if self._inflight is not None:
            await asyncio.wait({self._inflight})
            self._collect()

    async def _wait_until(self, future: asyncio.Future[Any], deadline: float) -> None:
        if self._clock.now() >= deadline:
            return
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        self.waiting_until = deadline
        try:
            await asyncio.wait({future, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiting_until = None
            sleeper.cancel()
            await asyncio.gather(sleeper, return_exceptions=True)
