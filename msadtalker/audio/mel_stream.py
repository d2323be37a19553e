"""Incremental SadTalker log-mel: samples in, final mel rows out, identical to ``log_mel``.

When a row is final. The official code cuts the waveform to ``640 * floor(n / 640)`` samples
before the STFT, and row ``j`` (centred on sample ``200 j``) reads the pre-emphasised samples
``200 j - 400 ... 200 j + 399`` (zeros before the start and after the cut). While the stream
is open the final length is unknown but at least the completed 640-sample blocks, so row ``j``
is final once ``200 j + 400 <= 640 * floor(received / 640)``. ``flush`` applies the cut: the
remaining rows up to ``T_mel - 1`` are computed with the samples past ``640 T`` treated as the
zero padding they are in batch (the trailing < 640 samples are dropped).

Rows are computed with the same per-frame arithmetic as ``log_mel`` (``_columns_from_frames``),
so stream and batch are bit-identical for any chunking. Cost: one 800-point real FFT and one
80 x 401 matrix-vector product per row (3.2 rows per 40 ms video frame).
"""

from __future__ import annotations

import numpy as np

from msadtalker.audio.mel import (
    HOP,
    N_FFT,
    N_MELS,
    PAD,
    PREEMPHASIS,
    _columns_from_frames,
    mel_frame_count,
)
from msadtalker.timing import SAMPLES_PER_FRAME

_FRAME_OFFSETS = np.arange(N_FFT)


def _first_row_reading(position: int) -> int:
    """Smallest row whose STFT frame reads sample ``position`` or later."""
    # Row j reads up to sample 200 j + 399.
    return max(0, -(-(position - (N_FFT - PAD - 1)) // HOP))


class MelStream:
    """``push(samples) -> (n, 80)`` newly final rows; ``flush() -> (n, 80)`` the rest.

    State: the raw samples still needed (from the first sample of the next row's frame, minus
    one for the pre-emphasis memory, plus ``history_samples`` more for ``silence_from``), the
    number of samples received and the index of the next row to emit.

    ``flush`` ends the clip and leaves the stream fresh (position 0), as does ``reset``.
    ``silence_from(p)`` treats every received sample at position >= ``p`` as zero and rewinds
    to the first row that reads one of them (those rows are emitted again, recomputed).
    """

    def __init__(self, history_samples: int = 0) -> None:
        if history_samples < 0:
            raise ValueError("history_samples must be >= 0")
        self._history = int(history_samples)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        self._buffer = np.zeros(0)  # raw samples (float64) from absolute position _buf_start
        self._buf_start = 0
        self._received = 0
        self._next_row = 0

    @property
    def position(self) -> int:
        """Samples received so far (the absolute position of the next sample)."""
        return self._received

    @property
    def next_row(self) -> int:
        """Index of the next row that ``push``/``flush`` will return."""
        return self._next_row

    # ------------------------------------------------------------------ input

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"expected 1-D mono samples, got shape {samples.shape}")
        if len(samples):
            self._buffer = np.concatenate([self._buffer, samples.astype(np.float64)])
            self._received += len(samples)
        complete = SAMPLES_PER_FRAME * (self._received // SAMPLES_PER_FRAME)
        last_final = (complete - (N_FFT - PAD)) // HOP  # 200 j + 400 <= complete
        rows = self._rows(self._next_row, last_final + 1, valid_end=complete)
        self._trim()
        return rows

    def flush(self) -> np.ndarray:
        frames = self._received // SAMPLES_PER_FRAME
        cut = frames * SAMPLES_PER_FRAME
        rows = self._rows(self._next_row, mel_frame_count(frames), valid_end=cut)
        self.reset()
        return rows

    def silence_from(self, position: int) -> int:
        """Replace the received samples at ``position`` onward by zeros; returns the first row
        that will be emitted again (rows from there on that were returned before are void).

        Needs the samples from ``800 + 1`` before ``position`` still held: keep
        ``history_samples`` large enough for how far behind ``position`` may lag.
        """
        position = max(0, int(position))
        if position >= self._received:
            return self._next_row
        first = min(self._next_row, _first_row_reading(position))
        needed_from = HOP * first - PAD - 1
        if max(needed_from, 0) < self._buf_start:
            raise ValueError(
                f"cannot silence from sample {position}: history before {self._buf_start} "
                "was already dropped (raise history_samples)"
            )
        self._buffer[max(0, position - self._buf_start) :] = 0.0
        self._next_row = first
        return first

    # ------------------------------------------------------------------ internals

    def _rows(self, first: int, stop: int, valid_end: int) -> np.ndarray:
        """Rows ``first .. stop - 1``; samples at ``valid_end`` onward are the end padding."""
        if stop <= first:
            return np.zeros((0, N_MELS))
        lo = HOP * first - PAD  # first sample read
        hi = HOP * (stop - 1) + (N_FFT - PAD)  # one past the last sample read
        # Raw samples lo-1 .. hi-1 (one extra for the pre-emphasis memory), zero outside
        # [0, valid_end).
        raw = np.zeros(hi - lo + 1)
        src_lo = max(lo - 1, 0, self._buf_start)
        src_hi = min(hi, valid_end, self._received)
        if src_hi > src_lo:
            raw[src_lo - (lo - 1) : src_hi - (lo - 1)] = self._buffer[
                src_lo - self._buf_start : src_hi - self._buf_start
            ]
        y = raw[1:] - PREEMPHASIS * raw[:-1]
        # Past the cut the batch form pads the *pre-emphasised* signal with zeros.
        if valid_end < hi:
            y[max(0, valid_end - lo) :] = 0.0
        starts = HOP * np.arange(stop - first)
        frames = y[starts[:, None] + _FRAME_OFFSETS[None, :]]
        self._next_row = stop
        return _columns_from_frames(frames)

    def _trim(self) -> None:
        keep_from = min(HOP * self._next_row - PAD - 1, self._received - self._history)
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buf_start = keep_from
