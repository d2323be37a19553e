"""FeatureStage: AudioChunk -> FeatureFrame (the frame's 640 samples + its 80 x 16 mel window).

Input: contiguous 16 kHz mono chunks of any length (``chunk.start`` must equal the previous
chunk's end; the first starts at 0). Output: one ``FeatureFrame`` per 40 ms video frame, in
order, ``audio`` (640,) float32 and ``mel`` (80, 16) float32 = SadTalker's window
(``msadtalker.audio.mel``).

Lookahead ``L`` (``lookahead_frames``, 0..3). The official window of frame i reads mel rows
``s_i .. s_i + 15`` (``s_i = int(80 (i - 2) / 25)``); rows ``s_i + 6 .. s_i + 9`` are the
frame's own audio, the higher ones lie in the future. Frame i waits for rows up to
``R_i = s_i + min(9 + ceil(3.2 L), 15)``; window columns past ``R_i`` are clamped to row
``R_i``, exactly as the official code clamps at the end of a clip. So columns 0..9 are always
exact, L = 1 makes columns 0..13 exact, and L >= 2 gives the official window exactly (L = 3 is
the same as L = 2: the 16-row window is already complete).

Delay (``delay_frames``). A mel row is final only when the 640-sample block holding the last
sample its STFT frame reads is complete (the official cut to whole frames; see
``MelStream``). Counting in whole frames of audio past the end of frame i's own audio, frame i
needs at most: L = 0: 1 frame, L = 1: 2 frames, L >= 2: 3 frames. ``delay_frames`` is that
maximum; some frames are ready one frame earlier (3.2 mel rows per frame do not align).

Causal windows (``causal=True``, the mesh path's live default): no centred window and no
wait. Frame i is emitted as soon as its own 640 samples are in (delay 0), and its window ends
at the newest final row then, ``R_i = floor((640 (i + 1) - 400) / 200)`` (the last row whose
STFT frame lies within the audio received): column 9 is row ``R_i``, columns 0..8 the rows
before it, columns 10..15 repeat ``R_i``. So the articulator's columns (7..9) read the three
newest rows, centred up to 160 samples before the frame's end, instead of rows that reach 280
samples into the next frame: one frame (40 ms) sooner, the mouth following the audio 17.5 ms
of centring earlier. Only for lip sources that read the frame's own columns; SadTalker's
networks need the official windows.

End of stream (``flush``): T = floor(total samples / 640) frames in all, the trailing < 640
samples are dropped (official cut), and the remaining frames use the clip-end rule: rows
clamped to ``min(R_i, T_mel - 1)``. The stage is then fresh again (position 0).

Barge-in (``reset``): the stream position keeps counting (the next chunk still starts where the
last one ended, frame indices stay monotonic). Every sample received so far that belongs to a
frame not yet emitted (positions >= 640 * next index) is replaced by silence: those frames are
emitted later (as more audio arrives, or at flush) with zero audio, and every mel row that
reads such a sample is recomputed as if the input had been zero there (the pre-emphasis memory
included); rows that read only earlier samples are kept. So each frame emitted after a reset
equals the same frame of a run whose input was zero from ``640 * next index`` up to the reset
point; the samples pushed after the reset are used as they come.
"""

from __future__ import annotations

import numpy as np

from msadtalker.audio.mel import (
    HOP,
    N_FFT,
    N_MELS,
    WINDOW_FRAMES,
    mel_frame_count,
    window_start,
)
from msadtalker.audio.mel_stream import MelStream
from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.types import AudioChunk, FeatureFrame

MAX_LOOKAHEAD = 3
CAUSAL_COLUMN = 9  # the window column that holds the newest final row (causal windows)
_COLUMNS = np.arange(WINDOW_FRAMES)


