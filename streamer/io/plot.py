"""Motion plot: waveform, pose per axis, mouth opening and silence weight over time.

A picture a person reads at a glance: silent stretches are shaded on every panel, so one can
see the head settle and the mouth close where the speech stops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from streamer.io.trace import Trace
from streamer.types import MotionFrame, VideoFrame


class WaveformEnvelope:
    """Collects the per-frame min/max of the audio, so long clips plot in bounded memory."""

    def __init__(self) -> None:
        self._lo: list[float] = []
        self._hi: list[float] = []

    def write(self, frame: MotionFrame | VideoFrame) -> None:
        if isinstance(frame, VideoFrame):
            frame = frame.motion
        audio = frame.audio
        self._lo.append(float(audio.min()) if len(audio) else 0.0)
        self._hi.append(float(audio.max()) if len(audio) else 0.0)

    @property
    def lows(self) -> np.ndarray:
        return np.asarray(self._lo)

    @property
    def highs(self) -> np.ndarray:
        return np.asarray(self._hi)


def plot_trace(trace: Trace, envelope: WaveformEnvelope, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = trace["time_s"]
    silent_weight = trace["silence_weight"]
    fig, axes = plt.subplots(4, 1, figsize=(12, 8.5), sharex=True, constrained_layout=True)
    fig.suptitle(title or "MSadTalker motion trace")

    def shade(ax: Any) -> None:
        quiet = silent_weight < 0.5
        if quiet.any():
            ax.fill_between(
                t,
                0,
                1,
                where=quiet,
                transform=ax.get_xaxis_transform(),
                color="0.85",
                step="mid",
                linewidth=0,
                label="silence (w~ < 0.5)",
            )

    ax = axes[0]
    shade(ax)
    ax.fill_between(
        t,
        envelope.lows[: len(t)],
        envelope.highs[: len(t)],
        color="tab:blue",
        step="mid",
        linewidth=0,
    )
    ax.set_ylabel("waveform")
    ax.set_ylim(-1.05, 1.05)

    ax = axes[1]
    shade(ax)
    for name, color in (
        ("pitch_deg", "tab:red"),
        ("yaw_deg", "tab:green"),
        ("roll_deg", "tab:purple"),
    ):
        ax.plot(t, trace[name], color=color, linewidth=1.2, label=name.removesuffix("_deg"))
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.set_ylabel("head pose (deg)")
    ax.legend(loc="upper right", ncols=4, fontsize=8)

    ax = axes[2]
    shade(ax)
    ax.plot(t, trace["mouth_open"], color="tab:orange", linewidth=1.2, label="mouth open")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("mouth open")

    ax = axes[3]
    shade(ax)
    ax.step(
        t,
        (~trace["silent"]).astype(float),
        where="mid",
        color="0.4",
        linewidth=0.8,
        label="raw speech (1 - silent)",
    )
    ax.plot(t, silent_weight, color="tab:blue", linewidth=1.4, label="w~ (silence weight)")
    ax.set_ylim(-0.05, 1.1)
    ax.set_ylabel("weight")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", ncols=2, fontsize=8)

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
