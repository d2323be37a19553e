"""Silence weighter (MSadTalker §3.2, eqs 4-6): lip motion -> per-frame weight in [0, 1].

One core, two forms:

* ``silence_weights_offline``: exactly the paper. Min-max normalise each lip sequence over the
  whole clip (eq. 4), first differences, a frame is silent when both |delta| < theta (0.02),
  weights 0/1, centred moving average over W = 5 frames (eq. 5).
* ``CausalSilenceWeighter``: the same arithmetic for streaming, one frame at a time, with a
  declared lookahead of L frames. The W = 5 average needs 2 future frames; with L = 2 the
  output equals the offline one. With L < 2 the frames that have not arrived are treated as
  the end of a clip is treated offline (the last known weight is repeated), so the edge rule is
  the same everywhere.

Conventions (the paper is silent on them):

* The first difference of frame 0 is 0 (there is no earlier frame), so frame 0 is silent.
* The moving average repeats the edge weights (no zero padding), so a clip that is all speech
  has weight 1 up to its edges.
* A sequence with zero range (perfectly still lips) is silent everywhere.

Running normalisation (streaming has no whole clip): the range at frame t is max - min of the
lip signal over the last ``range_window_s`` seconds, but never less than a floor given by the
lip source (``range_floor``: a fraction of the source's nominal speech range). Both
differences of a frame are normalised with the same current range, so the minimum cancels and
only the range matters. The floor is what keeps a long silence from stretching microscopic
jitter to the full [0, 1] scale and calling it speech; the sliding window lets the range adapt
to a new speaker or level within seconds. Passing a fixed ``(lo, hi)`` range instead
reproduces the offline weights exactly (used by the equivalence test).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from msadtalker.timing import FPS


@dataclass(frozen=True)
class SilenceConfig:
    threshold: float = 0.02  # theta: max |normalised lip difference| of a silent frame
    window: int = 5  # W: moving-average length, odd
    range_window_s: float = 8.0  # running min-max span for streaming normalisation
    range_floor_frac: float = 0.5  # floor of the running range, x the lip source's nominal range
    # Pose blend of eq. 6 (msadtalker.settle.PoseBlend). The paper: easing "linear" and
    # pose_ease_s 0 (w~ itself). pose_ease_s > 0 low-passes w~ (two one-poles of this time
    # constant) so the head eases to rest and short pauses between words do not bob it;
    # "smoothstep" (3w^2 - 2w^3) starts and ends every transition at zero velocity.
    pose_easing: Literal["smoothstep", "linear"] = "smoothstep"
    pose_ease_s: float = 0.06
    # Residual lip motion in silence (msadtalker.settle.MotionDamper): at w~ = 0 the mouth
    # and expression follow their source with this time constant, at w~ = 1 unchanged.
    mouth_damping_s: float = 0.3
    # Which signal decides a frame is silent: the lip derivative (the paper), WebRTC's VAD,
    # or both (speech only when the lips move and the VAD hears a voice); see msadtalker.vad.
    source: Literal["lips", "vad", "both"] = "lips"
    vad_aggressiveness: int = 2  # webrtcvad mode 0 (lenient) .. 3 (strict)

    def validate(self) -> None:
        if self.threshold <= 0:
            raise ValueError("silence threshold must be > 0")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError("silence window must be a positive odd number of frames")
        if self.range_window_s <= 0 or self.range_floor_frac < 0:
            raise ValueError("silence range window must be > 0 and the floor >= 0")
        if self.pose_ease_s < 0 or self.mouth_damping_s < 0:
            raise ValueError("silence pose_ease_s and mouth_damping_s must be >= 0 seconds")
        if self.vad_aggressiveness not in (0, 1, 2, 3):
            raise ValueError("vad_aggressiveness must be 0, 1, 2 or 3")

    @property
    def half_window(self) -> int:
        return self.window // 2


# ---------------------------------------------------------------------------- shared core


def _normalised_delta(current: float, previous: float, lo: float, hi: float) -> float:
    """Eq. 4 then the first difference, for one frame, exactly as the offline form does it."""
    span = hi - lo
    if span <= 0:
        return 0.0
    return (current - lo) / span - (previous - lo) / span


def _is_silent(delta_upper: float, delta_lower: float, threshold: float) -> bool:
    return abs(delta_upper) < threshold and abs(delta_lower) < threshold


def _window_mean(weights: list[float]) -> float:
    # Summed left to right in both forms so the streaming result is bit-identical.
    total = 0.0
    for w in weights:
        total += w
    return total / len(weights)


def smooth_weights(weights: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (eq. 5) with the edge weights repeated past both ends."""
    half = window // 2
    n = len(weights)
    out = np.empty(n)
    for t in range(n):
        idx = np.clip(np.arange(t - half, t + half + 1), 0, n - 1)
        out[t] = _window_mean([float(weights[i]) for i in idx])
    return out


