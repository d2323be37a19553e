"""In-test stand-ins for the heavy stages, and speech-like test audio.

``fake_stages`` mirrors ``streamer.assembly.build_motion_stages`` + a renderer with the same
contracts, but with a feature stage, a lip source and a renderer that cost microseconds:
the lip source opens the mouth with the frame's RMS level, the renderer draws a face whose
mouth height follows ``mouth_open``. The silence and motion stages are the real ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME, frames_from_ms
from streamer.config import Config, ServerConfig
from streamer.stages.motion import MotionStage
from streamer.stages.silence import SilenceStage
from streamer.types import AudioChunk, FeatureFrame, LipFrame, MotionFrame, VideoFrame

T = TypeVar("T")
FAKE_SIZE = 96
# Mouth box of the fake face (rows, cols) where the mouth is drawn.
MOUTH_BOX = (slice(56, 84), slice(30, 66))


class FakeFeatureStage:
    """AudioChunk -> FeatureFrame (640 samples each, mel all zeros). Delay 0."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._index = 0

    @property
    def delay_frames(self) -> int:
        return 0

    def push(self, item: AudioChunk) -> list[FeatureFrame]:
        self._pending = np.concatenate([self._pending, item.samples.astype(np.float32)])
        out = []
        while len(self._pending) >= SAMPLES_PER_FRAME:
            out.append(self._frame(self._pending[:SAMPLES_PER_FRAME]))
            self._pending = self._pending[SAMPLES_PER_FRAME:]
        return out

    def flush(self) -> list[FeatureFrame]:
        if not len(self._pending):
            return []
        audio = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
        audio[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, dtype=np.float32)
        return [self._frame(audio)]

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def _frame(self, audio: np.ndarray) -> FeatureFrame:
        frame = FeatureFrame(index=self._index, audio=audio.copy(), mel=np.zeros((80, 16)))
        self._index += 1
        return frame


class FakeLipStage:
    """FeatureFrame -> LipFrame: mouth opening from the frame's RMS level. Delay 0."""

    nominal_range = 1.0

    @property
    def delay_frames(self) -> int:
        return 0

    def push(self, item: FeatureFrame) -> list[LipFrame]:
        rms = float(np.sqrt(np.mean(np.square(item.audio, dtype=np.float64))))
        mouth = min(1.0, rms * 6.0)
        return [
            LipFrame(
                features=item,
                upper_lip=-0.5 * mouth,
                lower_lip=0.5 * mouth,
                mouth_open=mouth,
            )
        ]

    def flush(self) -> list[LipFrame]:
        return []

    def reset(self) -> None:
        pass


class FakeRenderStage:
    """MotionFrame -> VideoFrame: a grey face, eyes that blink, a mouth that opens. Delay 0."""

    def __init__(self, size: int = FAKE_SIZE) -> None:
        self._size = size
        yy, xx = np.mgrid[0:size, 0:size]
        self._yy = yy
        self._xx = xx
        self.pushed = 0

    @property
    def delay_frames(self) -> int:
        return 0

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        self.pushed += 1
        s = self._size
        img = np.full((s, s, 3), 200, dtype=np.uint8)
        cx = s / 2 + item.pose.yaw
        cy = s / 2 + item.pose.pitch
        face = ((self._xx - cx) / (0.42 * s)) ** 2 + ((self._yy - cy) / (0.48 * s)) ** 2 <= 1
        img[face] = (225, 180, 150)
        eye_h = max(0.5, 5.0 * (1.0 - item.blink))
        for ex in (cx - 14, cx + 14):
            eye = ((self._xx - ex) / 6.0) ** 2 + ((self._yy - (cy - 10)) / eye_h) ** 2 <= 1
            img[eye] = (40, 40, 40)
        mouth_h = 1.0 + 11.0 * item.mouth_open
        mouth = ((self._xx - cx) / 14.0) ** 2 + ((self._yy - (cy + 22)) / mouth_h) ** 2 <= 1
        img[mouth] = (90, 20, 30)
        return [VideoFrame(motion=item, image=img)]

    def flush(self) -> list[VideoFrame]:
        return []

    def reset(self) -> None:
        pass


class SleepyRenderStage(FakeRenderStage):
    """A renderer slower than real time in wall time: every picture takes ``cost_s``."""

    def __init__(self, cost_s: float, size: int = FAKE_SIZE) -> None:
        super().__init__(size)
        self._cost = cost_s

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        time.sleep(self._cost)  # the cost of a slow renderer (a test may sleep)
        return super().push(item)


