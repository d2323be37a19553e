"""How motion comes to rest in silence: the pose blend factor of eq. 6 and mouth damping.

``PoseBlend``: the smoothed silence weight w~ (eq. 5) -> the factor omega of eq. 6,
``P = omega * P_raw + (1 - omega) * P_initial``. The paper uses w~ itself. w~ is a 5-frame
moving average of a 0/1 sequence, so it changes in steps of 0.2 per frame and a pause turns
the head back to rest in 200 ms with a corner at each end; every short pause between words
becomes a quick bob. Two optional refinements, each off at its neutral setting:

* ``ease_s`` > 0: w~ goes through two cascaded one-pole low-passes of time constant
  ``ease_s`` (critically damped, so it never overshoots [0, 1] and its velocity is
  continuous; a full transition takes about 3.4 x ``ease_s`` from 10 % to 90 %). Short dips
  of w~ become shallow dips. Once both filter states are within 1e-3 of w~ they are set to it
  (a pose step of at most 1e-3 A, 0.01 degrees, far below a pixel), so in steady silence
  omega is exactly 0 (the head is exactly still) and in steady speech exactly 1 (the pose is
  the generator's own).
* ``easing = "smoothstep"``: ``3 s^2 - 2 s^3`` of the (filtered) weight: keeps 0 and 1 and
  starts and ends every transition at zero velocity.

``MotionDamper``: the paper suppresses head *and* lip motion in silence. A lip signal x (the
mouth opening, or the neural path's expression coefficients) is smoothed with a strength set
by the weight: ``y_t = k x_t + (1 - k) y_{t-1}``, ``k = w + (1 - w) a`` with
``a = 1 - exp(-1 / (tau fps))``. At w = 1 the signal passes unchanged; at w = 0 it follows with
time constant ``tau``, so residual jitter in silence is damped but a steady opening (a held
vowel the lip-derivative detector calls silent) keeps its value, and a mouth the lip source
closes stays closed (a damper never holds the mouth open after the source has shut it).
Once y is within ``settle`` of x it is set to x, so a still source gives an exactly still
output.

Both are causal, one value per frame, delay 0 frames.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar, cast

import numpy as np

from msadtalker.timing import FPS

_SNAP = 1e-3  # PoseBlend: filter states this close to w~ are set to it
Signal = TypeVar("Signal", float, np.ndarray)


def smoothstep(s: float) -> float:
    s = min(max(s, 0.0), 1.0)
    return s * s * (3.0 - 2.0 * s)


def one_pole_alpha(tau_s: float, fps: float = FPS) -> float:
    """Per-frame step of a one-pole low-pass with time constant ``tau_s`` (1 = no smoothing)."""
    if tau_s <= 0:
        return 1.0
    return 1.0 - math.exp(-1.0 / (tau_s * fps))


class PoseBlend:
    """``step(w~) -> omega`` in [0, 1], one call per frame (see the module docstring)."""

    def __init__(
        self, easing: Literal["smoothstep", "linear"] = "smoothstep", ease_s: float = 0.0
    ) -> None:
        if ease_s < 0:
            raise ValueError("pose ease time must be >= 0 seconds")
        self._easing = easing
        self._alpha = one_pole_alpha(ease_s)
        self.reset()

    def reset(self) -> None:
        """Back to rest (omega 0): the start of a stream."""
        self._y1 = 0.0
        self._y2 = 0.0

    def step(self, weight: float) -> float:
        w = min(max(float(weight), 0.0), 1.0)
        if self._alpha >= 1.0:
            s = w
        else:
            self._y1 += self._alpha * (w - self._y1)
            self._y2 += self._alpha * (self._y1 - self._y2)
            if abs(self._y1 - w) < _SNAP and abs(self._y2 - w) < _SNAP:
                self._y1 = self._y2 = w
            s = self._y2
        return smoothstep(s) if self._easing == "smoothstep" else s


class MotionDamper:
    """``step(x, w) -> y``: damps the motion of ``x`` by the silence weight ``w``.

    ``x``: a float or a 1-D array (the same shape every frame). ``rest``: what ``hold_rest``
    shows (a closed mouth, the neutral expression).
    """

    def __init__(self, tau_s: float, settle: float = 1e-3) -> None:
        if tau_s < 0 or settle < 0:
            raise ValueError("damping time and settle tolerance must be >= 0")
        self._alpha = one_pole_alpha(tau_s)
        self._settle = settle
        self._state: float | np.ndarray | None = None

    def reset(self) -> None:
        """Forget the state: the next ``step`` passes its input unchanged."""
        self._state = None

    def hold_rest(self, rest: Signal) -> Signal:
        """Show ``rest`` for this frame and continue from it (barge-in)."""
        self._state = rest
        return rest

    def step(self, x: Signal, weight: float) -> Signal:
        w = min(max(float(weight), 0.0), 1.0)
        previous = self._state
        y: Any
        if previous is None:
            y = x
        else:
            k = w + (1.0 - w) * self._alpha
            y = k * x + (1.0 - k) * previous
            if float(np.max(np.abs(y - x))) < self._settle:
                y = x
        self._state = y
        return cast(Signal, y)
