"""Per-frame neural motion of one avatar: ExpNet, the lip windows and the driving keypoints.

How MSadTalker's pieces meet SadTalker's networks here:

* **Expression.** ExpNet's last layer is ``Linear([audio 512 | ref exp 64 | blink 1])``, so
  its output is exactly ``ExpNet(mel, ref, 0) + blink * b`` with ``b`` the blink column
  (measured once per checkpoint as ``ExpNet(., ., 1) - ExpNet(., ., 0)``). The lips stage
  carries the audio part as a *delta* from the source's own expression (``ExpNet(mel, ref,
  0) - ref``: zero is the photo's expression, which is where the motion stage's silence
  damping and barge-in rest go); the drive row adds the reference back and the blink term of
  our seeded blink schedule after the damping, so blinks are not damped away in silence.
* **Lip window** (breaks the circularity "silence weight gates the pose that feeds the
  mapping"): rows ``[ref + delta | source angles | source trans (| s, tx, ty)]``: the head is
  held at the source pose, and the lip keypoints are read with the rigid part held too
  (``lips.LipReader``).
* **Drive row**: ``[ref + damped delta + blink * b | source angles + cosine pose offset (deg ->
  rad) | source trans (| s, tx, ty)]``; the mapping on its 27-frame window ->
  ``keypoint_transformation`` -> the generator's driving keypoints.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msadtalker.avatar import cache
from msadtalker.neural.coeffs import row_with, source_window
from msadtalker.neural.lips import (
    LipKeypoints,
    LipReader,
    LipSignal,
    calibrate_lip_keypoints,
    expnet,
    lip_keypoints_from_response,
    silent_window,
)
from msadtalker.neural.runner import NetworkRunner
from msadtalker.neural.source import NeuralSource, keypoints_from_mapping

log = logging.getLogger(__name__)

CONSTANTS_VERSION = "neural-constants-1"


@dataclass(frozen=True)
class CheckpointConstants:
    """What the neural path derives once per checkpoint (and mapping variant)."""

    blink_direction: np.ndarray  # (64,) ExpNet's exact response to the blink ratio
    lips: LipKeypoints


def checkpoint_constants(
    run: NetworkRunner,
    mapping_network: str,
    coeff_nc: int,
    size: int,
    fingerprint: str | None = None,
    cache_dir: Path | None = None,
) -> CheckpointConstants:
    """The blink column and the lip calibration; cached on disk when ``fingerprint`` (the
    checkpoint's, ``msadtalker.weights.checkpoint_fingerprint``) is given."""
    key = None
    if fingerprint is not None:
        params = f"{CONSTANTS_VERSION}:{fingerprint}:{mapping_network}:{coeff_nc}:{size}"
        key = "neural-constants-" + hashlib.sha256(params.encode()).hexdigest()[:32]
        entry = cache.read_entry(key, cache_dir)
        if entry is not None:
            try:
                return _constants_from_entry(entry)
            except (KeyError, ValueError) as exc:
                log.warning("neural calibration cache entry is stale (%s); recomputing", exc)
    zero = np.zeros(64, dtype=np.float32)
    silent = silent_window()[None]
    blink = expnet(run, silent, zero, blink=1.0)[0] - expnet(run, silent, zero)[0]
    constants = CheckpointConstants(
        blink_direction=blink.astype(np.float32),
        lips=calibrate_lip_keypoints(run, mapping_network, coeff_nc, size),
    )
    if key is not None:
        cache.write_entry(key, _constants_to_entry(constants), cache_dir)
    return constants


def _constants_to_entry(constants: CheckpointConstants) -> dict[str, np.ndarray]:
    lips = constants.lips
    return {
        "blink_direction": constants.blink_direction,
        "lip_keypoints": np.array([lips.upper, lips.lower], dtype=np.int64),
        "response": lips.response,
        "exp_direction": lips.exp_direction,
        "version": np.array(CONSTANTS_VERSION),
    }


def _constants_from_entry(entry: dict[str, np.ndarray]) -> CheckpointConstants:
    if str(entry["version"]) != CONSTANTS_VERSION:
        raise ValueError("version mismatch")
    response = np.asarray(entry["response"], dtype=np.float32)
    upper, lower = (int(k) for k in entry["lip_keypoints"])
    blink = np.asarray(entry["blink_direction"], dtype=np.float32)
    if (
        response.shape != (15, 3)
        or blink.shape != (64,)
        or not 0 <= min(upper, lower) <= max(upper, lower) < 15
    ):
        raise ValueError("unexpected shapes")
    return CheckpointConstants(
        blink_direction=blink,
        lips=lip_keypoints_from_response(
            response, upper, lower, np.asarray(entry["exp_direction"], dtype=np.float32)
        ),
    )


class NeuralMotion:
    """ExpNet + MappingNet computations of one avatar (stateless between calls)."""

    def __init__(
        self, run: NetworkRunner, source: NeuralSource, constants: CheckpointConstants
    ) -> None:
        self._run = run
        self.source = source
        self.constants = constants
        self._ref = source.ref_exp.astype(np.float32)
        rest = self.lip_row(self.expression(silent_window()))
        closed = self._mapping_exp(source_window(rest))
        upper, lower = constants.lips.signals(source.kp_rigid + closed.reshape(15, 3))
        self.reader = LipReader(constants.lips, source.kp_rigid, upper + lower)

    @property
    def coeff_nc(self) -> int:
        return self.source.coeff_nc

    @property
    def nominal_range(self) -> float:
        return self.constants.lips.nominal_range

    def expression(self, mel: np.ndarray) -> np.ndarray:
        """(80, 16) mel window -> (64,) expression delta from the source's (blink excluded)."""
        exp = expnet(self._run, np.asarray(mel)[None], self._ref)[0]
        delta: np.ndarray = (exp - self._ref).astype(np.float32)
        return delta

    def lip_row(self, delta: np.ndarray) -> np.ndarray:
        return row_with(self.source.coeffs, self.coeff_nc, self._ref + delta)

    def drive_row(
        self, delta: np.ndarray, blink: float, pose_deg: tuple[float, float, float]
    ) -> np.ndarray:
        """Row of a rendered frame; ``pose_deg`` = (pitch, yaw, roll) offsets in degrees."""
        exp = self._ref + delta + np.float32(blink) * self.constants.blink_direction
        return row_with(self.source.coeffs, self.coeff_nc, exp, pose_deg)

    def lip_signal(self, window: np.ndarray) -> LipSignal:
        """(1, C, 27) lip window -> the lip signal of its centre frame."""
        return self.reader.read(self._mapping_exp(window))

    def driving_keypoints(self, window: np.ndarray) -> np.ndarray:
        """(1, C, 27) drive window -> (15, 3) driving keypoints of its centre frame."""
        outputs = dict(self._run(self.source.mapping_network, window))
        return keypoints_from_mapping(self.source.kp_canonical, outputs)

    def _mapping_exp(self, window: np.ndarray) -> np.ndarray:
        out = self._run(self.source.mapping_network, window)["exp"]
        exp: np.ndarray = np.asarray(out, dtype=np.float32)[0]
        return exp
