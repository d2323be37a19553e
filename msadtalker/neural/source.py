"""Source preparation, once per avatar and checkpoint (official: OpenTalker/SadTalker
``src/utils/preprocess.py`` for the coefficients, ``src/generate_facerender_batch.py`` for the
source semantics, ``src/facerender/modules/make_animation.py`` for the keypoints).

Input: a ``PreparedAvatar`` (our square SadTalker-style crop at the render size S and its 468
MediaPipe landmarks in crop pixels). Steps:

1. Alignment points: the 5 points the official code takes from 68 landmarks, from ours:
   eyes = midpoint of each eye's two corners (the 68-point 37/40 and 43/46), nose tip
   (68-point 31), outer mouth corners (49, 55); y flipped (``y' = S - 1 - y``) as upstream.
2. ``align_face`` -> 224 x 224 face-recon input and ``(s, tx, ty)``; face recon -> 257
   coefficients -> the source's 73-vector ``[exp | angles | trans | s, tx, ty]``.
3. KPDetector on the S x S crop (RGB / 255) -> 15 canonical keypoints.
4. Mapping of the source semantics (the source row repeated 27 times) -> source keypoints
   (``keypoint_transformation``) and their rigid part (the same without the expression
   offsets; the lip reader holds the head there).

The results are small (a few hundred floats) and cached on disk (``msadtalker.avatar.cache``)
keyed by the avatar (photo hash, crop, face), the checkpoint fingerprint and the mapping
variant, so a second start with the same photo and checkpoints runs none of these networks.
The generator's source encoding is large (8 MB at 256) and lives in memory only
(``msadtalker.neural.render``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msadtalker.avatar import cache
from msadtalker.avatar.prepare import PreparedAvatar
from msadtalker.avatar.topology import MOUTH_CORNERS, NOSE_TIP
from msadtalker.models.face_recon import align_face, coeffs_73
from msadtalker.models.keypoints import keypoint_transformation
from msadtalker.models.mapping import MappingOutput
from msadtalker.neural.coeffs import EXP, source_window
from msadtalker.neural.runner import NetworkRunner

log = logging.getLogger(__name__)

NEURAL_PREP_VERSION = "neural-source-1"
# Eye corners on the 468-point mesh: (outer, inner) of the image-left eye, (inner, outer) of
# the image-right eye, as the 68-point layout's points 37/40 and 43/46 (1-based).
LEFT_EYE_CORNERS = (33, 133)
RIGHT_EYE_CORNERS = (362, 263)
MAPPING_OUTPUTS = ("yaw", "pitch", "roll", "t", "exp")


def five_points(landmarks: np.ndarray, height: int) -> np.ndarray:
    """468 landmarks (x, y-down pixels) -> the 5 alignment points with y measured upward."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    points = np.stack(
        [
            lm[list(LEFT_EYE_CORNERS)].mean(axis=0),
            lm[list(RIGHT_EYE_CORNERS)].mean(axis=0),
            lm[NOSE_TIP],
            lm[MOUTH_CORNERS[0]],
            lm[MOUTH_CORNERS[1]],
        ]
    )
    points[:, 1] = height - 1 - points[:, 1]
    return points


