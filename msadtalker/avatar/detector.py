"""Face detection with MediaPipe's BlazeFace models (short + full range), decoded here.

Input: an RGB uint8 image of any size. Output: ``FaceBox`` list (pixels), largest first.

Both shipped models are SSD-style single-class detectors. Each anchor regresses 16 numbers in
input-tensor pixels: box centre offset (2), box size (2) and 6 key points (eyes, nose tip,
mouth, ear tragions), all relative to the anchor centre; a separate logit scores the anchor.
The short-range model (128 x 128) is trained on faces filling a good part of a selfie, the
full-range one (192 x 192, dense 48 x 48 grid) on faces up to ~5 m away, so running both and
merging their detections covers close-up portraits as well as small faces in larger photos.
Images are letterboxed to a square first so faces keep their aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from msadtalker.avatar.tflite import load_interpreter

MODELS = Path(__file__).resolve().parent / "models"
_RAW_SCORE_LIMIT = 80.0  # sigmoid of larger logits overflows float32 exp
MIN_SCORE = 0.5
NMS_IOU = 0.3


@dataclass(frozen=True)
class _SsdSpec:
    file: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per distinct stride, in order


_SHORT = _SsdSpec("face_detection_short_range.tflite", 128, (8, 16), (2, 6))
_FULL = _SsdSpec("face_detection_full_range.tflite", 192, (4,), (1,))


@dataclass(frozen=True)
class FaceBox:
    """A detected face in image pixels: box corners, the two eyes (image left, image right),
    and the detector's confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    score: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0


def ssd_anchors(spec: _SsdSpec) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in the order the model emits its rows.

    MediaPipe's SSD anchor calculator with fixed-size anchors: for each distinct stride, a
    grid of cells with ``anchors_per_cell`` identical anchors at each cell centre.
    """
    out = []
    for stride, count in zip(spec.strides, spec.anchors_per_cell, strict=True):
        cells = spec.input_size // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        yy, xx = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(grid, count, axis=0))
    return np.concatenate(out, axis=0)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: np.ndarray = inter / np.maximum(area + areas - inter, 1e-9)
    return iou


def weighted_nms(rows: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    ``rows``: (N, 16) decoded detections (x0, y0, x1, y1, 6 key points); ``scores``: (N,).
    Repeatedly takes the best remaining detection, and replaces it by the score-weighted mean
    of every detection overlapping it by more than ``iou``; returns rows with the best score
    appended as a 17th value.
    """
    order = np.argsort(-scores, kind="stable")
    rows, scores = rows[order], scores[order]
    remaining = np.arange(len(rows))
    out: list[np.ndarray] = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(rows[best, :4], rows[remaining, :4]) > iou
        members = remaining[overlap]
        weights = scores[members][:, None]
        merged = (rows[members] * weights).sum(axis=0) / weights.sum()
        out.append(np.append(merged, scores[best]))
        remaining = remaining[~overlap]
    return out


class FaceDetector:
    """BlazeFace short + full range. ``detect(rgb)`` -> faces in pixels, largest first."""

    def __init__(self, num_threads: int = 1) -> None:
        self._models = []
        for spec in (_SHORT, _FULL):
            interpreter = load_interpreter(MODELS / spec.file, num_threads)
            outputs = interpreter.get_output_details()
            # Outputs: regressors (1, N, 16) and classificators (1, N, 1); tell them apart by
            # shape rather than by name or order.
            reg = next(o["index"] for o in outputs if o["shape"][-1] == 16)
            cls = next(o["index"] for o in outputs if o["shape"][-1] == 1)
            inp = interpreter.get_input_details()[0]["index"]
            self._models.append((spec, interpreter, inp, reg, cls, ssd_anchors(spec)))

    def detect(self, rgb: np.ndarray, min_score: float = MIN_SCORE) -> list[FaceBox]:
        height, width = rgb.shape[:2]
        side = max(height, width)
        rows, scores = [], []
        for spec, interpreter, inp, reg, cls, anchors in self._models:
            # Letterbox: centre the image on a square canvas, then resize to the model size.
            pad_x, pad_y = (side - width) / 2.0, (side - height) / 2.0
            scale = spec.input_size / side
            size = spec.input_size
            small = _resize_for(rgb, scale)
            # Pixel-centre convention: tensor t + 0.5 = scale * (x + 0.5 + pad), and x is
            # reached from the (possibly pre-shrunk) ``small`` image's coordinates.
            k = width / small.shape[1]
            m_small = np.array(
                [
                    [scale * k, 0.0, scale * (pad_x + 0.5 * k) - 0.5],
                    [0.0, scale * k, scale * (pad_y + 0.5 * k) - 0.5],
                ]
            )
            tensor = cv2.warpAffine(
                small,
                m_small,
                (size, size),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
            x = tensor.astype(np.float32)[None] / 127.5 - 1.0
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            raw = interpreter.get_tensor(reg)[0].reshape(-1, 8, 2) / size
            logits = np.clip(
                interpreter.get_tensor(cls)[0, :, 0], -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT
            )
            prob = 1.0 / (1.0 + np.exp(-logits))
            keep = prob > min_score
            if not keep.any():
                continue
            raw, anc = raw[keep], anchors[keep][:, None, :]
            centre = raw[:, 0:1] + anc
            half = raw[:, 1:2] / 2.0
            points = raw[:, 2:] + anc
            decoded = np.concatenate([centre - half, centre + half, points], axis=1)
            # Normalised letterboxed square -> image pixels (pixel-centre convention).
            decoded = decoded * side - np.array([pad_x + 0.5, pad_y + 0.5])
            boxes = decoded.reshape(len(decoded), -1)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            rows.append(boxes[valid])
            scores.append(prob[keep][valid])
        if not rows:
            return []
        merged = weighted_nms(np.concatenate(rows), np.concatenate(scores))
        faces = []
        for row in merged:
            # Key points 0 and 1 are the two eyes; order them by x (image left first).
            eyes = sorted([(float(row[4]), float(row[5])), (float(row[6]), float(row[7]))])
            faces.append(
                FaceBox(
                    float(row[0]),
                    float(row[1]),
                    float(row[2]),
                    float(row[3]),
                    eyes[0],
                    eyes[1],
                    float(row[16]),
                )
            )
        faces.sort(key=lambda f: -f.area)
        return faces


def _resize_for(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Area-downscale big images first so the final bilinear warp does not alias."""
    if scale >= 0.5:
        return rgb
    factor = scale * 2.0
    h, w = rgb.shape[:2]
    return cv2.resize(
        rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA
    )