class SlowRenderStage(FakeRenderStage):
    """A renderer far slower than real time on a ``VirtualClock``: each ``push`` (on the
    session's render thread) returns only once ``cost_s`` of virtual time has passed since it
    began. ``rendered_for[id(image)]`` is the frame index a picture was made for."""

    def __init__(self, clock: Any, cost_s: float, size: int = FAKE_SIZE) -> None:
        super().__init__(size)
        self._clock = clock
        self._cost = cost_s
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._until: float | None = None
        self._running = False
        self._unblocked = False
        self.rendered_for: dict[int, int] = {}
        self.started: list[float] = []

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        with self._lock:
            self._until = self._clock.now() + self._cost
            self._running = True
            self.started.append(self._clock.now())
        while not self._unblocked and not self.time_is_up():
            self._wake.wait(0.0005)
        (frame,) = super().push(item)
        with self._lock:
            self.rendered_for[id(frame.image)] = frame.index
            self._running = False
        return [frame]

    def needs_time(self) -> bool:
        """A render is under way and waits for (virtual) time to pass."""
        with self._lock:
            running = self._running
        return running and not self.time_is_up()

    def time_is_up(self) -> bool:
        """The latest render has had all its (virtual) time."""
        with self._lock:
            return self._until is not None and self._clock.now() >= self._until - 1e-9

    def unblock(self) -> None:
        """Let every render finish at once (the end of a test)."""
        self._unblocked = True
        self._wake.set()


def fake_stages(config: Config | None = None, render: bool = True) -> list[Any]:
    config = config or Config()
    lips = FakeLipStage()
    stages: list[Any] = [
        FakeFeatureStage(),
        lips,
        SilenceStage(
            config.silence,
            lookahead=frames_from_ms(config.pipeline.lookahead_ms),
            range_floor=config.silence.range_floor_frac * lips.nominal_range,
        ),
        MotionStage(
            pose=config.pose,
            silence=config.silence,
            blink=config.blink,
            seed=config.pipeline.seed,
            still=config.render.still,
        ),
    ]
    if render:
        stages.append(FakeRenderStage())
    return stages


def stages_under_test(config: Config) -> Callable[[], list[Any]]:
    """The stages the end-to-end (server, browser, kiosk) tests run: the real pipeline, as
    ``msadtalker serve`` builds it (motion stages + the mesh renderer, bundled avatar), but
    with the config's offline lookahead (``pipeline.lookahead_ms``, 80 unless a test sets it;
    ``serve`` passes ``server.lookahead_ms``): the tests' frame expectations were set with the
    paper's centred window. They read the mouth through ``MouthProbe``, so they hold for any
    renderer."""
    # The server section (ports, record dirs, timeouts) has no say in the stages.
    factory = _prepared_factory(dataclasses.replace(config, server=ServerConfig()))
    return lambda: list(factory())


@functools.cache
def _prepared_factory(config: Config) -> Callable[[], Any]:
    """The avatar is prepared once per test process and config, as a server does at start."""
    from streamer.assembly import stage_factory

    return stage_factory(config)


def mouth_probe(stages: Callable[[], Sequence[Any]]) -> Any:
    from streamer.bench.mouth import MouthProbe

    return MouthProbe.from_render_stage(stages()[-1])


def mouth_darkness(image: np.ndarray) -> float:
    """How much of the fake face's mouth box is mouth-coloured (0 closed .. ~1 open)."""
    box = image[MOUTH_BOX[0], MOUTH_BOX[1]].astype(np.float32)
    dark = (box[..., 0] < 140) & (box[..., 1] < 90)
    return float(dark.mean())


class FrameWatch:
    """A ``LoopbackClient``'s ``on_video``: counts the frames the client decodes (each
    measured by ``measure``, whose result the client keeps) so that a test waits for the
    n-th frame rather than for a stretch of wall time."""

    def __init__(self, measure: Callable[[np.ndarray], Any] | None = None) -> None:
        self.count = 0
        self._measure = measure
        self._frame = asyncio.Event()

    def __call__(self, rgb: np.ndarray) -> Any:
        self.count += 1
        self._frame.set()
        return self._measure(rgb) if self._measure is not None else None

    async def wait_for(self, count: int, timeout_s: float = 20.0) -> None:
        """Until ``count`` frames have arrived in all; an ``AssertionError`` after
        ``timeout_s`` (a liveness bound, not a speed test)."""

        async def reach() -> None:
            while self.count < count:
                self._frame.clear()
                await self._frame.wait()

        await within(reach(), timeout_s, f"{count} video frames (got {self.count})")


def frames(client: Any) -> FrameWatch:
    """The ``FrameWatch`` a client was made with (as its ``on_video``)."""
    watch = client.on_video
    assert isinstance(watch, FrameWatch), "the client was made without a FrameWatch"
    return watch


