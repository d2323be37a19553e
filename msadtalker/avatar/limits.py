"""Photos the mesh avatar can animate only partly: told once, as a warning, not refused.

A photo is still rendered (the warp has no holes whatever the landmarks say), but the user
should know why the result may look wrong. Checked on the prepared crop and its landmarks
(cheap, so also on a cache hit):

* a turned face (``TURNED_LIMIT``): the two half-faces, nose to cheek outline, differ by
  more than about a 30 degree turn; the far cheek is foreshortened, the mesh cannot show it
  and the landmarks of that side are guesses;
* a covered mouth (hand, microphone): in a colour photo the lips are redder than the skin
  around them (CIELAB a*, ``LIP_REDNESS``); a mouth region no redder than the cheeks is
  covered (or the lips are painted skin-coloured), and the painted interior will open over
  whatever covers it;
* extreme light: the face is very dark or very bright on average, a large share of it is
  clipped to black or white, or one half of it is much darker than the other (hard side
  light): the painted mouth and teeth follow the photo's mean colours and look pasted on.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from msadtalker.avatar import topology as tp

log = logging.getLogger(__name__)

TURNED_LIMIT = 0.45  # |left - right| / (left + right) of the half-face widths (~30 degrees)
LIP_REDNESS = 2.0  # lips' mean a* must exceed the cheeks' by this much (colour photos)
MIN_CHROMA = 4.0  # below this skin chroma (a*, b* magnitude) a photo counts as grayscale
DARK_FACE, BRIGHT_FACE = 45.0, 225.0  # mean luma of the face (0..255)
CLIPPED_SHARE = 0.25  # share of face pixels at <= 4 or >= 251
SIDE_RATIO = 2.5  # brighter half-face over darker half-face mean luma

# Cheek patches beside the nose, well away from the lips (landmark ids).
_CHEEKS = (205, 425, 50, 280)


def photo_limits(image: np.ndarray, landmarks: np.ndarray) -> list[str]:
    """What is wrong with this photo for the mesh avatar, one short phrase each (empty when
    nothing is)."""
    problems = []
    turn = _turn(landmarks)
    if abs(turn) > TURNED_LIMIT:
        problems.append(
            f"the face is turned to one side (half-face asymmetry {abs(turn):.2f}); a frontal "
            "photo animates best"
        )
    light = _light_problem(image, landmarks)
    if light:
        problems.append(light)
    elif _mouth_covered(image, landmarks):  # colours are unreliable under extreme light
        problems.append(
            "the mouth looks covered (no lip colour between the lip outlines); the painted "
            "mouth will open over what covers it"
        )
    return problems


def warn_limits(image: np.ndarray, landmarks: np.ndarray, name: str) -> list[str]:
    """Log each problem of ``photo_limits`` once as a warning naming the photo."""
    problems = photo_limits(image, landmarks)
    for problem in problems:
        log.warning("%s: %s (see docs/avatar.md, Limits)", name, problem)
    return problems


def _turn(landmarks: np.ndarray) -> float:
    nose = landmarks[tp.NOSE_TIP, :2]
    left = float(np.hypot(*(nose - landmarks[tp.CHEEK_EXTREMES[0], :2])))
    right = float(np.hypot(*(nose - landmarks[tp.CHEEK_EXTREMES[1], :2])))
    return (left - right) / max(left + right, 1e-6)


def _polygon_mask(shape: tuple[int, ...], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(points[:, :2]).astype(np.int32)], 1)
    return mask > 0


def _mouth_covered(image: np.ndarray, landmarks: np.ndarray) -> bool:
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    outer = np.concatenate(
        [landmarks[list(tp.LIPS_UPPER_OUTER)], landmarks[list(tp.LIPS_LOWER_OUTER[::-1])]]
    )
    lips = _polygon_mask(image.shape, outer)
    radius = max(2, round(0.04 * float(np.ptp(landmarks[:, 0]))))
    cheeks = np.zeros(image.shape[:2], np.uint8)
    for i in _CHEEKS:
        x, y = np.round(landmarks[i, :2]).astype(int)
        cv2.circle(cheeks, (int(x), int(y)), radius, 1, -1)
    if lips.sum() < 20 or cheeks.sum() < 20:
        return False
    skin = lab[cheeks > 0]
    chroma = float(np.hypot(np.median(skin[:, 1]) - 128.0, np.median(skin[:, 2]) - 128.0))
    if chroma < MIN_CHROMA:
        return False  # grayscale: no colour to tell lips from a hand
    redness = float(np.median(lab[lips][:, 1]) - np.median(skin[:, 1]))
    return redness < LIP_REDNESS


def _light_problem(image: np.ndarray, landmarks: np.ndarray) -> str | None:
    hull = cv2.convexHull(np.round(landmarks[:, :2]).astype(np.int32))
    face = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, hull, 1)
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    pixels = luma[face > 0]
    if len(pixels) < 50:
        return None
    mean = float(pixels.mean())
    clipped = float(((pixels <= 4) | (pixels >= 251)).mean())
    middle = float(landmarks[tp.NOSE_TIP, 0])
    xs = np.nonzero(face)[1]
    halves = [pixels[xs < middle], pixels[xs >= middle]]
    if min(len(h) for h in halves) >= 20:
        means = sorted(float(h.mean()) for h in halves)
        side = means[1] / max(means[0], 1.0)
    else:
        side = 1.0
    if mean < DARK_FACE or mean > BRIGHT_FACE or clipped > CLIPPED_SHARE or side > SIDE_RATIO:
        return (
            f"extreme light on the face (mean {mean:.0f}/255, {100 * clipped:.0f} % clipped, "
            f"sides {side:.1f}:1); the painted mouth follows the photo's average colours"
        )
    return None