def image_tensor(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (1, 3, S, S) float32 in [0, 1] (KPDetector / generator input)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def mapping_output(values: dict[str, np.ndarray]) -> MappingOutput:
    return MappingOutput(*(torch.from_numpy(np.asarray(values[k])) for k in MAPPING_OUTPUTS))


def keypoints_from_mapping(
    kp_canonical: np.ndarray, outputs: dict[str, np.ndarray], with_expression: bool = True
) -> np.ndarray:
    """Canonical (15, 3) + mapping outputs (batch 1) -> transformed keypoints (15, 3)."""
    values = dict(outputs)
    if not with_expression:
        values["exp"] = np.zeros_like(np.asarray(values["exp"]))
    kp = torch.from_numpy(np.asarray(kp_canonical, dtype=np.float32)[None])
    out: np.ndarray = keypoint_transformation(kp, mapping_output(values))[0].numpy()
    return out


@dataclass(frozen=True)
class NeuralSource:
    """What the per-frame work needs to know about the source photo (all float32).

    ``coeffs`` (73,): ``[exp 64 | angles 3 | trans 3 | s, tx, ty]``; ``kp_canonical``,
    ``kp_source``, ``kp_rigid`` (15, 3): canonical keypoints, mapping(source) keypoints and
    the same without expression offsets. ``coeff_nc`` 70 or 73 says which mapping net made
    the source keypoints (``mapping_network``).
    """

    image: np.ndarray
    coeffs: np.ndarray
    kp_canonical: np.ndarray
    kp_source: np.ndarray
    kp_rigid: np.ndarray
    coeff_nc: int
    mapping_network: str
    from_cache: bool = False

    @property
    def row(self) -> np.ndarray:
        """The source's own coefficient row (70 or 73)."""
        return self.coeffs[: self.coeff_nc]

    @property
    def ref_exp(self) -> np.ndarray:
        return self.coeffs[EXP]

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


def prepare_neural_source(
    avatar: PreparedAvatar,
    run: NetworkRunner,
    mapping_network: str,
    coeff_nc: int,
    fingerprint: str,
    *,
    use_cache: bool = True,
    cache_dir: Path | None = None,
) -> NeuralSource:
    """See the module docstring. ``fingerprint``: ``msadtalker.weights.checkpoint_fingerprint``."""
    key = _cache_key(avatar, fingerprint, mapping_network, coeff_nc)
    if use_cache:
        entry = cache.read_entry(key, cache_dir)
        if entry is not None:
            try:
                return _from_entry(entry, avatar, mapping_network, coeff_nc)
            except (KeyError, ValueError) as exc:
                log.warning("neural source cache entry is stale (%s); preparing again", exc)
    size = avatar.size
    aligned = align_face(np.ascontiguousarray(avatar.image), five_points(avatar.landmarks, size))
    coeffs_257 = run("face_3drecon", aligned.tensor().numpy())["coeffs"]
    coeffs = coeffs_73(torch.from_numpy(coeffs_257), torch.from_numpy(aligned.params))
    source_coeffs = coeffs[0].numpy().astype(np.float32)
    kp_canonical = run("kp_extractor", image_tensor(avatar.image))["keypoints"][0]
    motion = dict(run(mapping_network, source_window(source_coeffs[:coeff_nc])))
    source = NeuralSource(
        image=avatar.image,
        coeffs=source_coeffs,
        kp_canonical=kp_canonical.astype(np.float32),
        kp_source=keypoints_from_mapping(kp_canonical, motion),
        kp_rigid=keypoints_from_mapping(kp_canonical, motion, with_expression=False),
        coeff_nc=coeff_nc,
        mapping_network=mapping_network,
    )
    if use_cache:
        cache.write_entry(key, _to_entry(source), cache_dir)
    log.info("neural source prepared for %s", avatar.source_name or avatar.source_hash[:12])
    return source


def _cache_key(avatar: PreparedAvatar, fingerprint: str, network: str, coeff_nc: int) -> str:
    params = {
        "avatar": avatar.source_hash,
        "size": avatar.size,
        "crop_box": [round(v, 4) for v in avatar.crop_box],
        "face_index": avatar.face_index,
        "checkpoint": fingerprint,
        "mapping": network,
        "coeff_nc": coeff_nc,
        "version": NEURAL_PREP_VERSION,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:40]
    return f"neural-{digest}"


_ARRAYS = ("coeffs", "kp_canonical", "kp_source", "kp_rigid")


def _to_entry(source: NeuralSource) -> dict[str, np.ndarray]:
    return {name: getattr(source, name) for name in _ARRAYS} | {
        "meta": np.array(json.dumps({"version": NEURAL_PREP_VERSION}))
    }


def _from_entry(
    entry: dict[str, np.ndarray], avatar: PreparedAvatar, network: str, coeff_nc: int
) -> NeuralSource:
    if json.loads(str(entry["meta"])).get("version") != NEURAL_PREP_VERSION:
        raise ValueError("version mismatch")
    shapes = {"coeffs": (73,), "kp_canonical": (15, 3), "kp_source": (15, 3), "kp_rigid": (15, 3)}
    arrays = {name: np.asarray(entry[name], dtype=np.float32) for name in _ARRAYS}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            raise ValueError(f"{name} has shape {arrays[name].shape}")
    return NeuralSource(
        image=avatar.image,
        coeff_nc=coeff_nc,
        mapping_network=network,
        from_cache=True,
        **arrays,
    )
