"""Motion trace CSV: one row per video frame, the same from ``motion``, ``render`` and live.

Columns (exactly): frame, time_s, pitch_deg, yaw_deg, roll_deg, upper_lip, lower_lip,
mouth_open, silent, silence_weight. Pose and mouth_open are what is rendered (after the
silence weighting); upper_lip / lower_lip are the lip signal the weighter read; ``silent`` is
the raw 0/1 detection, ``silence_weight`` the smoothed w~. The file is written to a temporary
name and renamed on ``close`` so a failed run never leaves half a trace behind.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from streamer.types import MotionFrame, VideoFrame

COLUMNS = (
    "frame",
    "time_s",
    "pitch_deg",
    "yaw_deg",
    "roll_deg",
    "upper_lip",
    "lower_lip",
    "mouth_open",
    "silent",
    "silence_weight",
)


def trace_row(frame: MotionFrame) -> list[str]:
    lips = frame.lips
    return [
        str(frame.index),
        f"{frame.time_s:.3f}",
        f"{frame.pose.pitch:.6f}",
        f"{frame.pose.yaw:.6f}",
        f"{frame.pose.roll:.6f}",
        f"{lips.upper_lip:.6f}",
        f"{lips.lower_lip:.6f}",
        f"{frame.mouth_open:.6f}",
        "1" if frame.silence.silent else "0",
        f"{frame.silence.weight:.6f}",
    ]


class TraceWriter:
    """Streams rows to ``path`` (atomically renamed into place on ``close``)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        self._file: TextIO | None = self._tmp.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def write(self, frame: MotionFrame | VideoFrame) -> None:
        if isinstance(frame, VideoFrame):
            frame = frame.motion
        self._writer.writerow(trace_row(frame))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self._path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Trace:
    """A trace read back as columns (float64 arrays; ``frame`` int, ``silent`` bool)."""

    columns: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(self.columns["frame"])


def read_trace(path: str | Path) -> Trace:
    with Path(path).open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path} is not a motion trace (header {header})")
        rows = list(reader)
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(COLUMNS))
    columns = {name: data[:, i] for i, name in enumerate(COLUMNS)}
    columns["frame"] = columns["frame"].astype(np.int64)
    columns["silent"] = columns["silent"].astype(bool)
    return Trace(columns)
