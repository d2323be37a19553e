"""The frames and reports that cross between the server and an encoder process.

Server -> encoder (its stdin): one line of JSON (``EncoderSettings``), then frames, each a
fixed header (index, width, height, audio samples) followed by the RGB picture and the
float32 audio, until end of file. Encoder -> server (its stdout): one JSON object a line
(``Report``). Nothing else is written on either pipe.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from streamer.types import VideoFrame

HEADER = struct.Struct("<qiii")  # index, width, height, audio samples
MAX_SIDE = 4096  # a header claiming more is not one of ours
MAX_SAMPLES = 48000


def pack_frame(frame: VideoFrame) -> bytes:
    image = np.ascontiguousarray(frame.image, dtype=np.uint8)
    audio = np.ascontiguousarray(frame.audio, dtype=np.float32)
    height, width = image.shape[:2]
    header = HEADER.pack(frame.index, width, height, audio.shape[0])
    return b"".join((header, image.tobytes(), audio.tobytes()))


@dataclass(frozen=True)
class WireFrame:
    index: int
    image: np.ndarray  # (H, W, 3) uint8
    audio: np.ndarray  # (N,) float32


def read_frame(stream: BinaryIO) -> WireFrame | None:
    """The next frame, or ``None`` at a clean end of file; ``ValueError`` if cut or garbled."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ValueError("frame header cut short")
    index, width, height, samples = HEADER.unpack(header)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and 0 <= samples <= MAX_SAMPLES):
        raise ValueError(f"bad frame header {width}x{height}, {samples} samples")
    image_bytes, audio_bytes = width * height * 3, samples * 4
    body = stream.read(image_bytes + audio_bytes)
    if len(body) < image_bytes + audio_bytes:
        raise ValueError("frame cut short")
    image = np.frombuffer(body, dtype=np.uint8, count=image_bytes).reshape(height, width, 3)
    audio = np.frombuffer(body, dtype=np.float32, offset=image_bytes, count=samples)
    return WireFrame(index=index, image=image, audio=audio)


@dataclass(frozen=True)
class Report:
    """What the encoder says: ``ready`` (started), ``open`` (header written: connected),
    ``progress`` (frames
    encoded so far, mean encode time), ``error`` (why it stops; secrets redacted),
    ``closed`` (trailer written, all flushed)."""

    event: str
    frames: int = 0
    encode_ms: float = 0.0
    message: str = ""

    def line(self) -> bytes:
        fields = {"event": self.event, "frames": self.frames, "encode_ms": self.encode_ms}
        if self.message:
            fields["message"] = self.message
        return (json.dumps(fields) + "\n").encode()

    @classmethod
    def parse(cls, line: bytes) -> Report:
        """A report line; a line that is not one is an ``error`` report saying so."""
        try:
            fields = json.loads(line)
            return cls(
                event=str(fields["event"]),
                frames=int(fields.get("frames", 0)),
                encode_ms=float(fields.get("encode_ms", 0.0)),
                message=str(fields.get("message", "")),
            )
        except (ValueError, KeyError, TypeError):
            return cls(event="error", message="the encoder wrote something unreadable")
