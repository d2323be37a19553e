"""One output's encoder: VideoFrame pictures + their audio -> H.264 + AAC in FLV or MP4 (PyAV).

Runs in the encoder process (``streamer.broadcast.child``), never on the server's event loop.
Settings are what streaming platforms ask for: libx264 ``veryfast`` + ``zerolatency``, a
constant-ish bitrate (``b`` = ``maxrate``, ``bufsize`` two seconds of it, HRD signalled), a
keyframe every ``keyframe_frames`` and no scene-cut keyframes in between, yuv420p, AAC at
44.1 or 48 kHz.

Timestamps come from frame indices, never from clocks: video frame ``i`` is at
``(i - first) / 25`` s and its 640 audio samples (16 kHz) start at the same instant, so audio
and video cannot drift apart. Frames the encoder never got (dropped on the way) leave a gap
in the video and silence in the audio, so what follows stays in sync.

Recordings are fragmented MP4 (a fragment a second): a file cut short by a crash still plays
up to its last fragment; ``close`` writes the rest and the index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

import av
import numpy as np

from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

MAX_GAP_FRAMES = 10 * FPS  # silence filled for at most this many missing frames at once
Container = Literal["flv", "mp4"]


@dataclass(frozen=True)
class EncoderSettings:
    """What one encoder process is told (JSON on its stdin, so that a stream key never shows
    in a process list)."""

    target: str  # URL or file path
    container: Container
    video_kbps: int = 2500
    audio_kbps: int = 128
    audio_rate: int = 48000
    keyframe_frames: int = 2 * FPS
    preset: str = "veryfast"
    threads: int = 2

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EncoderSettings:
        return cls(**json.loads(text))


class FrameEncoder:
    """Encodes frames into one container; opened on the first frame (its size)."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self._container: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._resampler: Any = None
        self._size: tuple[int, int] | None = None
        self._first = 0
        self._next = 0  # the index expected next (audio continuity)
        self._audio_pts = 0
        self.frames = 0

    @property
    def opened(self) -> bool:
        return self._container is not None

    def open(self, width: int, height: int, first_index: int) -> None:
        """Open the target and write the header (connects, for a URL)."""
        s = self.settings
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        options = {}
        if s.container == "mp4":
            options = {
                "movflags": "+frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": "1000000",
            }
        container = av.open(s.target, mode="w", format=s.container, options=options)
        try:
            video = container.add_stream("libx264", rate=FPS)
            video.width, video.height = width, height
            video.pix_fmt = "yuv420p"
            video.time_base = Fraction(1, FPS)
            video.bit_rate = s.video_kbps * 1000
            gop = s.keyframe_frames
            video.options = {
                "preset": s.preset,
                "tune": "zerolatency",
                "maxrate": f"{s.video_kbps}k",
                "bufsize": f"{2 * s.video_kbps}k",
                "threads": str(s.threads),
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:nal-hrd=cbr",
            }
            audio = container.add_stream("aac", rate=s.audio_rate)
            audio.layout = "mono"
            audio.bit_rate = s.audio_kbps * 1000
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container, self._video, self._audio = container, video, audio
        self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=s.audio_rate)
        self._size = (width, height)
        self._first = self._next = first_index

    def write(self, index: int, image: np.ndarray, audio: np.ndarray) -> None:
        """Frame ``index``: ``image`` (H, W, 3) uint8 RGB, ``audio`` its 640 float32 samples."""
        height, width = image.shape[:2]
        if self._container is None:
            self.open(width, height, index)
        elif self._size != (width, height):
            raise ValueError(f"frame size changed from {self._size} to {(width, height)}")
        if index < self._next:
            return  # a frame from before a gap we already filled: out of order, not written
        missing = min(index - self._next, MAX_GAP_FRAMES)
        if missing:
            self._encode_audio(
                np.zeros(missing * SAMPLES_PER_FRAME, dtype=np.float32), index - missing
            )
        vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vframe.pts = index - self._first
        vframe.time_base = Fraction(1, FPS)
        for packet in self._video.encode(vframe):
            self._container.mux(packet)
        self._encode_audio(np.asarray(audio, dtype=np.float32), index)
        self._next = index + 1
        self.frames += 1

    def _encode_audio(self, samples: np.ndarray, index: int) -> None:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = (index - self._first) * SAMPLES_PER_FRAME
        frame.time_base = Fraction(1, SAMPLE_RATE)
        for resampled in self._resampler.resample(frame):
            for packet in self._audio.encode(resampled):
                self._container.mux(packet)

    def close(self) -> None:
        """Flush both encoders and write the trailer (the file's index, the stream's end)."""
        if self._container is None:
            return
        try:
            for resampled in self._resampler.resample(None):
                for packet in self._audio.encode(resampled):
                    self._container.mux(packet)
            for stream in (self._video, self._audio):
                for packet in stream.encode(None):
                    self._container.mux(packet)
        finally:
            container, self._container = self._container, None
            container.close()

    def abort(self) -> None:
        """Close without flushing (the far end is gone); never raises."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a broken connection may fail again: nothing to save
                pass
