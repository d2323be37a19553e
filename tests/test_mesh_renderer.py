"""The CPU mesh renderer, checked on its pictures with an independent landmark detector.

Rendered frames are run through the face finder again and the detected landmarks compared
with what the controls asked for: roll from the eye line; yaw and pitch from how far the
inner features (eye corners, nose, mouth) moved, converted to degrees with the rig's own
depth lever (a rotation by theta moves a point at depth dz in front of the pivot by
dz * sin(theta)); mouth opening from the detected lip gap. The MediaPipe landmarker does not
follow closed eyelids, so blinks are checked on the pixels of the eye openings instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from msadtalker.avatar import PreparedAvatar, default_avatar_path, prepare_avatar
from msadtalker.avatar import topology as tp
from msadtalker.avatar.faces import FaceFinder
from msadtalker.mesh.contact_sheet import contact_sheet
from msadtalker.mesh.controls import FaceControls, rotation_matrix
from msadtalker.mesh.renderer import MeshRenderer
from msadtalker.mesh.rig import _signed_area
from msadtalker.mesh.walk import walk_rows
from msadtalker.mesh.warp import approx_map_error, frame_triangles, locate, map_error
from streamer.bench.mouth import MouthProbe, rest_motion
from streamer.stages.render import MeshRenderStage, controls_of
from streamer.types import HeadPose, MotionFrame

# Inner features: eye corners, nose ridge and tip, mouth corners and lip middles.
FEATURES = [33, 133, 263, 362, 1, 4, 5, 195, 197, 6, 168, 61, 291, 13, 14]
EXTREMES = [
    FaceControls(p, y, r, o, w, b)
    for p in (-10, 10)
    for y in (-8, 8)
    for r in (-8, 8)
    for o, w, b in ((1.0, 1.0, 1.0), (0.0, -1.0, 0.0), (1.0, -1.0, 1.0))
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedAvatar:
    cache = tmp_path_factory.mktemp("cache")
    return prepare_avatar(default_avatar_path(), 512, cache_dir=cache)


@pytest.fixture(scope="module")
def avatar(prepared: PreparedAvatar) -> PreparedAvatar:
    """The avatar as the renderer frames it (its crop is the talking-head frame)."""
    return prepared.head_framed()


@pytest.fixture(scope="module")
def renderer(avatar: PreparedAvatar) -> MeshRenderer:
    return MeshRenderer(avatar, 512)


@pytest.fixture(scope="module")
def finder() -> FaceFinder:
    return FaceFinder()


@pytest.fixture(scope="module")
def rest_landmarks(renderer: MeshRenderer, finder: FaceFinder) -> np.ndarray:
    return _detect(finder, renderer.render())


def _detect(finder: FaceFinder, image: np.ndarray) -> np.ndarray:
    faces = finder.find(image)
    assert len(faces) == 1, "the rendered frame must still show exactly one face"
    return faces[0].landmarks.astype(np.float64)


def _roll_deg(lm: np.ndarray) -> float:
    left, right = tp.eye_centres(lm)
    # y points down: a counter-clockwise turn on screen makes this angle smaller.
    return -math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def _lever(renderer: MeshRenderer) -> float:
    rig = renderer.crop_view.rig
    return float(np.mean(rig.pivot[2] - rig.rest[FEATURES, 2]))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _mouth_mask(renderer: MeshRenderer, c: FaceControls, grow: int) -> np.ndarray:
    rig = renderer.crop_view.rig
    q = rig.vertices(rotation_matrix(c.pitch, c.yaw, c.roll), c.mouth_open, c.mouth_wide, c.blink)
    outer = np.concatenate([q[list(tp.LIPS_UPPER_OUTER)], q[list(tp.LIPS_LOWER_OUTER[::-1])]])
    mask = np.zeros((renderer.size, renderer.size), np.uint8)
    cv2.fillPoly(mask, [np.round(outer).astype(np.int32)], 1)
    return cv2.dilate(mask, np.ones((grow, grow), np.uint8)) > 0


# --- rest and determinism ----------------------------------------------------------------


def test_rest_reproduces_the_photo(renderer: MeshRenderer, avatar: PreparedAvatar) -> None:
    np.testing.assert_array_equal(renderer.render(), avatar.image)
    tiny = renderer.render(pitch=0.02, yaw=-0.02, roll=0.02)
    assert _psnr(tiny, avatar.image) > 40.0
    np.testing.assert_array_equal(renderer.render_full(), avatar.original)


def test_the_frame_shows_the_neck_below_the_chin(prepared: PreparedAvatar) -> None:
    # SadTalker's square (the neural path's crop) ends about half a mouth width under the
    # chin; the mesh renderer's frame is the same square moved down: the neck shows.
    renderer = MeshRenderer(prepared, 512)
    assert renderer.avatar.crop_box == prepared.head_box
    np.testing.assert_array_equal(renderer.render(), prepared.head_image)
    x0, y0, side = prepared.crop_box
    hx0, hy0, hside = renderer.avatar.crop_box
    assert (hx0, hside) == (x0, side) and hy0 == pytest.approx(y0 + 0.1 * side, abs=1.0)

    def below_chin(avatar: PreparedAvatar) -> float:
        lm = avatar.landmarks
        corners = lm[list(tp.MOUTH_CORNERS), :2]
        width = float(np.hypot(*(corners[1] - corners[0])))
        return float(avatar.size - 1 - lm[tp.CHIN, 1]) / width

    assert below_chin(prepared) < 0.6 and below_chin(renderer.avatar) > below_chin(prepared) + 0.3


def test_the_talking_head_frame_survives_the_cache(tmp_path: Path) -> None:
    first = prepare_avatar(default_avatar_path(), 256, cache_dir=tmp_path)
    second = prepare_avatar(default_avatar_path(), 256, cache_dir=tmp_path)
    assert second.from_cache and not first.from_cache
    a, b = first.head_framed(), second.head_framed()
    assert a.crop_box == b.crop_box != first.crop_box
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_frames_depend_only_on_their_controls(avatar: PreparedAvatar) -> None:
    c = FaceControls(6.0, -4.0, 3.0, 0.6, 0.3, 0.7)
    a = MeshRenderer(avatar, 512)
    b = MeshRenderer(avatar, 512)
    first = a.render_controls(c)
    a.render_controls(FaceControls(-9.0, 7.0, -7.0, 1.0, -1.0, 1.0))
    np.testing.assert_array_equal(a.render_controls(c), first)
    np.testing.assert_array_equal(b.render_controls(c), first)


def test_output_sizes(avatar: PreparedAvatar) -> None:
    small = MeshRenderer(avatar, 256)
    assert small.render(5, 5, 5, 0.5, 0, 0).shape == (256, 256, 3)
    full = small.render_full(5, 5, 5, 0.5, 0, 0)
    assert full.shape == avatar.original.shape and full.dtype == np.uint8
    assert full.shape[0] % 2 == 0 and full.shape[1] % 2 == 0


# --- head pose, checked on the pictures ---------------------------------------------------


@pytest.mark.parametrize("roll", [8.0, -8.0, 4.0])
def test_roll_sign_and_magnitude(
    renderer: MeshRenderer, finder: FaceFinder, rest_landmarks: np.ndarray, roll: float
) -> None:
    lm = _detect(finder, renderer.render(roll=roll))
    measured = _roll_deg(lm) - _roll_deg(rest_landmarks)
    assert measured == pytest.approx(roll, abs=2.0)  # > 0: counter-clockwise on screen


@pytest.mark.parametrize("yaw", [8.0, -8.0])
def test_yaw_sign_and_magnitude(
    renderer: MeshRenderer, finder: FaceFinder, rest_landmarks: np.ndarray, yaw: float
) -> None:
    lm = _detect(finder, renderer.render(yaw=yaw))
    shift = (lm[FEATURES, :2] - rest_landmarks[FEATURES, :2]).mean(axis=0)
    measured = math.degrees(math.asin(float(shift[0]) / _lever(renderer)))
    assert measured == pytest.approx(yaw, abs=2.5)  # > 0: features move to the right
    assert abs(shift[1]) < 0.25 * abs(shift[0])
    nose_dx = lm[tp.NOSE_TIP, 0] - rest_landmarks[tp.NOSE_TIP, 0]
    assert np.sign(nose_dx) == np.sign(yaw)
    # A 3-D rigid fit of all 468 detected points agrees on the direction.
    assert np.sign(_rigid_fit_yaw(rest_landmarks, lm)) == np.sign(yaw)


@pytest.mark.parametrize("pitch", [10.0, -10.0])
def test_pitch_sign_and_magnitude(
    renderer: MeshRenderer, finder: FaceFinder, rest_landmarks: np.ndarray, pitch: float
) -> None:
    lm = _detect(finder, renderer.render(pitch=pitch))
    shift = (lm[FEATURES, :2] - rest_landmarks[FEATURES, :2]).mean(axis=0)
    measured = math.degrees(math.asin(float(shift[1]) / _lever(renderer)))
    assert measured == pytest.approx(pitch, abs=3.0)  # > 0: nod down, features move down


def _rigid_fit_yaw(rest: np.ndarray, moved: np.ndarray) -> float:
    """Yaw of the best 3-D rotation (Kabsch) taking ``rest`` onto ``moved``: R[0, 2] is
    -sin(yaw) in this renderer's convention."""
    p = rest - rest.mean(axis=0)
    q = moved - moved.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return -math.degrees(math.asin(float(np.clip(r[0, 2], -1, 1))))


