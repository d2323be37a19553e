"""Is a reduced-precision path good enough: PSNR of its frames against FP32, lips unchanged.

``check_precision(golden, reference, candidate)`` renders the golden generator inputs (the
source image and its keypoint pairs: ``gen_kp_source`` / ``gen_kp_driving``) through the split
generator of both engine sets and reports the PSNR of every frame against the FP32 reference
(goal: ``engines.fast_path.PSNR_GOAL_DB``, 40 dB) and the largest difference of the mapping
outputs (the lip and head keypoints: they run in FP32 on the fast path, so it must be 0 up to
run-to-run noise). Meant for a GPU (``engines.fast_path``); on a CPU it runs with BF16 autocast
(slowly), which is how its code is tested here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engines.base import EngineSet
from engines.fast_path import PSNR_GOAL_DB, psnr


@dataclass(frozen=True)
class PrecisionReport:
    frame_psnr_db: tuple[float, ...]
    keypoint_max_abs_diff: float | None
    goal_db: float = PSNR_GOAL_DB

    @property
    def ok(self) -> bool:
        frames_ok = bool(self.frame_psnr_db) and min(self.frame_psnr_db) >= self.goal_db
        lips_ok = self.keypoint_max_abs_diff is None or self.keypoint_max_abs_diff <= 1e-4
        return frames_ok and lips_ok

    def to_json(self) -> dict[str, object]:
        return {
            "frame_psnr_db": [round(v, 2) for v in self.frame_psnr_db],
            "min_psnr_db": round(min(self.frame_psnr_db), 2) if self.frame_psnr_db else None,
            "goal_db": self.goal_db,
            "keypoint_max_abs_diff": self.keypoint_max_abs_diff,
            "ok": self.ok,
        }


def _frames(engines: EngineSet, golden: Mapping[str, np.ndarray]) -> np.ndarray:
    features = engines.engine("generator_source_encoder").run(golden["source_image"])
    volume, compressed = features["source_volume"], features["source_compressed"]
    render = engines.engine("generator_render")
    frames = []
    for kp_source, kp_driving in zip(
        golden["gen_kp_source"], golden["gen_kp_driving"], strict=True
    ):
        out = render.run(volume, compressed, kp_source[None], kp_driving[None])
        frames.append(np.asarray(out["prediction"], np.float32)[0])
    return np.stack(frames)


def check_precision(
    golden: Mapping[str, np.ndarray],
    reference: EngineSet,
    candidate: EngineSet,
    mapping: str | None = "mapping",
) -> PrecisionReport:
    """PSNR per golden frame and the mapping outputs' largest difference (module docstring)."""
    want, got = _frames(reference, golden), _frames(candidate, golden)
    scores = tuple(psnr(a, b) for a, b in zip(want, got, strict=True))
    keypoints = None
    source_key = "map70_source_in" if mapping == "mapping" else "map73_source_in"
    if mapping is not None and source_key in golden:
        a = reference.engine(mapping).run(golden[source_key])
        b = candidate.engine(mapping).run(golden[source_key])
        keypoints = max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a)
    return PrecisionReport(scores, keypoints)
