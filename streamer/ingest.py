"""Live audio in: any-rate, any-layout mic frames -> 16 kHz mono float32 on the session's time line.

Three small parts, each with one job:

* ``StreamResampler``: rational-ratio polyphase FIR resampler with state, so that a stream
  cut into blocks of any size gives the same samples as the whole stream at once, and every
  output sample comes out as soon as its input is in (0.25 ms group delay at 48 -> 16 kHz).
  Offline decoding uses soxr (``msadtalker.audio``), but soxr's ``ResampleStream`` holds its
  output back and releases it in ~40 ms bursts at 20 ms input blocks (measured, HQ and MQ),
  which would add up to a frame of mic-to-mouth latency.
* ``MicFrameConverter``: av.AudioFrame (WebRTC: 48 kHz, s16, mono or stereo, 20 ms) -> mono
  float32 at 16 kHz. Gaps in the frames' ``pts`` (lost packets) become zeros of the same length
  so the stream stays on time; a frame that goes backwards is dropped; a jump too large to be
  loss is a discontinuity (the resampler restarts and the jitter buffer re-anchors).
* ``JitterBuffer``: places the contiguous 16 kHz stream on the session's time line and hands
  out one video frame's samples per tick. Audio that arrives by the time a frame is made is
  used; audio that did not arrive in time is replaced by zeros (a stalled mic or lost packets
  make the avatar idle, they never stall video) and audio arriving after its frame was made is
  discarded and counted. Memory is bounded by ``capacity``.

Time line: position ``p`` (in 16 kHz samples) is captured at session time ``p / 16000``. A block
that arrives at session time ``t`` is taken to end at position ``t * 16000`` (anchor); later
blocks follow contiguously. Frame ``k`` covers positions ``[640 k, 640 (k + 1))``, and the
session makes it at ``(k + 1) / 25 + jitter`` seconds, so audio up to ``jitter`` late is still
on time. When the contiguous stream drifts out of the window that can still be played (it fell
behind the read position, or ran more than ``capacity`` ahead), the buffer re-anchors on the
arrival time again: late or early by a constant amount, never by an amount that grows.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import firwin

from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

# A pts jump above this is treated as a restart of the sender's clock, not as lost packets.
MAX_GAP_S = 1.0


class StreamResampler:
    """Streaming rational resampler ``in_rate -> out_rate`` (polyphase windowed-sinc FIR).

    ``process(block)`` returns every output sample whose filter window is complete; output
    sample ``n`` sits at input time ``n * in_rate / out_rate`` delayed by the filter's group
    delay (``delay_s``, ~1 ms). Blocks of any size give identical output.
    """

    def __init__(self, in_rate: int, out_rate: int, taps_per_phase: int = 24) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be > 0")
        g = math.gcd(in_rate, out_rate)
        self._up = out_rate // g
        self._down = in_rate // g
        self._passthrough = self._up == 1 and self._down == 1
        cutoff = 0.9 / max(self._up, self._down)  # of the upsampled Nyquist frequency
        length = taps_per_phase * self._up
        h = firwin(length, cutoff, window=("kaiser", 8.0)) * self._up
        # h_poly[p, i] = h[p + i * up]: the taps that meet input samples for phase p.
        self._taps = np.zeros((self._up, taps_per_phase), dtype=np.float64)
        for p in range(self._up):
            phase = h[p :: self._up]
            self._taps[p, : len(phase)] = phase
        self._width = taps_per_phase
        self.delay_s = (length - 1) / 2 / (in_rate * self._up)
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(self._width - 1, dtype=np.float64)
        self._consumed = 0  # input samples seen (history excluded)
        self._produced = 0  # output samples emitted

    def process(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block, dtype=np.float64).reshape(-1)
        if self._passthrough:
            return x.astype(np.float32)
        data = np.concatenate([self._history, x])
        total_in = self._consumed + len(x)
        # Output n needs input samples up to floor(n * down / up); all of those must be here.
        # Exactly those n: each output is made in the call that brings its newest sample, so
        # that sample is never older than the history kept.
        last_n = (total_in * self._up - 1) // self._down
        n = np.arange(self._produced, last_n + 1, dtype=np.int64)
        out = np.empty(0, dtype=np.float32)
        if len(n):
            pos = n * self._down
            newest = pos // self._up  # absolute index of the newest input sample used
            phase = pos % self._up
            # Index into ``data`` whose first element is absolute input sample
            # ``self._consumed - (width - 1)``.
            local = newest - (self._consumed - (self._width - 1))
            window = local[:, None] - np.arange(self._width)[None, :]
            out = np.einsum("ij,ij->i", data[window], self._taps[phase]).astype(np.float32)
            self._produced = int(n[-1]) + 1
        self._consumed = total_in
        self._history = data[len(data) - (self._width - 1) :]
        return out


@dataclass
class IngestStats:
    frames_in: int = 0  # mic frames received
    gaps: int = 0  # pts gaps filled with zeros (lost packets)
    gap_samples: int = 0  # input-rate samples of zeros inserted for gaps
    dropped_backwards: int = 0  # frames whose pts went backwards (duplicates / reordering)
    discontinuities: int = 0  # sender clock restarts (huge jumps)


class MicFrameConverter:
    """av.AudioFrame -> (16 kHz mono float32 samples, discontinuity flag).

    Accepts any sample format (packed or planar, int or float) and channel count; channels
    are averaged. The input rate may change between frames (the resampler restarts).
    """

    def __init__(self, out_rate: int = SAMPLE_RATE) -> None:
        self._out_rate = out_rate
        self._resampler: StreamResampler | None = None
        self._in_rate = 0
        self._next_pts: int | None = None
        self.stats = IngestStats()

    def convert(self, frame: Any) -> tuple[np.ndarray, bool]:
        """Returns the new 16 kHz samples and whether the buffer must re-anchor on them."""
        mono = frame_to_mono(frame)
        rate = int(frame.sample_rate)
        self.stats.frames_in += 1
        discontinuity = False
        if self._resampler is None or rate != self._in_rate:
            self._resampler = StreamResampler(rate, self._out_rate)
            self._in_rate = rate
            self._next_pts = None
            discontinuity = True
        pts = _pts_in_samples(frame, rate)
        pieces: list[np.ndarray] = []
        if pts is not None:
            end = pts + len(mono)
            if self._next_pts is not None:
                gap = pts - self._next_pts
                if gap < 0:
                    if -gap >= len(mono):
                        self.stats.dropped_backwards += 1
                        return np.zeros(0, dtype=np.float32), False
                    mono = mono[-gap:]  # overlaps what we have: keep only what is new
                elif gap > MAX_GAP_S * rate:
                    self.stats.discontinuities += 1
                    self._resampler.reset()
                    discontinuity = True
                elif gap > 0:
                    self.stats.gaps += 1
                    self.stats.gap_samples += gap
                    pieces.append(self._resampler.process(np.zeros(gap, dtype=np.float32)))
            self._next_pts = end
        pieces.append(self._resampler.process(mono))
        out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return out, discontinuity


def _pts_in_samples(frame: Any, rate: int) -> int | None:
    pts = getattr(frame, "pts", None)
    if pts is None:
        return None
    base = getattr(frame, "time_base", None)
    if base is None:
        return int(pts)
    return round(int(pts) * base.numerator * rate / base.denominator)


def frame_to_mono(frame: Any) -> np.ndarray:
    """Average an av.AudioFrame's channels into float32 in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        data = data.reshape(channels, -1)
    else:
        data = data.reshape(-1, channels).T
    kind = data.dtype
    samples = data.astype(np.float32)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        if info.min == 0:  # u8
            samples = (samples - 128.0) / 128.0
        else:
            samples = samples / float(-info.min)
    return samples.mean(axis=0) if channels > 1 else samples[0]