def window_reach(lookahead_frames: int) -> int:
    """Last window column (offset from ``s_i``) that frame i waits for: 9 + ceil(3.2 L), <= 15."""
    return min(9 + -(-16 * lookahead_frames // 5), WINDOW_FRAMES - 1)


def _blocks_needed(index: int, reach: int) -> int:
    """640-sample blocks that must be complete before frame ``index`` can be emitted."""
    last_row = max(0, window_start(index) + reach)
    rows_ready = -(-(200 * last_row + 400) // SAMPLES_PER_FRAME)
    return max(rows_ready, index + 1)


def causal_last_row(index: int) -> int:
    """Newest mel row final when frame ``index``'s own audio is complete (causal windows)."""
    # Row j reads samples up to 200 j + 399 (centred STFT, 400 each side).
    return max(0, (SAMPLES_PER_FRAME * (index + 1) - N_FFT // 2) // HOP)


def feature_delay_frames(lookahead_frames: int) -> int:
    """Worst case, over all frames, of the frames of audio needed past the frame's own end."""
    reach = window_reach(lookahead_frames)
    # The window start advances 16 rows every 5 frames: one period (plus the clamped start)
    # covers every case.
    return max(_blocks_needed(i, reach) - (i + 1) for i in range(12))


class FeatureStage:
    """AudioChunk -> FeatureFrame. Delay: ``feature_delay_frames(L)`` frames (1, 2, 3, 3)."""

    def __init__(self, lookahead_frames: int = 0, causal: bool = False) -> None:
        if not 0 <= lookahead_frames <= MAX_LOOKAHEAD:
            raise ValueError(f"lookahead_frames must be in 0..{MAX_LOOKAHEAD}")
        if causal and lookahead_frames:
            raise ValueError("causal feature windows take no lookahead")
        self._lookahead = lookahead_frames
        self._causal = causal
        self._reach = window_reach(lookahead_frames)
        self._delay = 0 if causal else feature_delay_frames(lookahead_frames)
        # History: reset() rewinds the mel stream to at most delay + 2 frames (+ one STFT
        # frame) behind the newest sample.
        self._history = SAMPLES_PER_FRAME * (self._delay + 3) + N_FFT
        self._mel = MelStream(history_samples=self._history)
        self._start_fresh()

    def _start_fresh(self) -> None:
        self._mel.reset()
        self._position = 0  # samples received = where the next chunk must start
        self._next_index = 0  # next frame to emit
        self._audio = np.zeros(0, dtype=np.float32)  # samples from 640 * _next_index on
        self._rows = np.zeros((0, N_MELS))  # final mel rows from _rows_base on
        self._rows_base = 0

    # ------------------------------------------------------------------ Stage

    @property
    def delay_frames(self) -> int:
        return self._delay

    @property
    def lookahead_frames(self) -> int:
        return self._lookahead

    @property
    def causal(self) -> bool:
        return self._causal

    def push(self, item: AudioChunk) -> list[FeatureFrame]:
        if item.start != self._position:
            raise ValueError(
                f"audio chunks must be contiguous: chunk starts at sample {item.start}, "
                f"expected {self._position}"
            )
        samples = np.asarray(item.samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio chunk must be 1-D mono, got shape {samples.shape}")
        self._position += len(samples)
        self._audio = np.concatenate([self._audio, samples])
        self._add_rows(self._mel.push(samples))
        out = []
        while self._ready(self._next_index):
            out.append(self._emit(self._next_index, self._window_limit(self._next_index)))
        return out

    def flush(self) -> list[FeatureFrame]:
        frames = self._position // SAMPLES_PER_FRAME
        self._add_rows(self._mel.flush())
        last_row = mel_frame_count(frames) - 1
        out = []
        while self._next_index < frames:
            limit = min(self._window_limit(self._next_index), last_row)
            out.append(self._emit(self._next_index, limit))
        self._start_fresh()
        return out

    def reset(self) -> None:
        silence_from = SAMPLES_PER_FRAME * self._next_index
        self._audio[:] = 0.0
        first = self._mel.silence_from(silence_from)
        keep = max(0, first - self._rows_base)
        self._rows = self._rows[:keep]

    # ------------------------------------------------------------------ internals

    def _window_start(self, index: int) -> int:
        if self._causal:
            return causal_last_row(index) - CAUSAL_COLUMN
        return window_start(index)

    def _window_limit(self, index: int) -> int:
        if self._causal:
            return causal_last_row(index)
        return max(0, window_start(index) + self._reach)

    def _ready(self, index: int) -> bool:
        audio_complete = self._position >= SAMPLES_PER_FRAME * (index + 1)
        return audio_complete and self._window_limit(index) < self._mel.next_row

    def _add_rows(self, rows: np.ndarray) -> None:
        if len(rows):
            self._rows = np.concatenate([self._rows, rows]) if len(self._rows) else rows

    def _emit(self, index: int, limit: int) -> FeatureFrame:
        rows = np.clip(self._window_start(index) + _COLUMNS, 0, limit) - self._rows_base
        mel = np.ascontiguousarray(self._rows[rows].T, dtype=np.float32)
        audio = self._audio[:SAMPLES_PER_FRAME].copy()
        self._audio = self._audio[SAMPLES_PER_FRAME:]
        self._next_index = index + 1
        # Rows before the next frame's window start are never read again.
        drop = max(0, self._window_start(self._next_index)) - self._rows_base
        if drop > 0:
            self._rows = self._rows[drop:]
            self._rows_base += drop
        return FeatureFrame(index=index, audio=audio, mel=mel)
