"""Local microphone (``sounddevice``) as a live session's audio source.

PortAudio calls ``_callback`` on its own thread every 20 ms; the block is copied and handed to
the event loop with ``call_soon_threadsafe`` into a bounded queue (the oldest block is dropped
and counted when the loop falls behind). The loop side resamples to 16 kHz mono and feeds the
session, exactly as WebRTC mic audio is fed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from msadtalker.errors import AudioInputError
from msadtalker.timing import SAMPLE_RATE
from streamer.ingest import StreamResampler

log = logging.getLogger(__name__)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise AudioInputError(
            f"microphone input needs sounddevice and PortAudio (apt libportaudio2): {exc}"
        ) from None
    return sounddevice


def list_input_devices() -> list[tuple[int, str, float]]:
    """(index, name, default sample rate) of every device that can record."""
    sd = _sounddevice()
    return [
        (i, str(d["name"]), float(d["default_samplerate"]))
        for i, d in enumerate(sd.query_devices())
        if d["max_input_channels"] > 0
    ]


class MicSource:
    """Opens input ``device`` (index, name or ``None`` for the default) and pumps it into
    ``feed(samples_16k, discontinuity)`` until ``aclose``."""

    def __init__(
        self,
        feed: Callable[[np.ndarray, bool], None],
        device: int | str | None = None,
        queue_blocks: int = 25,
    ) -> None:
        self._feed = feed
        self._device = device
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=queue_blocks)
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rate = 0
        self.blocks = 0
        self.dropped_blocks = 0
        self.overflows = 0

    async def start(self) -> None:
        sd = _sounddevice()
        self._loop = asyncio.get_running_loop()
        try:
            info = sd.query_devices(self._device, "input")
            self.rate = int(info["default_samplerate"])
            self._stream = sd.InputStream(
                device=self._device,
                channels=1,
                samplerate=self.rate,
                blocksize=self.rate // 50,
                dtype="float32",
                callback=self._callback,
            )
            self._stream.start()
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioInputError(f"cannot open microphone {self._device!r}: {exc}") from None
        resampler = StreamResampler(self.rate, SAMPLE_RATE)
        self._task = asyncio.create_task(self._pump(resampler), name="mic-pump")
        log.info("microphone %r open at %d Hz", info["name"], self.rate)

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        # PortAudio's thread: copy and hand over, never block.
        if status and status.input_overflow:
            self.overflows += 1
        block = indata[:, 0].copy()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._put, block)

    def _put(self, block: np.ndarray) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped_blocks += 1
        self._queue.put_nowait(block)

    async def _pump(self, resampler: StreamResampler) -> None:
        while True:
            block = await self._queue.get()
            self.blocks += 1
            samples = resampler.process(block)
            if len(samples):
                self._feed(samples, False)

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # stop() waits for PortAudio's thread to finish its callback.
            await asyncio.to_thread(stream.stop)
            await asyncio.to_thread(stream.close)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
