"""Head pose and keypoint transformation of face-vid2vid as used by SadTalker (official:
OpenTalker/SadTalker ``src/facerender/modules/make_animation.py``).

Canonical keypoints ``kp`` (B or 1, 15, 3) from the KPDetector are rotated by the head pose,
shifted by the translation (only its y component) and offset by the expression deltas:

    kp' = kp @ R^T + (0, t_y, 0) + exp.view(15, 3),    R = Rx(pitch) Ry(yaw) Rz(roll)

with degrees converted using pi = 3.14 (as upstream; a true pi rotates visibly differently).
The pose comes either as MappingNet bin logits (``keypoint_transformation``) or directly in
degrees (``keypoint_transformation_degrees``, e.g. from the cosine pose generator). Inputs are
never modified in place (upstream zeroes ``t[:, 0]`` and ``t[:, 2]`` of its input). Pure
functions of their inputs; no delay.
"""

from __future__ import annotations

import torch

from msadtalker.models.mapping import MappingOutput

NUM_BINS = 66
BIN_DEGREES = 3.0
BIN_OFFSET_DEGREES = 99.0
PI_APPROX = 3.14  # upstream's value of pi in the degree -> radian conversion


def degrees_from_bins(logits: torch.Tensor) -> torch.Tensor:
    """Bin logits (B, 66) -> degrees (B,): ``3 * sum_k softmax_k * k - 99`` (-99 ... 96)."""
    bins = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    probabilities = torch.softmax(logits, dim=1)
    return (probabilities * bins).sum(dim=1) * BIN_DEGREES - BIN_OFFSET_DEGREES


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) each -> R = Rx(pitch) @ Ry(yaw) @ Rz(roll), shape (B, 3, 3)."""
    to_rad = PI_APPROX / 180.0
    pitch, yaw, roll = pitch * to_rad, yaw * to_rad, roll * to_rad
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)

    def matrix(*entries: torch.Tensor) -> torch.Tensor:
        return torch.stack(entries, dim=1).reshape(-1, 3, 3)

    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cr, sr = torch.cos(roll), torch.sin(roll)
    rx = matrix(one, zero, zero, zero, cp, -sp, zero, sp, cp)
    ry = matrix(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rz = matrix(cr, -sr, zero, sr, cr, zero, zero, zero, one)
    return rx @ ry @ rz


def keypoint_transformation_degrees(
    kp_canonical: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    roll: torch.Tensor,
    t: torch.Tensor,
    exp: torch.Tensor,
) -> torch.Tensor:
    """Canonical keypoints (B|1, K, 3), pose in degrees (B,), t (B, 3), exp (B, 3K) -> (B, K, 3).

    Only ``t[:, 1]`` is used (upstream zeroes the x and z translation).
    """
    rotated = kp_canonical @ rotation_matrix(yaw, pitch, roll).transpose(1, 2)
    keep_y = torch.tensor([0.0, 1.0, 0.0], dtype=t.dtype, device=t.device)
    return rotated + (t * keep_y)[:, None, :] + exp.reshape(exp.shape[0], -1, 3)


def keypoint_transformation(kp_canonical: torch.Tensor, motion: MappingOutput) -> torch.Tensor:
    """Canonical keypoints (B|1, K, 3) + MappingNet output (bin logits) -> keypoints (B, K, 3)."""
    return keypoint_transformation_degrees(
        kp_canonical,
        yaw=degrees_from_bins(motion.yaw),
        pitch=degrees_from_bins(motion.pitch),
        roll=degrees_from_bins(motion.roll),
        t=motion.t,
        exp=motion.exp,
    )
