"""Where LiveRender runs the renderer: inline on the session's thread while renders are cheap,
on a thread of its own once they cost too much CPU, and back after a settling period.

Render costs are scripted: the renderer "spends" CPU on an injected CPU clock, the session's
clock is a VirtualClock that does not move, so every decision is exact and instant.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from live_fakes import FakeRenderStage, fake_stages, speech_like

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.clock import VirtualClock
from streamer.live_render import FAST_MS, SETTLE, SLOW_MS, SLOW_WINDOW, LiveRender
from streamer.pipeline import Pipeline
from streamer.types import AudioChunk, MotionFrame, VideoFrame

CHEAP_MS = FAST_MS / 2
COSTLY_MS = SLOW_MS * 1.5


class ScriptedCpu:
    """A thread CPU clock that moves only when the renderer spends CPU."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def spend(self, ms: float) -> None:
        self.seconds += ms / 1000.0


class CostlyRenderStage(FakeRenderStage):
    """Each picture costs ``cost_ms`` of (scripted) CPU; records the thread it ran on."""

    def __init__(self, cpu: ScriptedCpu, cost_ms: float) -> None:
        super().__init__()
        self.cpu = cpu
        self.cost_ms = cost_ms
        self.threads: list[str] = []

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        self.cpu.spend(self.cost_ms)
        self.threads.append(threading.current_thread().name)
        return super().push(item)


def _motions(count: int) -> list[MotionFrame]:
    audio = speech_like([(0.1, 0.8)], (count + 5) * SAMPLES_PER_FRAME / SAMPLE_RATE)
    pipeline: Pipeline[MotionFrame] = Pipeline(fake_stages(render=False))
    motions = pipeline.push(AudioChunk(samples=audio.astype(np.float32), start=0))
    assert len(motions) >= count
    return motions[:count]


class Driver:
    """Feeds motion frames to a LiveRender the way a session's tick does: the inline render
    when the LiveRender plans one (run here, i.e. on the session's thread), else ``frames``."""

    def __init__(self, cost_ms: float, frames: int = 200) -> None:
        self.cpu = ScriptedCpu()
        self.stage = CostlyRenderStage(self.cpu, cost_ms)
        self.render = LiveRender(self.stage, VirtualClock(), "test", cpu_time=self.cpu)
        self._motions = iter(_motions(frames))

    async def frames(self, count: int, cost_ms: float | None = None) -> None:
        if cost_ms is not None:
            self.stage.cost_ms = cost_ms
        for _ in range(count):
            motion = next(self._motions)
            inline = self.render.plan_inline(may_start=True)
            if inline is not None:
                pictures = self.render.took_inline(inline([motion]))
            else:
                pictures = await self.render.frames([motion], deadline=None)
            assert [p.index for p in pictures] == [motion.index]  # every frame its own picture

    def ran_on_own_thread(self, last: int) -> list[bool]:
        return [name.startswith("render-test") for name in self.stage.threads[-last:]]


@pytest.fixture
def driver() -> Driver:
    return Driver(CHEAP_MS)


async def test_a_cheap_renderer_stays_inline(driver: Driver) -> None:
    await driver.frames(3 * SETTLE)
    assert not driver.render.threaded and driver.render.switches == 0
    assert set(driver.stage.threads) == {threading.current_thread().name}
    assert driver.render.rendered == 3 * SETTLE
    await driver.render.aclose()


async def test_a_costly_renderer_moves_to_its_own_thread_and_back_when_cheap_again(
    driver: Driver,
) -> None:
    await driver.frames(10)
    # Costly renders: the median CPU of the last SLOW_WINDOW crosses half a frame after a
    # majority of them, and the renderer moves at once.
    majority = SLOW_WINDOW // 2 + 1
    await driver.frames(majority - 1, COSTLY_MS)
    assert not driver.render.threaded
    await driver.frames(1)
    assert driver.render.threaded and driver.render.switches == 1
    assert driver.ran_on_own_thread(majority) == [False] * majority
    await driver.frames(2 * SETTLE)
    assert driver.render.threaded and driver.render.switches == 1
    assert all(driver.ran_on_own_thread(2 * SETTLE))
    # Cheap again: back once the median of the last SETTLE renders is under a quarter frame,
    # i.e. after a majority of SETTLE cheap renders.
    back_after = SETTLE // 2 + 1
    await driver.frames(back_after - 1, CHEAP_MS)
    assert driver.render.threaded
    await driver.frames(1)
    assert not driver.render.threaded and driver.render.switches == 2
    await driver.frames(5)
    assert driver.ran_on_own_thread(6) == [True] + [False] * 5
    await driver.render.aclose()


async def test_the_move_back_waits_for_settle_renders_on_the_thread(driver: Driver) -> None:
    """A short costly burst moves the renderer; cheap renders right after bring it back only
    after SETTLE renders on its own thread, not as soon as the median drops."""
    await driver.frames(2 * SETTLE)
    await driver.frames(SLOW_WINDOW, COSTLY_MS)
    assert driver.render.threaded and driver.render.switches == 1
    on_thread = SLOW_WINDOW - (SLOW_WINDOW // 2 + 1)  # costly renders after the move
    await driver.frames(SETTLE - on_thread - 1, CHEAP_MS)
    assert driver.render.threaded  # the median is cheap already, the settling is not over
    await driver.frames(1)
    assert not driver.render.threaded and driver.render.switches == 2
    await driver.render.aclose()


async def test_cpu_time_decides_not_the_session_clock() -> None:
    """Costly renders on a session clock that shows no time passing still move the renderer:
    CPU cost alone is enough (a loaded machine stretches time, not CPU)."""
    driver = Driver(COSTLY_MS)
    await driver.frames(SLOW_WINDOW)
    assert driver.render.threaded
    assert max(driver.render.render_ms_recent) == 0.0  # no time passed on the session clock
    await driver.render.aclose()
