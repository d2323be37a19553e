"""Face reconstruction network (Deep3DFaceRecon ``ReconNetWrapper``; official: OpenTalker/SadTalker
``src/face3d/models/networks.py``, its output split and alignment in ``src/utils/preprocess.py``
and ``src/face3d/util/preprocess.py``).

Input ``image`` (B, 3, 224, 224) RGB in [0, 1] (no mean/std normalisation), a face aligned by
``align_face`` (below). Output ``coeffs`` (B, 257) 3DMM coefficients:
``id 0:80 | exp 80:144 | tex 144:224 | angle 224:227 (pitch, yaw, roll rad) | gamma 227:254 |
trans 254:257``. Runs once per avatar (no delay). Independent of the render size (256 / 512).

Backbone: ResNet-50 v1.5 (stride in the 3x3 conv of each first bottleneck), global average
pool to 2048, no fc; then seven 1x1 convs with bias (2048 -> 80, 64, 80, 3, 27, 2, 1) whose
outputs are concatenated in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from msadtalker.models.contract import ExportContract, TensorSpec

INPUT_SIZE = 224
NUM_COEFFS = 257
# id, exp, tex, angle, gamma, (tx, ty), tz
_HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
_EXPANSION = 4

# Slices of the 257-vector (official ``split_coeff`` in src/utils/preprocess.py).
ID = slice(0, 80)
EXP = slice(80, 144)
TEX = slice(144, 224)
ANGLE = slice(224, 227)
GAMMA = slice(227, 254)
TRANS = slice(254, 257)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4 channels), BN after each, ReLU after the sum."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """(B, 3, H, W) -> (B, 2048, 1, 1) globally pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (width, blocks, stride) in enumerate(_STAGES, start=1):
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * _EXPANSION
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for index in range(1, len(_STAGES) + 1):
            x = getattr(self, f"layer{index}")(x)
        pooled: torch.Tensor = self.avgpool(x)
        return pooled


class FaceReconNet(nn.Module):
    """Aligned face (B, 3, 224, 224) in [0, 1] -> 257 3DMM coefficients (B, 257)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList(
            nn.Conv2d(self.backbone.out_channels, size, 1, bias=True) for size in _HEAD_SIZES
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.backbone(image)
        heads = [head(features) for head in self.final_layers]
        coeffs: torch.Tensor = torch.cat(heads, dim=1).flatten(1)
        return coeffs

    @staticmethod
    def export_contract() -> ExportContract:
        batch = {0: "batch"}
        return ExportContract(
            name="face_recon",
            inputs=(TensorSpec("image", (1, 3, INPUT_SIZE, INPUT_SIZE), batch),),
            outputs=(TensorSpec("coeffs", (1, NUM_COEFFS), batch),),
            example_inputs=lambda: (
                torch.rand(
                    1, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0)
                ),
            ),
        )


def coeffs_73(coeffs_257: torch.Tensor, align_params: torch.Tensor) -> torch.Tensor:
    """SadTalker's per-image vector ``[exp 64 | angle 3 | trans 3 | s, tx, ty]`` (B, 73).

    ``align_params`` (B, 3) or (3,) are the alignment's ``(s, tx, ty)`` (official ``align_img``).
    """
    params = align_params.to(coeffs_257.dtype).reshape(-1, 3).expand(coeffs_257.shape[0], 3)
    return torch.cat(
        (coeffs_257[:, EXP], coeffs_257[:, ANGLE], coeffs_257[:, TRANS], params), dim=1
    )


# --- alignment (official ``src/face3d/util/preprocess.py``, ``align_img``) ---------------------

# Standard 3-D positions of (left eye, right eye, nose tip, mouth left, mouth right).
STANDARD_POINTS_3D = np.array(
    [
        [-0.311487, 0.290361, 0.133780],
        [0.309799, 0.289720, 0.131795],
        [0.003253, -0.046179, 0.552442],
        [-0.252169, -0.381339, 0.224057],
        [0.248466, -0.381282, 0.222358],
    ],
    dtype=np.float64,
)
RESCALE = 102.0  # target scale of the fitted camera after alignment


@dataclass(frozen=True)
class AlignedFace:
    """The 224 x 224 face-recon input and the alignment parameters (s, tx, ty)."""

    image: np.ndarray  # (224, 224, 3) uint8 RGB
    scale: float
    tx: float
    ty: float

    @property
    def params(self) -> np.ndarray:
        """``(s, tx, ty)`` as stored in coefficients 70:73 (float32)."""
        return np.array([self.scale, self.tx, self.ty], dtype=np.float32)

    def tensor(self) -> torch.Tensor:
        """Network input (1, 3, 224, 224) float32 in [0, 1] (divided in float64, as upstream)."""
        scaled = self.image.astype(np.float64) / 255.0
        return torch.from_numpy(scaled.astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def fit_camera(
    points_2d: np.ndarray, points_3d: np.ndarray = STANDARD_POINTS_3D
) -> tuple[float, float, float]:
    """Least-squares 2x4 affine camera from 3-D to 2-D points -> (scale, tx, ty).

    Rows ``[R1 | sTx]``, ``[R2 | sTy]``; scale = (|R1| + |R2|) / 2 (before the 102/s rescale).
    """
    pts2 = np.asarray(points_2d, dtype=np.float64).reshape(-1, 2)
    pts3 = np.asarray(points_3d, dtype=np.float64).reshape(-1, 3)
    if pts2.shape[0] != pts3.shape[0] or pts2.shape[0] < 4:
        raise ValueError("need the same number (>= 4) of 2-D and 3-D points")
    n = pts2.shape[0]
    system = np.zeros((2 * n, 8))
    system[0::2, 0:3] = pts3
    system[0::2, 3] = 1.0
    system[1::2, 4:7] = pts3
    system[1::2, 7] = 1.0
    solution, *_ = np.linalg.lstsq(system, pts2.reshape(-1), rcond=None)
    scale = (np.linalg.norm(solution[0:3]) + np.linalg.norm(solution[4:7])) / 2.0
    return float(scale), float(solution[3]), float(solution[7])


# Resized sides within this of a whole number are a knife edge for the reference's int32
# truncation: its float64 least-squares noise (~1e-13 relative) decides n or n - 1.
KNIFE_EDGE_PX = 1e-6


def resize_sides(width0: int, height0: int, scale: float) -> tuple[int, int]:
    """The reference's ``(int(w0 * s), int(h0 * s))``."""
    return int(width0 * scale), int(height0 * scale)


