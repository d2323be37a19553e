"""MP4 sink: H.264 video at 25 fps + AAC audio, muxed with PyAV as frames arrive.

Each ``VideoFrame`` carries the 640 audio samples it spans, so video and audio are written
from the same objects and cannot drift: the file's audio is exactly the frames' audio, and its
duration equals the video's. The file is written under a temporary name and renamed into place
by ``close``; ``abort`` (any error) removes it, so ``--out`` never holds half a file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE
from streamer.types import VideoFrame


class Mp4Writer:
    def __init__(self, path: str | Path, crf: int = 20, preset: str = "veryfast") -> None:
        self._path = Path(path)
        self._tmp = self._path.with_name(f".{self._path.stem}.{os.getpid()}.tmp.mp4")
        self._crf = crf
        self._preset = preset
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._size: tuple[int, int] | None = None
        self._audio_pts = 0

    def _open(self, width: int, height: int) -> None:
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        video = self._container.add_stream("libx264", rate=FPS)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, FPS)
        video.options = {"crf": str(self._crf), "preset": self._preset}
        audio = self._container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        self._video, self._audio = video, audio
        self._size = (width, height)

    def write(self, frame: VideoFrame) -> None:
        image = frame.image
        height, width = image.shape[:2]
        if self._container is None:
            if width % 2 or height % 2:
                raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
            self._open(width, height)
        elif self._size != (width, height):
            raise ValueError(f"frame size changed from {self._size} to {(width, height)}")
        vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vframe.pts = frame.index
        vframe.time_base = Fraction(1, FPS)
        for packet in self._video.encode(vframe):
            self._container.mux(packet)

        samples = np.ascontiguousarray(frame.audio, dtype=np.float32).reshape(1, -1)
        aframe = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        aframe.sample_rate = SAMPLE_RATE
        aframe.pts = self._audio_pts
        aframe.time_base = Fraction(1, SAMPLE_RATE)
        self._audio_pts += samples.shape[1]
        for packet in self._audio.encode(aframe):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            raise ValueError(f"no frames were rendered, {self._path} not written")
        for stream in (self._video, self._audio):
            for packet in stream.encode(None):
                self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None
        self._tmp.unlink(missing_ok=True)