def silence_weights_offline(
    upper: np.ndarray, lower: np.ndarray, config: SilenceConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's weighter over a whole clip: returns (silent 0/1 bool, smoothed weight)."""
    config = config or SilenceConfig()
    upper = np.asarray(upper, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    if upper.shape != lower.shape or upper.ndim != 1:
        raise ValueError("upper and lower lip sequences must be 1-D and the same length")
    n = len(upper)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    u_lo, u_hi = float(upper.min()), float(upper.max())
    l_lo, l_hi = float(lower.min()), float(lower.max())
    silent = np.empty(n, dtype=bool)
    for t in range(n):
        prev = max(t - 1, 0)
        du = _normalised_delta(float(upper[t]), float(upper[prev]), u_lo, u_hi)
        dl = _normalised_delta(float(lower[t]), float(lower[prev]), l_lo, l_hi)
        silent[t] = _is_silent(du, dl, config.threshold)
    weights = np.where(silent, 0.0, 1.0)
    return silent, smooth_weights(weights, config.window)


# ---------------------------------------------------------------------------- streaming


class _SlidingRange:
    """Min and max over the last ``length`` values, O(1) amortised (monotonic deques)."""

    def __init__(self, length: int) -> None:
        self._length = length
        self._count = 0
        self._mins: deque[tuple[int, float]] = deque()
        self._maxs: deque[tuple[int, float]] = deque()

    def push(self, value: float) -> tuple[float, float]:
        i = self._count
        self._count += 1
        while self._mins and self._mins[-1][1] >= value:
            self._mins.pop()
        self._mins.append((i, value))
        while self._maxs and self._maxs[-1][1] <= value:
            self._maxs.pop()
        self._maxs.append((i, value))
        oldest = i - self._length + 1
        while self._mins[0][0] < oldest:
            self._mins.popleft()
        while self._maxs[0][0] < oldest:
            self._maxs.popleft()
        return self._mins[0][1], self._maxs[0][1]

    def clear(self) -> None:
        self._count = 0
        self._mins.clear()
        self._maxs.clear()


def _floored(lo: float, hi: float, floor: float) -> tuple[float, float]:
    """Widen [lo, hi] symmetrically to at least ``floor``."""
    span = hi - lo
    if span >= floor:
        return lo, hi
    pad = 0.5 * (floor - span)
    return lo - pad, hi + pad


@dataclass(frozen=True, slots=True)
class SilenceDecision:
    index: int
    silent: bool
    weight: float


class CausalSilenceWeighter:
    """Streaming eqs 4-5: ``push(upper, lower)`` -> decisions that became final.

    Output frame t is final once frame t + L has been pushed (L = ``lookahead``, at most W//2;
    more brings nothing). Delay: L frames. ``flush`` finishes the clip with the offline edge
    rule. ``reset`` forgets the lip history and makes every buffered and following frame
    silent until lips move again (barge-in: the avatar goes to rest at once).
    """

    def __init__(
        self,
        config: SilenceConfig | None = None,
        lookahead: int = 2,
        range_floor: float = 0.0,
        fixed_range: tuple[tuple[float, float], tuple[float, float]] | None = None,
    ) -> None:
        self._config = config or SilenceConfig()
        self._config.validate()
        if lookahead < 0:
            raise ValueError("lookahead must be >= 0 frames")
        self._lookahead = min(lookahead, self._config.half_window)
        self._floor = max(0.0, range_floor)
        self._fixed = fixed_range
        span = max(1, round(self._config.range_window_s * FPS))
        self._upper_range = _SlidingRange(span)
        self._lower_range = _SlidingRange(span)
        self._prev: tuple[float, float] | None = None
        self._next_index = 0  # index of the next pushed frame
        self._next_out = 0  # index of the next frame to emit
        # Raw 0/1 weights of recent frames, oldest first, starting at frame _first_weight.
        self._weights: deque[float] = deque()
        self._first_weight = 0

    @property
    def delay_frames(self) -> int:
        return self._lookahead

    def push(self, upper: float, lower: float, voiced: bool | None = None) -> list[SilenceDecision]:
        """``voiced``: the VAD's call for this frame, used when ``config.source`` is "vad" or
        "both" (ignored for "lips")."""
        silent = self._detect(float(upper), float(lower))
        if voiced is not None and self._config.source == "vad":
            silent = not voiced
        elif voiced is not None and self._config.source == "both":
            silent = silent or not voiced
        self._weights.append(0.0 if silent else 1.0)
        self._next_index += 1
        out = []
        while self._next_out + self._lookahead < self._next_index:
            out.append(self._emit(self._next_out, last_known=self._next_index - 1))
        return out

    def flush(self) -> list[SilenceDecision]:
        out = []
        while self._next_out < self._next_index:
            out.append(self._emit(self._next_out, last_known=self._next_index - 1))
        return out

    def reset(self) -> None:
        self._upper_range.clear()
        self._lower_range.clear()
        self._prev = None
        # Every frame still waiting for its window becomes silent: the weight drops to 0 now.
        self._weights = deque(0.0 for _ in self._weights)

    def _detect(self, upper: float, lower: float) -> bool:
        if self._fixed is not None:
            (u_lo, u_hi), (l_lo, l_hi) = self._fixed
        else:
            u_lo, u_hi = _floored(*self._upper_range.push(upper), self._floor)
            l_lo, l_hi = _floored(*self._lower_range.push(lower), self._floor)
        prev_upper, prev_lower = self._prev if self._prev is not None else (upper, lower)
        self._prev = (upper, lower)
        du = _normalised_delta(upper, prev_upper, u_lo, u_hi)
        dl = _normalised_delta(lower, prev_lower, l_lo, l_hi)
        return _is_silent(du, dl, self._config.threshold)

    def _emit(self, t: int, last_known: int) -> SilenceDecision:
        half = self._config.half_window
        window = []
        for i in range(t - half, t + half + 1):
            j = min(max(i, 0), last_known)  # edge rule: repeat the first/last known frame
            j = max(j, self._first_weight)
            window.append(self._weights[j - self._first_weight])
        decision = SilenceDecision(
            index=t,
            silent=self._weights[t - self._first_weight] == 0.0,
            weight=_window_mean(window),
        )
        self._next_out = t + 1
        # Keep only what later windows can still reach.
        while self._first_weight < self._next_out - half:
            self._weights.popleft()
            self._first_weight += 1
        return decision


def ease_weight(weight: float, easing: Literal["smoothstep", "linear"]) -> float:
    """The blend factor of eq. 6 for a smoothed weight w~."""
    w = min(max(weight, 0.0), 1.0)
    if easing == "linear":
        return w
    return w * w * (3.0 - 2.0 * w)