async def within(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    """``awaitable``'s result, or an ``AssertionError`` naming ``what`` after ``timeout_s``."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout_s:g} s") from None


async def eventually(
    condition: Callable[[], bool], what: str, timeout_s: float = 10.0, poll_s: float = 0.02
) -> None:
    """Until ``condition()`` holds, checked every ``poll_s``: for state that has no event to
    wait on (a dict emptied by another task, a thread pool shut down, a process gone, a log
    line); an ``AssertionError`` naming ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(poll_s)


def stall_network(client: Any, stalled: bool) -> None:
    """Cut (or restore) a ``LoopbackClient``'s network both ways, as an outage or a frozen
    process would: what it sends and what reaches it are lost."""
    protocols = {
        id(protocol): protocol
        for transceiver in client.pc.getTransceivers()
        for protocol in transceiver.sender.transport.transport.iceGatherer._connection._protocols
    }
    for protocol in protocols.values():
        if stalled:
            setattr(protocol, "datagram_received", lambda data, addr: None)  # noqa: B010
            setattr(protocol.transport, "sendto", lambda data, addr=None: None)  # noqa: B010
        else:
            delattr(protocol, "datagram_received")  # the class's own again
            delattr(protocol.transport, "sendto")


def speech_like(
    bursts: list[tuple[float, float]], total_s: float, rate: int = SAMPLE_RATE, seed: int = 0
) -> np.ndarray:
    """Voiced bursts (a 120 Hz pulse train through two formants, syllable-modulated) at the
    given (start_s, end_s) spans with sharp onsets, silence elsewhere (plus faint noise)."""
    rng = np.random.default_rng(seed)
    n = round(total_s * rate)
    t = np.arange(n) / rate
    audio = 0.0005 * rng.standard_normal(n)
    for start, end in bursts:
        i0, i1 = round(start * rate), min(n, round(end * rate))
        tt = t[i0:i1] - start
        f0 = 120 + 15 * np.sin(2 * np.pi * 3 * tt)
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
        formants = 0.6 * np.sin(2 * np.pi * 700 * tt) + 0.3 * np.sin(2 * np.pi * 1200 * tt)
        syllables = 0.55 + 0.45 * np.abs(np.sin(2 * np.pi * 2.5 * tt + np.pi / 2))
        audio[i0:i1] += 0.25 * syllables * voiced * (0.6 + 0.4 * formants)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


class VirtualMic:
    """Runs a session on a ``VirtualClock``: every 20 ms the next 20 ms of ``audio`` arrives
    (as a mic delivers it; nothing once ``audio`` is used up or ``stalled``), then every tick
    that is due has run."""

    def __init__(self, session: Any, clock: Any, audio: np.ndarray | None = None) -> None:
        self.session = session
        self.clock = clock
        self.audio = audio if audio is not None else np.zeros(0, dtype=np.float32)
        self.fed = 0
        self.stalled = False

    async def run(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            await self.clock.advance(0.02)
            if not self.stalled and self.fed < len(self.audio):
                self.session.feed(self.audio[self.fed : self.fed + 320])
                self.fed += 320
            await self.settle()

    async def run_past_a_slow_renderer(self, seconds: float, stage: SlowRenderStage) -> None:
        """As ``run``, for a session whose renderer (``stage``) is slower than real time: after
        each step, a render whose time is up is seen finished and every tick that can run has
        run, except one waiting for its picture until a time that has not come yet."""
        for _ in range(round(seconds / 0.02)):
            await self.clock.advance(0.02)
            if not self.stalled and self.fed < len(self.audio):
                self.session.feed(self.audio[self.fed : self.fed + 320])
                self.fed += 320
            render = self.session.render
            # A render whose time is up is finishing on its thread: let the session see it
            # done before anything else happens, as it would in real time.
            while render.busy and stage.time_is_up():  # noqa: ASYNC110 (a thread, no event)
                await asyncio.sleep(0.0005)
            # Every tick that is due or whose audio is in has run, unless it is waiting for
            # a picture until a time that has not come yet.
            due = self._ticks_due()
            while self.session.stats.ticks < due and not self.session.finished.is_set():
                waiting = render.waiting_until
                if waiting is not None and waiting > self.clock.now() and stage.needs_time():
                    break
                await asyncio.sleep(0.0005)
            for _ in range(20):
                await asyncio.sleep(0)

    def _ticks_due(self) -> int:
        end = self.session.ingest.end_position or 0
        due = int(self.session.stats.ticks)
        while self.session.due_time(due) <= self.clock.now() or (due + 1) * 640 <= end:
            due += 1
        return due

    async def settle(self) -> None:
        """Until every frame that is due, or whose audio is complete, has been made."""
        await self.session.wait_ticks(self._ticks_due())


def _serve_fake() -> None:
    """``python tests/live_fakes.py [record_dir]``: the live server with the fake stages on a
    free loopback port; prints the URL (used by the SIGTERM test)."""
    import sys

    from streamer.server.run import run_async, serve

    record_dir = sys.argv[1] if len(sys.argv) > 1 else ""
    config = Config(server=ServerConfig(port=0, jitter_ms=20, record_dir=record_dir))

    def announce(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    run_async(serve(config, lambda: fake_stages(config), announce))


if __name__ == "__main__":
    _serve_fake()