def test_a_pure_nod_or_turn_moves_along_one_axis(renderer: MeshRenderer) -> None:
    # What the quality tests rely on when they separate the landmarker's cross-talk: the
    # rendered geometry of a nod has no sideways component, a turn no vertical one.
    rig = renderer.crop_view.rig
    rest = rig.rest[:, :2]
    nod = rig.vertices(rotation_matrix(-10, 0, 0), 0.0, 0.0, 0.0) - rest
    turn = rig.vertices(rotation_matrix(0, 8, 0), 0.0, 0.0, 0.0) - rest
    assert np.abs(nod[:, 0]).max() < 1e-9 and np.abs(nod[:, 1]).max() > 10
    assert np.abs(turn[:, 1]).max() < 1e-9 and np.abs(turn[:, 0]).max() > 10


def test_rotation_matrix_conventions() -> None:
    nose = np.array([0.0, 0.0, -1.0])  # in front of the pivot (z away from the viewer)
    assert (rotation_matrix(0, 10, 0) @ nose)[0] > 0  # yaw > 0: nose to the right
    assert (rotation_matrix(10, 0, 0) @ nose)[1] > 0  # pitch > 0: nose down
    right = np.array([1.0, 0.0, 0.0])
    assert (rotation_matrix(0, 0, 10) @ right)[1] < 0  # roll > 0: right side goes up (CCW)


