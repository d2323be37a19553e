"""Audio files -> 16 kHz mono float32, streamed, with one-line errors for unusable input.

Any format FFmpeg reads (wav, mp3, m4a/aac, ogg/vorbis, opus, flac, ...) is decoded with
PyAV one packet at a time; nothing ever holds the whole file, so an hours-long recording costs
a few hundred kilobytes of memory.

What the official code does, and what we do:

* Mono = mean of the channels (librosa ``to_mono``), in float32.
* Integer PCM is scaled by 1 / 2^(bits-1) (16-bit: x / 32768, exactly what librosa returns).
* Resampling (only for rates other than 16 kHz): libsoxr "HQ" through the ``soxr`` package's
  ``ResampleStream``. librosa >= 0.10 resamples with ``soxr_hq`` by default, so this is the
  official front end's resampler for the librosa versions installed today; the streaming
  resampler gives bit-identical output to soxr's one-shot call (checked). The length is then
  fixed to ``ceil(n * 16000 / rate)`` (zero-padded or cut), as ``librosa.resample`` does. (The
  pinned librosa 0.9.2 used resampy ``kaiser_best``; the two differ far below anything the
  features can see.)
* Values are not clipped (librosa does not clip either); samples at or beyond full scale are
  counted and reported.

Checks (``AudioInputError``, one line naming the file): missing file, not a file, no audio
stream / unknown format, corrupt or truncated data (decoder errors; a WAV whose data chunk is
shorter than its header says; a stream that decodes to less than 90 % of its declared length),
no samples at all, NaN/inf samples, less than one video frame (40 ms) of audio. Warnings (the
file is still used): source rate below 16 kHz (band-limited, e.g. 8 kHz telephone audio), and
clipping (the fraction of samples at full scale).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from msadtalker.errors import AudioInputError
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

if TYPE_CHECKING:
    import soxr

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.999  # |x| at or above this counts as clipped (16-bit full scale is 0.99997)
CLIP_WARN_FRACTION = 0.001  # warn when at least 0.1 % of the samples are clipped
TRUNCATED_FRACTION = 0.9  # decoded length below this share of the declared length -> error
DEFAULT_CHUNK_SAMPLES = SAMPLE_RATE  # 1 s
# Samples kept back from the resampler's output until the end, so that the final length fix
# (at most one or two samples of soxr rounding) never has to take back what was yielded.
_HOLD_BACK = 64


@dataclass(frozen=True)
class AudioInfo:
    """What a full validation pass learned about a file."""

    path: Path
    codec: str
    sample_rate: int  # of the source
    channels: int
    source_samples: int  # per channel, at the source rate
    samples: int  # at 16 kHz, after resampling and the length fix
    clipped_fraction: float

    @property
    def frame_count(self) -> int:
        """T = floor(samples / 640): the video frames this audio drives."""
        return self.samples // SAMPLES_PER_FRAME

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


def resampled_length(source_samples: int, source_rate: int) -> int:
    """``ceil(n * 16000 / rate)``: librosa's output length after resampling."""
    if source_rate == SAMPLE_RATE:
        return source_samples
    return -(-source_samples * SAMPLE_RATE // source_rate)


# ---------------------------------------------------------------------------- decoding


class _Decoded:
    """Running facts about one decode pass (filled by ``_decode``)."""

    def __init__(self) -> None:
        self.codec = ""
        self.rate = 0
        self.channels = 0
        self.samples = 0
        self.clipped = 0
        self.values = 0
        self.declared_s: float | None = None


def _fail(path: Path, problem: str) -> AudioInputError:
    return AudioInputError(f"audio file {path}: {problem}")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise _fail(path, "file not found")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise _fail(path, "permission denied")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")
    _check_wav_header(path)


def _check_wav_header(path: Path) -> None:
    """A RIFF/WAVE file whose data chunk claims more bytes than the file holds is truncated
    (FFmpeg silently plays what is there). Sizes 0 and 0xFFFFFFFF mean "unknown" (streamed
    writers) and are accepted."""
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size not in (0, 0xFFFFFFFF) and offset + 8 + chunk_size > size:
                    have = size - offset - 8
                    raise _fail(
                        path,
                        f"truncated WAV: header announces {chunk_size} bytes of audio, "
                        f"the file holds {have}",
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)


def _decode(path: Path, facts: _Decoded) -> Iterator[np.ndarray]:
    """Yield the file's audio as mono float32 blocks at the source rate."""
    _check_path(path)
    try:
        container = av.open(str(path), mode="r")
    except av.error.EOFError:
        raise _fail(path, "truncated: the file ends before its headers are complete") from None
    except av.error.InvalidDataError:
        raise _fail(path, "not a readable audio file (unknown format or corrupt data)") from None
    except av.error.FFmpegError as exc:
        raise _fail(path, f"cannot be opened ({exc.strerror or exc})") from None
    with container:
        if not container.streams.audio:
            raise _fail(path, "contains no audio stream")
        stream = container.streams.audio[0]
        facts.codec = stream.codec_context.name
        facts.rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        facts.channels = len(stream.codec_context.layout.channels)
        if facts.rate <= 0:
            raise _fail(path, "audio stream has no sample rate")
        if stream.duration is not None and stream.time_base is not None:
            facts.declared_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            facts.declared_s = container.duration / 1_000_000
        # Planar float at the source rate and layout: integer PCM becomes x / 2^(bits-1).
        to_float = av.AudioResampler(format="fltp")
        try:
            for frame in container.decode(stream):
                if frame.sample_rate != facts.rate:
                    raise _fail(
                        path,
                        f"sample rate changes mid-stream ({facts.rate} -> {frame.sample_rate} Hz)"
                        ", which is not supported",
                    )
                for converted in to_float.resample(frame):
                    yield _mono(path, converted.to_ndarray(), facts)
            for converted in to_float.resample(None):
                yield _mono(path, converted.to_ndarray(), facts)
        except av.error.FFmpegError as exc:
            at = facts.samples / facts.rate
            raise _fail(
                path, f"corrupt or truncated audio data at {at:.2f} s ({exc.strerror or exc})"
            ) from None
    if facts.samples == 0:
        raise _fail(path, "contains no audio samples (empty)")
    decoded_s = facts.samples / facts.rate
    if facts.declared_s and decoded_s < TRUNCATED_FRACTION * facts.declared_s - 0.1:
        raise _fail(
            path,
            f"truncated or corrupt: only {decoded_s:.2f} s of the declared "
            f"{facts.declared_s:.2f} s could be decoded",
        )


def _mono(path: Path, planar: np.ndarray, facts: _Decoded) -> np.ndarray:
    planar = np.asarray(planar, dtype=np.float32)
    if planar.ndim == 1:
        planar = planar[None, :]
    if not np.isfinite(planar).all():
        at = facts.samples / facts.rate
        raise _fail(path, f"contains NaN or infinite sample values (near {at:.2f} s)")
    facts.clipped += int(np.count_nonzero(np.abs(planar) >= CLIP_LEVEL))
    facts.values += planar.size
    facts.samples += planar.shape[1]
    mono = planar[0] if planar.shape[0] == 1 else planar.mean(axis=0, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _finish_checks(path: Path, facts: _Decoded, samples_16k: int, warn: bool) -> None:
    if samples_16k < SAMPLES_PER_FRAME:
        ms = 1000.0 * samples_16k / SAMPLE_RATE
        raise _fail(
            path,
            f"too short: {ms:.0f} ms of audio, at least {1000 * SAMPLES_PER_FRAME // SAMPLE_RATE}"
            " ms (one video frame) is needed",
        )
    if not warn:
        return
    if facts.rate < SAMPLE_RATE:
        log.warning(
            "audio file %s is sampled at %d Hz: band-limited to %.1f kHz (telephone quality?); "
            "the mel bands above that stay empty",
            path,
            facts.rate,
            facts.rate / 2000.0,
        )
    fraction = facts.clipped / max(1, facts.values)
    if fraction >= CLIP_WARN_FRACTION:
        log.warning(
            "audio file %s is clipped: %.2f %% of its samples are at full scale",
            path,
            100.0 * fraction,
        )


# ---------------------------------------------------------------------------- public


def scan_audio(path: str | os.PathLike[str], warn: bool = True) -> AudioInfo:
    """Decode the whole file once (streaming, no resampling) and check it; ``AudioInfo``.

    Raises ``AudioInputError`` for any problem listed in the module docstring; logs the
    warnings when ``warn``.
    """
    path = Path(path)
    facts = _Decoded()
    for _ in _decode(path, facts):
        pass
    samples = resampled_length(facts.samples, facts.rate)
    _finish_checks(path, facts, samples, warn)
    return AudioInfo(
        path=path,
        codec=facts.codec,
        sample_rate=facts.rate,
        channels=facts.channels,
        source_samples=facts.samples,
        samples=samples,
        clipped_fraction=facts.clipped / max(1, facts.values),
    )


def iter_audio_file(
    path: str | os.PathLike[str],
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    warn: bool = True,
) -> Iterator[np.ndarray]:
    """Stream a file as 16 kHz mono float32 chunks of ``chunk_samples`` (the last shorter).

    Memory stays bounded whatever the file's length. Problems found while decoding raise
    ``AudioInputError`` at the point they are met (possibly after some chunks were yielded;
    run ``scan_audio`` first to fail before any output).
    """
    if chunk_samples <= 0:
        raise ValueError("chunk_samples must be > 0")
    path = Path(path)
    facts = _Decoded()
    resampler: soxr.ResampleStream | None = None
    pending: list[np.ndarray] = []
    pending_len = 0
    yielded = 0

    def take(count: int) -> np.ndarray:
        nonlocal pending, pending_len
        joined = np.concatenate(pending) if len(pending) != 1 else pending[0]
        out, rest = joined[:count], joined[count:]
        pending, pending_len = ([rest] if len(rest) else []), len(rest)
        return out

    for block in _decode(path, facts):
        if facts.rate != SAMPLE_RATE:
            if resampler is None:
                import soxr  # only needed for rates other than 16 kHz

                resampler = soxr.ResampleStream(
                    facts.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ"
                )
            block = resampler.resample_chunk(block)
        if len(block):
            pending.append(block)
            pending_len += len(block)
        while pending_len >= chunk_samples + _HOLD_BACK:
            chunk = take(chunk_samples)
            yielded += len(chunk)
            yield chunk
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            pending.append(tail)
            pending_len += len(tail)
    total = resampled_length(facts.samples, facts.rate)
    _finish_checks(path, facts, total, warn)
    # librosa's length fix: cut or zero-pad the resampled signal to ceil(n * 16000 / rate).
    remaining = total - yielded
    rest = take(pending_len) if pending_len else np.zeros(0, dtype=np.float32)
    if len(rest) < remaining:
        rest = np.concatenate([rest, np.zeros(remaining - len(rest), dtype=np.float32)])
    rest = rest[:remaining]
    for start in range(0, len(rest), chunk_samples):
        yield rest[start : start + chunk_samples]


def load_audio(path: str | os.PathLike[str], warn: bool = True) -> np.ndarray:
    """The whole file as one 16 kHz mono float32 array (convenience; streams internally)."""
    chunks = list(iter_audio_file(path, DEFAULT_CHUNK_SAMPLES * 10, warn=warn))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
