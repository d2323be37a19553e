"""A stand-in for a room's session in the broadcast tests: frames with A/V sync markers.

``MarkerSource`` publishes ``VideoFrame``s at 25 fps through a real ``FanOut`` (the session's
own fan-out): every ``MARK_EVERY``-th frame is white and carries a 1 kHz beep in its 640
samples, every other frame is dark and silent. Read back, each flash must coincide with a
beep (``av_offsets``), whatever the container and the encoder did to the timestamps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.clock import RealtimeClock
from streamer.fanout import FanOut, Subscription
from streamer.types import (
    FeatureFrame,
    HeadPose,
    LipFrame,
    MotionFrame,
    SilenceFrame,
    VideoFrame,
)

MARK_EVERY = 25
WIDTH, HEIGHT = 160, 120


def marker_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> VideoFrame:
    marked = index % MARK_EVERY == 0
    audio = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
    if marked:
        t = np.arange(SAMPLES_PER_FRAME) / SAMPLE_RATE
        audio = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    image = np.full((height, width, 3), 235 if marked else 20, dtype=np.uint8)
    features = FeatureFrame(index=index, audio=audio, mel=np.zeros((80, 16), np.float32))
    lips = LipFrame(features=features, upper_lip=0.0, lower_lip=0.0, mouth_open=0.0)
    silence = SilenceFrame(lips=lips, silent=not marked, weight=0.0)
    pose = HeadPose(0.0, 0.0, 0.0)
    motion = MotionFrame(silence=silence, pose=pose, pose_raw=pose, mouth_open=0.0, blink=0.0)
    return VideoFrame(motion=motion, image=image)


class MarkerSource:
    """Frames at real-time pace until ``end()`` (or ``frames`` of them); ``finished`` is set
    once it ended, as a session's is."""

    def __init__(self, queue_frames: int = 50) -> None:
        self._fanout: FanOut[VideoFrame] = FanOut(queue_frames)
        self.finished = asyncio.Event()
        self.published = 0
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription[VideoFrame]:
        return self._fanout.subscribe(name, maxsize)

    def start(self, frames: int | None = None) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(frames), name="markers")

    async def _run(self, frames: int | None) -> None:
        clock = RealtimeClock()
        t0 = clock.now()
        index = 0
        try:
            while frames is None or index < frames:
                await clock.sleep_until(t0 + (index + 1) / FPS)
                self._fanout.publish(marker_frame(index))
                self.published = index = index + 1
                self._tick.set()
        finally:
            self._fanout.end()
            self.finished.set()
            self._tick.set()

    async def wait_frames(self, count: int) -> None:
        while self.published < count and not self.finished.is_set():
            self._tick.clear()
            await self._tick.wait()

    async def end(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fanout.end()
        self.finished.set()


def flash_times(path: Path | str) -> list[float]:
    with av.open(str(path)) as container:
        times = []
        for frame in container.decode(video=0):
            luma = frame.to_ndarray(format="gray")
            if luma.mean() > 128 and frame.time is not None:
                times.append(float(frame.time))
    return times


def beep_times(path: Path | str) -> list[float]:
    """Onsets of the beeps: the first loud sample after at least half a second of quiet."""
    onsets: list[float] = []
    last_loud = -1.0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if frame.time is None:
                continue
            samples = (
                frame.to_ndarray().reshape(-1) if frame.format.is_planar else frame.to_ndarray()[0]
            )
            loud = np.flatnonzero(np.abs(samples) > 0.2)
            for i in loud:
                t = float(frame.time) + i / frame.sample_rate
                if t - last_loud > 0.5:
                    onsets.append(t)
                last_loud = t
    return onsets


def av_offsets(path: Path | str) -> list[float]:
    """For each flash after the first second, the beep onset nearest to it minus the flash."""
    flashes = [t for t in flash_times(path) if t >= 1.0]
    beeps = beep_times(path)
    assert flashes and beeps, f"no markers read back: {len(flashes)} flashes, {len(beeps)} beeps"
    return [min(beeps, key=lambda b: abs(b - f)) - f for f in flashes]