# --- mouth and eyes -----------------------------------------------------------------------


def test_mouth_opening_is_visible_and_monotonic(renderer: MeshRenderer, finder: FaceFinder) -> None:
    gaps = [
        tp.lip_gap(_detect(finder, renderer.render(mouth_open=o)))
        for o in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    assert all(b > a + 1.0 for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] - gaps[0] > 0.12 * renderer.crop_view.rig.mouth_width


def test_mouth_width_control(renderer: MeshRenderer, finder: FaceFinder) -> None:
    def width(image: np.ndarray) -> float:
        lm = _detect(finder, image)
        return float(np.hypot(*(lm[291, :2] - lm[61, :2])))

    narrow = width(renderer.render(mouth_open=0.3, mouth_wide=-1.0))
    wide = width(renderer.render(mouth_open=0.3, mouth_wide=1.0))
    neutral = width(renderer.render(mouth_open=0.3))
    assert wide > narrow + 0.15 * renderer.crop_view.rig.mouth_width, (narrow, neutral, wide)
    assert narrow < 0.9 * neutral < 0.9 * wide, (narrow, neutral, wide)  # "oo" vs rest, "ee"


def test_a_rounded_opening_is_an_oval_that_reads_as_open(
    renderer: MeshRenderer, finder: FaceFinder
) -> None:
    # Mesh: opened and rounded, the inner corners sit near the middle of the opening's
    # height (an oval), not up by the upper lip as in the photo's smile (a "U").
    rig = renderer.crop_view.rig

    def corner_height(wide: float) -> float:
        _, s = rig.frame.uv(rig.vertices(rotation_matrix(0, 0, 0), 1.0, wide, 0.0))
        up, lo = s[tp.LIPS_UPPER_INNER[5]], s[tp.LIPS_LOWER_INNER[5]]
        return float((s[list(tp.INNER_MOUTH_CORNERS)].mean() - up) / (lo - up))

    rounded, neutral = corner_height(-1.0), corner_height(0.0)
    assert 0.35 < rounded < 0.65 and rounded > neutral + 0.1, (rounded, neutral)
    # Pictures: the landmarker reads a rounded opening as about as open as a neutral one
    # (the mesh's gap is 1.07 times the neutral one). One frame's reading scatters by about
    # 0.08 of the gap from one opening to the next, so the bound is on the mean over seven
    # openings; no opening may read far below. (The U-shaped rounding read 0.86, 0.64 and
    # 0.60 at 0.3, 0.6, 0.9.)
    ratios = []
    for o in np.linspace(0.3, 0.9, 7):
        gap_round = tp.lip_gap(_detect(finder, renderer.render(mouth_open=o, mouth_wide=-1.0)))
        gap_neutral = tp.lip_gap(_detect(finder, renderer.render(mouth_open=o)))
        ratios.append(gap_round / gap_neutral)
    assert np.mean(ratios) > 0.85 and min(ratios) > 0.75, np.round(ratios, 3)


def test_rounding_pushes_the_lips_forward_and_spares_the_nose(renderer: MeshRenderer) -> None:
    rig = renderer.crop_view.rig
    lips = list(tp.LIPS_UPPER_OUTER + tp.LIPS_LOWER_OUTER)
    nose = [tp.NOSE_TIP, tp.NOSE_BOTTOM, 98, 327]  # tip, base, the nostrils' wings
    assert rig.round[lips, 2].mean() < -0.08 * rig.mouth_width  # toward the viewer
    assert np.abs(rig.round[nose, :2]).max() < 0.02 * rig.mouth_width
    # Turned, the protruded lips move further than the face around them.
    turn = rotation_matrix(0, 8, 0)
    pouted = rig.vertices(turn, 0.0, -1.0, 0.0) - rig.vertices(turn, 0.0, 0.0, 0.0)
    still = rig.vertices(rotation_matrix(0, 0, 0), 0.0, -1.0, 0.0) - rig.rest[:, :2]
    assert (pouted - still)[lips, 0].mean() > 0.01 * rig.mouth_width


def test_gaze_moves_the_iris_not_the_lids(renderer: MeshRenderer) -> None:
    q = renderer.crop_view.rig.rest[:, :2]
    eyes = ((tp.RIGHT_EYE_UPPER0, tp.RIGHT_EYE_LOWER0), (tp.LEFT_EYE_UPPER0, tp.LEFT_EYE_LOWER0))
    polys = [np.concatenate([q[list(up)], q[list(lo[-2:0:-1])]]) for up, lo in eyes]
    opening = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(opening, [np.round(polys[0]).astype(np.int32)], 1)
    ys, xs = np.nonzero(cv2.erode(opening, np.ones((3, 3), np.uint8)))

    def dark_x(image: np.ndarray) -> float:
        """Centre of the dark pixels (iris, pupil) of the first eye's opening."""
        luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[ys, xs].astype(float)
        weight = np.maximum(np.percentile(luma, 60) - luma, 0.0)
        return float((xs * weight).sum() / weight.sum())

    rest = dark_x(renderer.render())
    right, left = dark_x(renderer.render(gaze_x=1.0)), dark_x(renderer.render(gaze_x=-1.0))
    eye_w = float(np.hypot(*(q[eyes[0][0][-1]] - q[eyes[0][0][0]])))
    assert right > rest + 0.03 * eye_w and left < rest - 0.03 * eye_w, (left, rest, right)
    # Outside the lid openings nothing moves.
    moved = np.abs(
        renderer.render(gaze_x=1.0, gaze_y=1.0).astype(int) - renderer.render().astype(int)
    ).max(axis=2)
    both = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(both, [np.round(p).astype(np.int32) for p in polys], 1)
    assert moved[cv2.dilate(both, np.ones((5, 5), np.uint8)) == 0].max() == 0


def test_open_mouth_has_lower_teeth_tongue_and_no_dark_corners(
    renderer: MeshRenderer, avatar: PreparedAvatar
) -> None:
    rig = renderer.crop_view.rig
    q = rig.vertices(rotation_matrix(0, 0, 0), 1.0, 0.0, 0.0)
    image = renderer.render(mouth_open=1.0).astype(float)
    luma = image @ np.array([0.299, 0.587, 0.114])
    lower = q[list(tp.LIPS_LOWER_INNER)]
    upper = q[list(tp.LIPS_UPPER_INNER)]
    mid = 5  # the middle of the contours
    width = rig.mouth_width
    # Just above the lower lip's middle: lower teeth (light) over the tongue (red).
    x = int(round(lower[mid, 0]))
    column = luma[int(upper[mid, 1]) : int(lower[mid, 1]), x]
    above_lip = image[int(lower[mid, 1] - 0.09 * width) : int(lower[mid, 1] - 0.03 * width), x]
    assert luma[int(lower[mid, 1] - 0.06 * width), x] > np.percentile(column, 30) + 30
    red = image[int(lower[mid, 1] - 0.14 * width) : int(lower[mid, 1] - 0.08 * width), x]
    assert (red[:, 0] > red[:, 2] + 25).any() and above_lip.size  # tongue: red over blue
    # The corners of the opening are lip-lined, not black: brighter than the cavity.
    inner_left = 0.5 * (upper[1] + lower[1])
    corner_luma = luma[int(round(inner_left[1])), int(round(inner_left[0]))]
    assert corner_luma > np.percentile(column, 20) + 20


def test_open_mouth_shows_a_dark_interior(renderer: MeshRenderer, avatar: PreparedAvatar) -> None:
    rig = renderer.crop_view.rig
    q = rig.vertices(rotation_matrix(0, 0, 0), 1.0, 0.0, 0.0)
    poly = np.concatenate([q[list(tp.LIPS_UPPER_INNER)], q[list(tp.LIPS_LOWER_INNER[-2:0:-1])]])
    filled = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(filled, [np.round(poly).astype(np.int32)], 1)
    mask = cv2.erode(filled, np.ones((5, 5), np.uint8)) > 0
    image = renderer.render(mouth_open=1.0)
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[mask]
    skin = cv2.cvtColor(avatar.image, cv2.COLOR_RGB2GRAY)[_mouth_mask(renderer, FaceControls(), 1)]
    assert mask.sum() > 400
    assert np.percentile(luma, 30) < 0.5 * np.median(skin)  # a cavity, not stretched lips
    assert luma.min() >= 1  # painted, never pure black


def test_grayscale_photo_gets_a_gray_mouth(avatar: PreparedAvatar, renderer: MeshRenderer) -> None:
    assert renderer.crop_view.style.chroma == 1.0
    gray = cv2.cvtColor(cv2.cvtColor(avatar.image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    mono = MeshRenderer(dataclasses.replace(avatar, image=gray), 512)
    assert mono.crop_view.style.chroma == 0.0
    frame = mono.render(mouth_open=1.0).astype(int)
    mouth = _mouth_mask(mono, FaceControls(mouth_open=1.0), grow=9)
    spread = frame.max(axis=2) - frame.min(axis=2)
    assert spread[mouth].max() <= 1  # no red cavity or ivory teeth in a black-and-white photo


def test_blink_closes_the_eyes(renderer: MeshRenderer, avatar: PreparedAvatar) -> None:
    rig = renderer.crop_view.rig
    rest_q = rig.vertices(rotation_matrix(0, 0, 0), 0.0, 0.0, 0.0)
    closed_q = rig.vertices(rotation_matrix(0, 0, 0), 0.0, 0.0, 1.0)
    ear_rest = np.mean(tp.eye_aspect_ratio(rest_q))
    ear_closed = np.mean(tp.eye_aspect_ratio(closed_q))
    assert ear_closed < 0.1 * ear_rest
    # On the pictures: the upper half of each eye opening (iris, pupil, sclera) is covered
    # by the lid: its dark pixels disappear and it takes the lid skin's colour.
    opening = np.zeros((512, 512), np.uint8)
    lid = np.zeros((512, 512), np.uint8)
    for upper, lower, above in (
        (tp.RIGHT_EYE_UPPER0, tp.RIGHT_EYE_LOWER0, tp.RIGHT_EYE_UPPER1),
        (tp.LEFT_EYE_UPPER0, tp.LEFT_EYE_LOWER0, tp.LEFT_EYE_UPPER1),
    ):
        up, lo = rest_q[list(upper)], rest_q[list(lower)]
        order = np.argsort(lo[:, 0])
        mid_y = 0.5 * (up[:, 1] + np.interp(up[:, 0], lo[order, 0], lo[order, 1]))
        mid = np.column_stack([up[:, 0], mid_y])
        poly = np.concatenate([up, mid[::-1]])
        cv2.fillPoly(opening, [np.round(poly).astype(np.int32)], 1)
        band = np.concatenate([rest_q[list(above)], up[::-1]])
        cv2.fillPoly(lid, [np.round(band).astype(np.int32)], 1)
    mask = cv2.erode(opening, np.ones((3, 3), np.uint8)) > 0
    assert mask.sum() > 50

    def luma(image: np.ndarray, where: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[where], dtype=float)

    rest_luma = luma(renderer.render(), mask)
    closed_luma = luma(renderer.render(blink=1.0), mask)
    half_luma = luma(renderer.render(blink=0.5), mask)
    dark = np.percentile(rest_luma, 40)
    rest_dark, half_dark, closed_dark = (
        (v <= dark).mean() for v in (rest_luma, half_luma, closed_luma)
    )
    assert closed_dark < 0.35 * rest_dark
    assert closed_dark < half_dark < rest_dark
    skin = luma(avatar.image, lid > 0)
    assert abs(np.median(closed_luma) - np.median(skin)) < 0.25 * np.median(skin)
    assert closed_luma.std() > 2.0  # the photo's own lid skin, not a flat painted colour


# --- robustness at the extremes -----------------------------------------------------------


@pytest.mark.parametrize("renderer_size", [256, 512])
def test_no_folds_at_the_supported_amplitudes(avatar: PreparedAvatar, renderer_size: int) -> None:
    rig = MeshRenderer(avatar, renderer_size).crop_view.rig
    for c in EXTREMES:
        q = rig.vertices(
            rotation_matrix(c.pitch, c.yaw, c.roll), c.mouth_open, c.mouth_wide, c.blink
        )
        area = _signed_area(q, rig.triangles)
        flipped = (area <= 0) & ~rig.collapsible
        assert not flipped.any(), (c, int(flipped.sum()))


def test_no_holes_no_black_pixels_outside_the_mouth(avatar: PreparedAvatar) -> None:
    # Lift the photo off pure black: any pure-black pixel the renderer then emits outside
    # the mouth would be a hole (unmapped or out-of-image sample), not the photo's content.
    lifted = dataclasses.replace(avatar, image=np.maximum(avatar.image, 1))
    renderer = MeshRenderer(lifted, 512)
    for c in EXTREMES:
        frame = renderer.render_controls(c)
        black = (frame.max(axis=2) == 0) & ~_mouth_mask(renderer, c, grow=5)
        assert not black.any(), (c, int(black.sum()))


def test_border_and_background_stay_still(renderer: MeshRenderer, avatar: PreparedAvatar) -> None:
    worst = FaceControls(10.0, 8.0, 8.0, 1.0, 1.0, 1.0)
    view = renderer.crop_view
    maps = view.maps(worst, view.vertices(worst))
    r = view.warp.region
    assert 0 <= r.x0 < r.x1 <= 512 and 0 <= r.y0 < r.y1 <= 512
    # Outside the region that can move the frame is the photo (no map there).
    shift = np.zeros((512, 512))
    shift[r.y0 : r.y1, r.x0 : r.x1] = np.hypot(*(maps - view.warp.identity).transpose(2, 0, 1))
    # Crop mode: the border is pinned and motion grows no faster than away from it. A vertex
    # moves at most (its distance to the border) / 1.5, so the backward map of a pixel at
    # distance d shifts by at most 2 d (the source point lies up to that shift further in).
    edge = np.ones((512, 512), bool)
    edge[1:-1, 1:-1] = False
    assert shift[edge].max() <= 1.05
    ring = np.zeros((512, 512), bool)
    ring[:8], ring[-8:], ring[:, :8], ring[:, -8:] = True, True, True, True
    yy, xx = np.mgrid[0:512, 0:512]
    dist = np.minimum.reduce([xx + 0.5, 511.5 - xx, yy + 0.5, 511.5 - yy])
    assert (shift[ring] <= 2.0 * dist[ring] + 0.25).all()
    # The bottom corners (shoulders) do not move. (The top corners of SadTalker's tight
    # crop lie inside the head's outline, hair or its immediate surround, and follow it.)
    corners = np.zeros((512, 512), bool)
    corners[-48:, :48] = True
    corners[-48:, -48:] = True
    assert shift[corners].max() < 0.5
    # Full mode: everything away from the head (background, shoulders, body) is untouched.
    full = renderer.render_full_controls(worst).astype(int)
    photo = avatar.original.astype(int)
    full_view = renderer._full
    assert full_view is not None
    fr = full_view.warp.region
    outside = np.ones(photo.shape[:2], bool)
    outside[fr.y0 : fr.y1, fr.x0 : fr.x1] = False
    assert outside.mean() > 0.3
    assert np.abs(full - photo)[outside].max() == 0
    body = slice(int(photo.shape[0] * 0.82), None)  # the suit below the collar ring
    assert np.abs(full - photo)[body].mean() < 0.5


def test_inverse_map_accuracy(renderer: MeshRenderer) -> None:
    view = renderer.crop_view
    rig, warp = view.rig, view.warp
    for c in (FaceControls(10, 8, 8), FaceControls(-10, -8, -8, 1.0, 0.5, 1.0)):
        q = view.vertices(c)
        ft = frame_triangles(rig, q)
        used = view.maps(c, q)  # what the frame is sampled with
        exact = warp.exact(q, ft)
        err = map_error(used, exact)
        assert np.percentile(err, 99) < 0.6, c
        assert np.percentile(err, 99.9) < 1.5, c
        # Around the lips (refined per pixel) the map is exact (``err`` is over the region).
        lips = view.vertices(c)[list(tp.LIPS_UPPER_INNER + tp.LIPS_LOWER_INNER)]
        lips = lips - [warp.region.x0, warp.region.y0]
        x0, y0 = np.floor(lips.min(axis=0)).astype(int)
        x1, y1 = np.ceil(lips.max(axis=0)).astype(int)
        if c.mouth_open:
            assert err[y0:y1, x0:x1].max() < 1e-3
        # The first-order shortcut (interpolate displacements on the rest mesh) is far worse.
        assert np.percentile(approx_map_error(warp, q), 99) > 5 * np.percentile(err, 99)


@pytest.mark.parametrize(
    "controls",
    [FaceControls(10, 8, 8), FaceControls(-10, -8, -8, 1.0, 0.5, 1.0), FaceControls(0, 0, 0, 0.6)],
)
def test_compiled_walk_agrees_with_the_numpy_walk(
    renderer: MeshRenderer, controls: FaceControls
) -> None:
    # Every pixel of the crop, both ways: ``walk_rows`` (what frames use) against ``locate``
    # started from each pixel's rest triangle (the lock-step numpy reference).
    view = renderer.crop_view
    warp = view.warp
    q = view.vertices(controls)
    ft = frame_triangles(view.rig, q)
    x = warp.identity[:, :, 0].ravel().copy()
    y = warp.identity[:, :, 1].ravel().copy()
    sx = np.empty_like(x)
    sy = np.empty_like(y)
    tri = np.empty(x.size, np.int32)
    lost = walk_rows(
        ft.table, warp.steps, x, y, warp.rest_raster, warp.region.width, 12, sx, sy, tri
    )
    reference = locate(ft, warp.steps, x, y, warp.rest_raster, max_steps=64)
    placed = (tri >= 0) & np.isin(np.arange(x.size), reference.lost, invert=True)
    assert lost < 1e-3 * x.size
    assert placed.mean() > 0.999
    err = np.hypot(sx[placed] - reference.sx[placed], sy[placed] - reference.sy[placed])
    # Not 0: float64 vs float32 arithmetic (~3e-5 px at 500 px), and a point within eps of
    # an edge of a sliver triangle (a nearly closed lid) may be taken by either side, whose
    # affine maps differ there by eps times its stretch.
    assert np.percentile(err, 99.9) < 1e-4
    assert err.max() < 1e-2


# --- stage, helpers -----------------------------------------------------------------------


def _motion(
    pitch: float, yaw: float, roll: float, mouth: float, wide: float, blink: float
) -> MotionFrame:
    base = rest_motion(mouth, index=7)
    lips = base.silence.lips
    lips = type(lips)(
        features=lips.features, upper_lip=0.0, lower_lip=0.0, mouth_open=mouth, mouth_wide=wide
    )
    silence = type(base.silence)(lips=lips, silent=False, weight=1.0)
    pose = HeadPose(pitch, yaw, roll)
    return MotionFrame(
        silence=silence, pose=pose, pose_raw=pose, mouth_open=mouth, blink=blink, mouth_wide=wide
    )


def test_render_stage(renderer: MeshRenderer) -> None:
    motion = _motion(4.0, -3.0, 2.0, 0.7, -0.4, 0.2)
    assert controls_of(motion) == FaceControls(4.0, -3.0, 2.0, 0.7, -0.4, 0.2)
    stage = MeshRenderStage(renderer, "crop")
    assert stage.delay_frames == 0 and stage.frame_size == (512, 512)
    (frame,) = stage.push(motion)
    assert frame.index == 7 and frame.motion is motion
    np.testing.assert_array_equal(frame.image, renderer.render(4.0, -3.0, 2.0, 0.7, -0.4, 0.2))
    assert not frame.image.flags.writeable
    assert stage.flush() == []
    stage.reset()
    full = MeshRenderStage(renderer, "full")
    (big,) = full.push(motion)
    assert big.image.shape[1::-1] == full.frame_size
    # The latency bench's mouth probe can read this renderer's mouth.
    probe = MouthProbe.from_render_stage(MeshRenderStage(renderer))
    assert probe.openness(renderer.render(mouth_open=1.0)) > 0.9
    assert probe.openness(renderer.render(mouth_open=0.0)) < 0.1


def test_contact_sheet() -> None:
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (0, 80, 160)]
    sheet = contact_sheet(frames, columns=2, captions=["a", "b", "c"], cell=64, gap=2)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 2 * 64 + 3 * 2
    assert sheet.shape[0] > 2 * 64
    with pytest.raises(ValueError):
        contact_sheet([])


def test_bench_render_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.cli import main

    monkeypatch.setenv("MSADTALKER_CACHE", str(tmp_path / "cache"))

    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "render",
                "--size",
                "256",
                "--frames",
                "10",
                "--seconds",
                "0",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    figures = json.loads(out.read_text())
    for key in ("renderer_fps", "pipeline_fps", "p50_ms", "p95_ms", "size", "threads", "machine"):
        assert key in figures
    assert figures["size"] == 256 and figures["threads"] == 1 and figures["renderer_fps"] > 0
