"""Audio file source: a file -> contiguous ``AudioChunk``s of 16 kHz mono float32.

The file is checked in full when the source is made (one streaming decode pass, no
resampling): a missing, non-audio, truncated, corrupt, empty, NaN or too-short file raises
``AudioInputError`` before any output file is opened. Iterating decodes again, streaming, so
memory stays bounded for hours-long input. Each iteration starts from the beginning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from msadtalker.audio import AudioInfo, iter_audio_file, scan_audio
from msadtalker.timing import SAMPLE_RATE
from streamer.types import AudioChunk

DEFAULT_CHUNK_MS = 200


class AudioFileSource:
    """Iterable of ``AudioChunk`` (``chunk_ms`` each, the last shorter; ``start`` contiguous)."""

    def __init__(self, path: str | os.PathLike[str], chunk_ms: float = DEFAULT_CHUNK_MS) -> None:
        if chunk_ms <= 0:
            raise ValueError("chunk_ms must be > 0")
        self._path = Path(path)
        self._chunk_samples = max(1, round(chunk_ms * SAMPLE_RATE / 1000.0))
        self._info = scan_audio(self._path)  # raises AudioInputError, logs the warnings

    @property
    def path(self) -> Path:
        return self._path

    @property
    def info(self) -> AudioInfo:
        return self._info

    @property
    def samples(self) -> int:
        """Total 16 kHz samples the source yields."""
        return self._info.samples

    @property
    def frame_count(self) -> int:
        """Video frames the pipeline makes from this audio: floor(samples / 640)."""
        return self._info.frame_count

    def __iter__(self) -> Iterator[AudioChunk]:
        start = 0
        for samples in iter_audio_file(self._path, self._chunk_samples, warn=False):
            yield AudioChunk(samples=samples, start=start)
            start += len(samples)