def knife_edge(width0: int, height0: int, scale: float) -> bool:
    """Whether :func:`resize_sides` sits on a whole number (see ``KNIFE_EDGE_PX``)."""
    return any(
        abs(side * scale - round(side * scale)) < KNIFE_EDGE_PX for side in (width0, height0)
    )


def align_face(
    image: np.ndarray, points_5: np.ndarray, sides: tuple[int, int] | None = None
) -> AlignedFace:
    """Crop the face-recon input from an RGB image (H, W, 3) uint8 and 5 landmarks.

    ``points_5`` (5, 2): left eye, right eye, nose, mouth left, mouth right in pixels, with y
    measured upward (``y' = H - 1 - y``, see ``five_points_from_68``). The image is resized
    (PIL bicubic) by ``s = 102 / fitted scale`` and a 224 x 224 window is cut (black outside).
    ``sides`` overrides the resized (width, height), for checks that must try both sides of a
    :func:`knife_edge`.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("align_face expects an RGB uint8 image (H, W, 3)")
    height0, width0 = image.shape[:2]
    fitted, tx, ty = fit_camera(points_5)
    scale = RESCALE / fitted
    width, height = sides or resize_sides(width0, height0, scale)
    half = INPUT_SIZE / 2
    # int() truncates toward zero, matching the reference's int32 casts.
    left = int(width / 2 - half + (tx - width0 / 2) * scale)
    top = int(height / 2 - half + (height0 / 2 - ty) * scale)
    resized = Image.fromarray(image).resize((width, height), resample=Image.Resampling.BICUBIC)
    crop = resized.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    return AlignedFace(image=np.asarray(crop, dtype=np.uint8), scale=scale, tx=tx, ty=ty)


def five_points_from_68(landmarks: np.ndarray, height: int) -> np.ndarray:
    """68 iBUG landmarks (x, y-down pixels) -> the 5 alignment points with y measured upward."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(68, 2)
    points = np.stack(
        [
            lm[[36, 39]].mean(axis=0),  # left eye: points 37, 40 (1-based)
            lm[[42, 45]].mean(axis=0),  # right eye: 43, 46
            lm[30],  # nose tip: 31
            lm[48],  # mouth left: 49
            lm[54],  # mouth right: 55
        ]
    )
    points[:, 1] = height - 1 - points[:, 1]
    return points


def fallback_five_points(width: int, height: int) -> np.ndarray:
    """Points used when no face is found: the standard points' (x, y) mapped to pixels."""
    xy = (STANDARD_POINTS_3D[:, :2] + 1.0) / 2.0
    return np.stack([xy[:, 0] * width, xy[:, 1] * height], axis=1)
