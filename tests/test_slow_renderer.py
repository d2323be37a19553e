"""A renderer far slower than real time (SadTalker's networks on a CPU): the server says so at
start, and a session shows the avatar's idle picture, not nothing, until its first picture.

The slow render is a fake that blocks until the test lets it finish (no wall-clock waits);
the session's clock is a VirtualClock whose deadlines have always passed.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from live_fakes import FakeRenderStage, fake_stages, speech_like

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.clock import VirtualClock
from streamer.live_render import LiveRender
from streamer.pipeline import Pipeline
from streamer.realtime import FrameCost, check_at_start, measure_frame_cost, warn_if_slow
from streamer.types import AudioChunk, MotionFrame, VideoFrame


class BlockedRenderStage(FakeRenderStage):
    """Renders only when ``go`` is set; offers an idle picture like ``NeuralRenderStage``."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.idle = np.full((8, 8, 3), 77, np.uint8)

    def idle_picture(self) -> np.ndarray:
        return self.idle

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        assert self.go.wait(30), "the test never let the render finish"
        return super().push(item)


def _motions(count: int) -> list[MotionFrame]:
    audio = speech_like([(0.1, 0.8)], (count + 5) * SAMPLES_PER_FRAME / SAMPLE_RATE)
    pipeline: Pipeline[MotionFrame] = Pipeline(fake_stages(render=False))
    return pipeline.push(AudioChunk(samples=audio.astype(np.float32), start=0))[:count]


async def test_frames_show_the_idle_picture_until_the_slow_renderer_has_one() -> None:
    stage = BlockedRenderStage()
    clock = VirtualClock()
    render = LiveRender(stage, clock, "test", idle=stage.idle_picture())
    assert render.threaded  # a slow first render never blocks the session's thread
    assert render.plan_inline(may_start=True) is None
    motions = _motions(6)
    try:
        shown = []
        for motion in motions[:3]:
            # Deadline "now": the frame cannot wait for a render.
            (frame,) = await render.frames([motion], deadline=clock.now())
            shown.append(frame)
        assert all(f.image is stage.idle for f in shown)
        assert [f.motion.index for f in shown] == [m.index for m in motions[:3]]
        assert render.repeated == 3 and render.rendered == 0
        stage.go.set()
        (frame,) = await render.frames([motions[3]], deadline=None)  # time to render
        assert frame.image is not stage.idle and render.rendered >= 1
    finally:
        stage.go.set()
        await render.aclose()


async def test_without_an_idle_picture_the_first_frame_still_waits_for_its_own() -> None:
    stage = FakeRenderStage()
    render = LiveRender(stage, VirtualClock(), "test")
    assert not render.threaded
    (frame,) = await render.frames(_motions(1), deadline=0.0)
    assert render.rendered == 1 and frame.image is not None
    await render.aclose()


def test_the_start_up_check_times_frames_after_a_warm_up() -> None:
    cost = measure_frame_cost(lambda: fake_stages(), frames=2)
    assert cost.frames_timed == 2 and cost.ms_per_frame >= 0.0


def test_a_machine_too_slow_for_real_time_gets_a_warning_that_says_what_to_do(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="streamer.realtime"):
        warn_if_slow(FrameCost(ms_per_frame=12.0, frames_timed=2), "mesh")
        warn_if_slow(FrameCost(ms_per_frame=4800.0, frames_timed=2), "neural")
    fast, slow = caplog.records
    assert fast.levelno == logging.INFO and "real time" in fast.getMessage()
    assert slow.levelno == logging.WARNING
    message = slow.getMessage()
    assert "4800 ms per frame" in message and "40 ms budget" in message
    assert "GPU" in message and "mesh" in message


def test_the_idle_picture_of_the_neural_stage_is_the_frame_size() -> None:
    from types import SimpleNamespace

    from streamer.stages.neural_render import NeuralRenderStage

    photo = np.zeros((300, 300, 3), np.uint8)
    avatar = SimpleNamespace(image=photo, original=np.zeros((600, 400, 3), np.uint8))
    renderer = SimpleNamespace(avatar=avatar, size=256, full_size=(400, 600))
    crop = NeuralRenderStage(renderer, "crop")  # type: ignore[arg-type]
    full = NeuralRenderStage(renderer, "full")  # type: ignore[arg-type]
    assert crop.idle_picture().shape == (256, 256, 3)
    assert full.idle_picture().shape == (600, 400, 3)


def test_a_start_waits_for_the_measurement_only_so_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = BlockedRenderStage()
    with caplog.at_level(logging.INFO, logger="streamer.realtime"):
        check = check_at_start(lambda: [*fake_stages(render=False), stage], wait_s=0.01)
        assert check.cost is None and check.still_measuring
        (early,) = caplog.records
        assert early.levelno == logging.WARNING and "still rendering" in early.getMessage()
        stage.go.set()
        (thread,) = [t for t in threading.enumerate() if t.name == "frame-cost"]
        assert thread is check.pending
        thread.join(30)
        assert not check.still_measuring
    # Its figure follows when the frame is done.
    assert len(caplog.records) == 2 and "blocked renderer" in caplog.records[1].getMessage()


@pytest.mark.slow
def test_serve_stopped_while_its_neural_frame_is_timed_exits_cleanly(
    synthetic_checkpoints: Path,
) -> None:
    """SIGTERM while the start-up measurement is still inside the networks (a neural frame
    on a CPU takes seconds): before, the interpreter's shutdown aborted the process
    ("terminate called without an active exception", SIGABRT)."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "serve", "--port", "0"]
        + ["--checkpoints", str(synthetic_checkpoints)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        # The start waits at most 15 s for the measurement; on a machine like CI's the
        # neural frame is still being timed when the server is up ("over 15000 ms").
        for line in serve.stdout:
            if "msadtalker live" in line:
                break
        serve.send_signal(signal.SIGTERM)
        rest, _ = serve.communicate(timeout=120)
    finally:
        serve.kill()
    assert serve.returncode == 0, rest
    assert "terminate called" not in rest
