"""Contact sheets: a grid of frames with optional captions, for READMEs and visual checks."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def contact_sheet(
    frames: Sequence[np.ndarray],
    columns: int = 4,
    captions: Sequence[str] | None = None,
    cell: int | None = None,
    gap: int = 4,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Tile RGB uint8 ``frames`` (any sizes) into one RGB uint8 image.

    ``cell``: side of the square cell each frame is fitted into (default: the largest frame
    side); frames keep their aspect ratio and are centred. ``captions``: one line of text
    per frame, drawn in a strip under it.
    """
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    if captions is not None and len(captions) != len(frames):
        raise ValueError("need one caption per frame")
    columns = max(1, min(columns, len(frames)))
    side = cell or max(max(f.shape[:2]) for f in frames)
    caption_h = max(14, side // 12) if captions else 0
    rows = -(-len(frames) // columns)
    height = rows * (side + caption_h) + (rows + 1) * gap
    width = columns * side + (columns + 1) * gap
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = background
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        y = gap + r * (side + caption_h + gap)
        x = gap + c * (side + gap)
        fitted = _fit(frame, side)
        fh, fw = fitted.shape[:2]
        oy, ox = (side - fh) // 2, (side - fw) // 2
        sheet[y + oy : y + oy + fh, x + ox : x + ox + fw] = fitted
        if captions:
            scale = caption_h / 30.0
            cv2.putText(
                sheet,
                captions[i],
                (x + 2, y + side + int(caption_h * 0.8)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (30, 30, 30),
                1,
                cv2.LINE_AA,
            )
    return sheet


def _fit(frame: np.ndarray, side: int) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    h, w = frame.shape[:2]
    k = side / max(h, w)
    if abs(k - 1.0) < 1e-9:
        return frame
    size = (max(1, round(w * k)), max(1, round(h * k)))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC
    return cv2.resize(frame, size, interpolation=interp)
