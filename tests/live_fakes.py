"""In-test stand-ins for the heavy stages, and speech-like test audio.

``fake_stages`` mirrors ``streamer.build.build_motion_stages`` + a renderer with the same
contracts, but with a feature stage, a lip source and a renderer that cost microseconds:
the lip source opens the mouth with the frame's RMS level, the renderer draws a face whose
mouth height follows ``mouth_open``. The silence and motion stages are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME, frames_from_ms
from streamer.config import Config
from streamer.stages.motion import MotionStage
from streamer.stages.silence import SilenceStage
from streamer.types import AudioChunk, FeatureFrame, LipFrame, MotionFrame, VideoFrame

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
    """The stages the end-to-end (server, browser, kiosk) tests run: the real pipeline
    (``streamer.live.live_stage_factory``: motion stages + the mesh renderer with the bundled
    avatar) when this checkout has it, else the real motion stages + the stand-in renderer,
    else the stand-ins above. The tests read the mouth through ``MouthProbe``, so they hold
    for any renderer."""
    import importlib.util

    def have(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    if have("streamer.stages.render") and have("msadtalker.avatar"):
        from streamer.live import live_stage_factory

        factory = live_stage_factory(config)
        return lambda: list(factory())
    if have("streamer.stages.features") and have("streamer.stages.lips"):
        from streamer.build import build_motion_stages

        return lambda: [*build_motion_stages(config), FakeRenderStage()]
    return lambda: fake_stages(config)


def mouth_probe(stages: Callable[[], list[Any]]) -> Any:
    from streamer.bench.mouth import MouthProbe

    return MouthProbe.from_render_stage(stages()[-1])


def mouth_darkness(image: np.ndarray) -> float:
    """How much of the fake face's mouth box is mouth-coloured (0 closed .. ~1 open)."""
    box = image[MOUTH_BOX[0], MOUTH_BOX[1]].astype(np.float32)
    dark = (box[..., 0] < 140) & (box[..., 1] < 90)
    return float(dark.mean())


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

    async def settle(self) -> None:
        """Until every frame that is due, or whose audio is complete, has been made."""
        end = self.session.ingest.end_position or 0
        due = self.session.stats.ticks
        while self.session.due_time(due) <= self.clock.now() or (due + 1) * 640 <= end:
            due += 1
        await self.session.wait_ticks(due)


def _serve_fake() -> None:
    """``python tests/live_fakes.py [record_dir]``: the live server with the fake stages on a
    free loopback port; prints the URL (used by the SIGTERM test)."""
    import sys

    from streamer.commands.serve import run_async, serve
    from streamer.config import ServerConfig

    record_dir = sys.argv[1] if len(sys.argv) > 1 else ""
    config = Config(server=ServerConfig(port=0, jitter_ms=20, record_dir=record_dir))

    def announce(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()

    run_async(serve(config, lambda: fake_stages(config), announce))


if __name__ == "__main__":
    _serve_fake()
