"""Seeded, causal eye blinks: eyelid closure in [0, 1] per frame.

People blink about 15-20 times a minute, at irregular intervals (never closer than about a
second apart), each blink lasting 150-300 ms with a fast close and a slower open. Intervals
are drawn from a gamma distribution (shape 3: irregular but not bursty) with the configured
mean; one blink in ``double_prob`` is followed by a quick second one, as people do. The
per-frame closure is the blink profile sampled at the frame's time, so a blink shorter than
a frame still shows as a partly closed lid.

The same signal drives the mesh renderer's eyelids and, on the neural path, ExpNet's blink
ratio input (SadTalker feeds 0.5, 0.9, 1.0, 0.9, 0.5 there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from msadtalker.timing import FPS


@dataclass(frozen=True)
class BlinkConfig:
    rate_per_min: float = 17.0
    min_interval_s: float = 1.2
    close_s: float = 0.08
    hold_s: float = 0.04
    open_s: float = 0.14
    double_prob: float = 0.12

    def validate(self) -> None:
        if self.rate_per_min < 0:
            raise ValueError("blink rate must be >= 0 per minute")
        if min(self.close_s, self.hold_s, self.open_s) < 0 or self.min_interval_s < 0:
            raise ValueError("blink durations must be >= 0")


class BlinkSchedule:
    """``step()`` returns the eyelid closure of the next frame. Delay: 0 frames."""

    def __init__(self, config: BlinkConfig | None = None, seed: int = 0) -> None:
        self._config = config or BlinkConfig()
        self._config.validate()
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(np.random.SeedSequence([self._seed, 0xB1]))
        self._frame = 0
        # The first blink comes a little after the start, never on frame 0.
        self._next_blink_s = self._draw_interval() * 0.5 + 0.5
        self._blinks: list[float] = []  # start times of blinks that may still be visible

    def _draw_interval(self) -> float:
        cfg = self._config
        if cfg.rate_per_min <= 0:
            return math.inf
        mean = 60.0 / cfg.rate_per_min
        shape = 3.0
        interval = float(self._rng.gamma(shape, (mean - cfg.min_interval_s) / shape))
        return cfg.min_interval_s + max(interval, 0.0)

    def _profile(self, dt: float) -> float:
        cfg = self._config
        if dt < 0:
            return 0.0
        if dt < cfg.close_s:
            x = dt / cfg.close_s
            return x * x * (3.0 - 2.0 * x)
        dt -= cfg.close_s
        if dt < cfg.hold_s:
            return 1.0
        dt -= cfg.hold_s
        if dt < cfg.open_s:
            x = 1.0 - dt / cfg.open_s
            return x * x * (3.0 - 2.0 * x)
        return 0.0

    def step(self) -> float:
        cfg = self._config
        t = self._frame / FPS
        self._frame += 1
        while t >= self._next_blink_s:
            start = self._next_blink_s
            self._blinks.append(start)
            duration = cfg.close_s + cfg.hold_s + cfg.open_s
            if self._rng.random() < cfg.double_prob:
                self._blinks.append(start + duration + 0.08)
            self._next_blink_s = start + self._draw_interval()
        duration = cfg.close_s + cfg.hold_s + cfg.open_s
        self._blinks = [s for s in self._blinks if t - s < duration]
        return max((self._profile(t - s) for s in self._blinks), default=0.0)
