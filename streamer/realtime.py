"""Can this machine make the live avatar in real time? Measured once, when a server starts.

A live session has 40 ms per frame (25 fps) for its motion stages and its render. The mesh
renderer needs a few ms on a CPU; SadTalker's networks (``--checkpoints``) need a GPU: on a
CPU a frame costs seconds, and a session would otherwise start without a word in the log and
show nothing until its first picture is done. ``measure_frame_cost`` pushes a little silence
through one stream's stages (the first frame is a warm-up: lazy initialisation, caches) and
times the frames after it; ``warn_if_slow`` says at start, as a WARNING, what it found and
what to do. Sessions still start: they show the avatar's idle picture until the renderer
has a picture, and return the voice (``streamer.live_render``).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from msadtalker.timing import FPS, SAMPLES_PER_FRAME
from streamer.assembly import StageFactory
from streamer.pipeline import Pipeline
from streamer.types import AudioChunk

log = logging.getLogger(__name__)

BUDGET_MS = 1000.0 / FPS  # 40 ms
TIMED_FRAMES = 2
MAX_SECONDS = 30.0  # a renderer slower than this per frame is timed on fewer frames
WAIT_S = 15.0  # how long a start waits for the measurement
ADVICE = (
    "sessions cannot render in real time. They still start: the page shows the avatar's idle "
    "picture, updated as pictures are made, with a notice, and the voice comes back. For real "
    'time run it where a CUDA GPU is (render.device = "auto" picks it) or use the CPU mesh '
    "renderer (serve without --checkpoints)."
)


@dataclass(frozen=True)
class FrameCost:
    """Milliseconds per frame of one stream's stages (median of the timed frames)."""

    ms_per_frame: float
    frames_timed: int
    budget_ms: float = BUDGET_MS

    @property
    def real_time(self) -> bool:
        return self.ms_per_frame <= self.budget_ms


def measure_frame_cost(stages: StageFactory, frames: int = TIMED_FRAMES) -> FrameCost:
    """Silence through a fresh stage list: the first frame out is a warm-up, the next
    ``frames`` are timed (fewer when they take more than ``MAX_SECONDS`` together)."""
    pipeline: Pipeline[Any] = Pipeline(list(stages()))
    silence = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
    times: list[float] = []
    position = 0
    started = time.perf_counter()
    warm = False
    # The stages' delay: that many frames of audio go in before the first frame comes out.
    for _ in range(pipeline.delay_frames + frames + 1):
        began = time.perf_counter()
        out = pipeline.push(AudioChunk(silence, position))
        position += SAMPLES_PER_FRAME
        if not out:
            continue
        if warm:
            times.append((time.perf_counter() - began) * 1000.0 / len(out))
        warm = True
        if len(times) >= frames or time.perf_counter() - started > MAX_SECONDS:
            break
    pipeline.flush()
    if not times:  # the warm-up alone took the whole allowance: it is the figure
        return FrameCost((time.perf_counter() - started) * 1000.0, frames_timed=0)
    return FrameCost(ms_per_frame=float(np.median(times)), frames_timed=len(times))


@dataclass(frozen=True)
class StartCheck:
    """What ``check_at_start`` found: the cost, or None when it was not measured within the
    wait; ``pending``: the measuring thread while it still runs (its frame takes seconds)."""

    cost: FrameCost | None
    pending: threading.Thread | None = None

    @property
    def still_measuring(self) -> bool:
        return self.pending is not None and self.pending.is_alive()


def check_at_start(stages: StageFactory, wait_s: float = WAIT_S) -> StartCheck:
    """Measure one stream's frame cost and say it in the log (``warn_if_slow``). The
    measurement runs on a thread of its own; a start waits for it at most ``wait_s``: a
    renderer slower than that per frame is reported slow at once (its exact figure follows
    in the log when its frame is done). That thread is a daemon, and one still inside the
    networks when the process ends aborts it ("terminate called without an active
    exception"): a caller that ends first checks ``still_measuring`` (``streamer.commands.
    serve`` then exits without waiting for it)."""
    name = type(list(stages())[-1]).__name__.removesuffix("RenderStage").lower() or "the"
    future: Future[FrameCost] = Future()

    def measure() -> None:
        try:
            future.set_result(measure_frame_cost(stages))
        except Exception as exc:
            future.set_exception(exc)

    thread = threading.Thread(target=measure, name="frame-cost", daemon=True)
    thread.start()
    try:
        cost = future.result(timeout=wait_s)
    except TimeoutError:
        log.warning(
            "%s renderer: over %.0f ms per frame on this machine (its first frame is still "
            "rendering), over the %.0f ms budget of 25 fps: %s",
            name,
            wait_s * 1000.0,
            BUDGET_MS,
            ADVICE,
        )
        future.add_done_callback(lambda done: _report_late(done, name))
        return StartCheck(None, thread)
    except Exception:
        log.warning("%s renderer: its frame cost could not be measured", name, exc_info=True)
        return StartCheck(None)
    warn_if_slow(cost, name)
    return StartCheck(cost)


def _report_late(done: Future[FrameCost], name: str) -> None:
    if done.exception() is None:
        warn_if_slow(done.result(), name)


def warn_if_slow(cost: FrameCost, renderer: str) -> None:
    """One log line at start: INFO when the machine keeps up, else a WARNING naming the cost,
    the budget and the ways out."""
    if cost.real_time:
        log.info(
            "%s renderer: %.1f ms per frame (budget %.0f ms): real time",
            renderer,
            cost.ms_per_frame,
            cost.budget_ms,
        )
        return
    log.warning(
        "%s renderer: %.0f ms per frame on this machine, over the %.0f ms budget of 25 fps: "
        "sessions cannot render in real time. They still start: the page shows the avatar's "
        "idle picture (updated at ~%.2f fps) and a notice, and the voice comes back. For real "
        'time run it where a CUDA GPU is (render.device = "auto" picks it) or use the CPU mesh '
        "renderer (serve without --checkpoints).",
        renderer,
        cost.ms_per_frame,
        cost.budget_ms,
        1000.0 / max(cost.ms_per_frame, 1e-3),
    )