@dataclass
class JitterStats:
    samples_in: int = 0  # 16 kHz samples written
    samples_late: int = 0  # written after their frame was made (discarded)
    samples_skipped: int = 0  # dropped when the time line was moved back (excess delay)
    samples_missing: int = 0  # read before they arrived while the mic was live (zeros fed)
    frames_short: int = 0  # frames that got at least one zero for a missing sample
    reanchors: int = 0  # the stream was put back on the arrival clock
    shifts: int = 0  # the stream was moved earlier to shed delay it did not need


class JitterBuffer:
    """The session's audio time line; see the module docstring for the model.

    ``write(samples, now_s, discontinuity)``: append the mic stream (``now_s``: session time of
    arrival). ``read(index)``: the 640 samples of frame ``index`` (frames are read in order),
    zeros where nothing arrived in time. ``clear()``: drop everything not yet read (barge-in).
    ``end_position``: one past the last written position (where the input stops when it ends).

    Keeping the delay constant: the first block is anchored at its arrival time, so the delay
    the stream carries is that block's transport delay. Once a second (``adapt_writes``) the
    smallest lead any block had over its own arrival time is measured; if every block arrived
    earlier than its position needed (the anchor block was unusually late), the stream is moved
    earlier by that lead and the delay shrinks back. Three blocks in a row that arrive too late
    to be played (or one more than ``resync_s`` late), or a block placed more than ``resync_s``
    after its own arrival time, re-anchor the stream on arrival time.
    """

    def __init__(
        self,
        capacity_s: float = 2.0,
        rate: int = SAMPLE_RATE,
        frame_samples: int = SAMPLES_PER_FRAME,
        resync_s: float = 0.2,
        adapt_writes: int = 50,
        lead_tolerance_s: float = 0.005,
    ) -> None:
        self._rate = rate
        self._frame = frame_samples
        self._capacity = max(int(capacity_s * rate), 2 * frame_samples)
        self._buf = np.zeros(self._capacity, dtype=np.float32)
        self._filled = np.zeros(self._capacity, dtype=bool)
        self._read_pos = 0  # first position not yet read; the buffer holds [read, read + cap)
        self._write_pos: int | None = None  # where the next contiguous sample lands
        self._resync = int(resync_s * rate)
        self._adapt_writes = adapt_writes
        self._tolerance = int(lead_tolerance_s * rate)
        self._late_run = 0
        self._min_lead: int | None = None
        self._writes = 0
        self.stats = JitterStats()

    @property
    def read_position(self) -> int:
        return self._read_pos

    @property
    def end_position(self) -> int | None:
        return self._write_pos

    @property
    def buffered(self) -> int:
        """Samples written ahead of the read position."""
        if self._write_pos is None:
            return 0
        return max(0, self._write_pos - self._read_pos)

    def write(self, samples: np.ndarray, now_s: float, discontinuity: bool = False) -> int:
        """Returns the position the samples were placed at (the session's voice goes out
        from there at once, whether or not the buffer still has room for them)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = len(samples)
        if n == 0:
            return self._write_pos or 0
        self.stats.samples_in += n
        arrival_start = round(now_s * self._rate) - n
        start = self._write_pos
        if start is None or discontinuity:
            start = self._anchor(arrival_start, count=start is not None)
        elif start + n <= self._read_pos:
            self._late_run += 1
            if self._late_run >= 3 or self._read_pos - (start + n) > self._resync:
                start = self._anchor(arrival_start)
        elif start + n > self._read_pos + self._capacity or start - arrival_start > self._resync:
            # Ahead of its own arrival time by more than resync (a sender whose timestamps
            # jumped further than time did): audio cannot come from the future.
            start = self._anchor(arrival_start)
        else:
            self._late_run = 0
        if start + n > self._read_pos:
            self._late_run = 0
        self._store(start, samples)
        self._adapt(start - arrival_start)
        return start

    def _anchor(self, start: int, count: bool = True) -> int:
        if count:
            self.stats.reanchors += 1
        if self._write_pos is not None and start < self._write_pos:
            self._drop_from(start)
        self._late_run = 0
        self._min_lead = None
        self._writes = 0
        return start

    def _store(self, start: int, samples: np.ndarray) -> None:
        n = len(samples)
        self._write_pos = start + n
        self.stats.samples_late += max(0, min(start + n, self._read_pos) - start)
        lo = max(start, self._read_pos)
        hi = min(start + n, self._read_pos + self._capacity)
        if hi <= lo:
            return
        idx = np.arange(lo, hi) % self._capacity
        self._buf[idx] = samples[lo - start : hi - start]
        self._filled[idx] = True

    def _adapt(self, lead: int) -> None:
        """Shed delay the stream does not need (see the class docstring)."""
        self._min_lead = lead if self._min_lead is None else min(self._min_lead, lead)
        self._writes += 1
        if self._writes < self._adapt_writes:
            return
        shift = self._min_lead - self._tolerance
        self._min_lead = None
        self._writes = 0
        if shift <= 0 or self._write_pos is None:
            return
        # Move everything buffered ``shift`` samples earlier; what falls before the read
        # position is dropped (a few ms of audio, once).
        old_end = self._write_pos
        lo = self._read_pos
        idx = np.arange(lo, old_end) % self._capacity
        data = self._buf[idx].copy()
        filled = self._filled[idx].copy()
        self._drop_from(lo)
        keep_from = lo + shift
        self.stats.samples_skipped += min(shift, old_end - lo)
        self.stats.shifts += 1
        self._write_pos = old_end - shift
        if keep_from < old_end:
            kept = slice(keep_from - lo, None)
            dst = np.arange(lo, lo + len(data[kept])) % self._capacity
            self._buf[dst] = data[kept]
            self._filled[dst] = filled[kept]

    def _drop_from(self, position: int) -> None:
        """Forget everything buffered at or after ``position``."""
        if self._write_pos is None:
            return
        lo = max(position, self._read_pos)
        hi = min(self._write_pos, self._read_pos + self._capacity)
        if hi > lo:
            idx = np.arange(lo, hi) % self._capacity
            self._filled[idx] = False
            self._buf[idx] = 0.0

    def read(self, index: int) -> np.ndarray:
        start = index * self._frame
        if start != self._read_pos:
            raise ValueError(f"frames are read in order: expected {self._read_pos // self._frame}")
        idx = np.arange(start, start + self._frame) % self._capacity
        out = np.where(self._filled[idx], self._buf[idx], np.float32(0.0)).astype(np.float32)
        if self._write_pos is not None:
            missing = int((~self._filled[idx]).sum())
            # Only positions the mic could have covered count as missing (not the time before
            # it started).
            if missing:
                self.stats.samples_missing += missing
                self.stats.frames_short += 1
        self._filled[idx] = False
        self._buf[idx] = 0.0
        self._read_pos = start + self._frame
        return out

    def read_tail(self) -> np.ndarray:
        """The written samples past the read position, fewer than one frame (end of input)."""
        if self._write_pos is None or self._write_pos <= self._read_pos:
            return np.zeros(0, dtype=np.float32)
        n = min(self._write_pos - self._read_pos, self._frame)
        idx = np.arange(self._read_pos, self._read_pos + n) % self._capacity
        out = np.where(self._filled[idx], self._buf[idx], np.float32(0.0)).astype(np.float32)
        self._filled[idx] = False
        self._read_pos += n
        return out

    def clear(self) -> None:
        self._filled[:] = False
        self._buf[:] = 0.0
        if self._write_pos is not None:
            self._write_pos = max(self._write_pos, self._read_pos)
