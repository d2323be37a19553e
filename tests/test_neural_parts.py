"""The neural path's pure parts with a scripted network runner (no weights, fast).

The fake networks are linear so the expected results are known: ExpNet's output is
``level(mel) * V + 0.5 * ref + ratio * B`` and the mapping's ``exp`` head is ``M`` times the
window's mean expression, with M planting the lips at chosen keypoints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from msadtalker.avatar.prepare import PreparedAvatar  # noqa: E402
from msadtalker.neural.coeffs import WindowBuffer, row_with, window_indices  # noqa: E402
from msadtalker.neural.lips import (  # noqa: E402
    LipReader,
    calibrate_lip_keypoints,
    choose_lips,
    silent_window,
)
from msadtalker.neural.motion import NeuralMotion, checkpoint_constants  # noqa: E402
from msadtalker.neural.render import NeuralRenderer, to_uint8  # noqa: E402
from msadtalker.neural.source import five_points, prepare_neural_source  # noqa: E402

pytestmark = pytest.mark.neural

LOWER, UPPER = 4, 11
V = np.eye(64, dtype=np.float32)[0]  # the fake ExpNet opens the mouth along coefficient 0
B = np.linspace(-0.2, 0.3, 64, dtype=np.float32)  # its blink column


class FakeNetworks:
    """Linear stand-ins for the networks, counting calls per network."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.calls: Counter[str] = Counter()
        self.m = np.zeros((45, 64), dtype=np.float32)
        self.m[3 * LOWER + 1, 0] = 0.3  # the lower lip moves down (+y) as the mouth opens
        self.m[3 * UPPER + 1, 0] = -0.2  # the upper lip moves up, a little less
        self.m[3 * UPPER + 2, 0] = 0.05
        self.m[3 * 7, 0] = 0.01  # a keypoint that barely moves

    def __call__(
        self, network: str, *inputs: Any, keep_on_device: bool = False
    ) -> Mapping[str, Any]:
        self.calls[network] += 1
        if network == "audio2exp":
            mel, ref, ratio = inputs
            level = mel[:, 0, :, 6:10].mean(axis=(1, 2)) + 4.0
            return {"exp": level[:, None] * V + 0.5 * ref + ratio * B}
        if network in ("mapping", "mapping_full"):
            (window,) = inputs
            exp = window[:, :64, :].mean(axis=2)
            batch = len(window)
            angle = window[:, 64, :].mean(axis=1)
            bins = np.zeros((batch, 66), dtype=np.float32)
            bins[:, 33] = 10.0 * (1 + angle)
            return {
                "yaw": bins,
                "pitch": bins,
                "roll": bins,
                "t": np.zeros((batch, 3), np.float32),
                "exp": exp @ self.m.T,
            }
        if network == "face_3drecon":
            return {"coeffs": np.arange(257, dtype=np.float32)[None] / 257.0}
        if network == "kp_extractor":
            return {"keypoints": np.linspace(-0.5, 0.5, 45, dtype=np.float32).reshape(1, 15, 3)}
        if network == "generator_source_encoder":
            s4 = self.size // 4
            return {
                "source_volume": np.zeros((1, 32, 16, s4, s4), np.float32),
                "source_compressed": np.zeros((1, 4, 16, s4, s4), np.float32),
            }
        if network == "generator_render":
            return {"prediction": np.ones((1, 3, self.size, self.size), np.float32)}
        raise KeyError(network)


def _windows() -> np.ndarray:
    loud = np.full((2, 80, 16), 2.0, dtype=np.float32)
    quiet = np.full((6, 80, 16), -4.0, dtype=np.float32)
    return np.concatenate([quiet[:3], loud, quiet[3:]])


def test_choose_lips_takes_the_two_largest_and_orders_them_by_y() -> None:
    response = np.zeros((15, 3))
    response[2] = (0.0, -0.4, 0.0)  # moves most, upward
    response[9] = (0.1, 0.3, 0.0)  # second, downward
    response[5] = (0.2, 0.0, 0.0)
    assert choose_lips(response) == (2, 9)
    response[2] = (0.0, 0.5, 0.0)  # now both move down: the one further down is the lower
    assert choose_lips(response) == (9, 2)


def test_calibration_finds_the_planted_lips() -> None:
    nets = FakeNetworks()
    lips = calibrate_lip_keypoints(nets, "mapping", 70, 256, windows=_windows())
    assert (lips.upper, lips.lower) == (UPPER, LOWER)
    # loud level 6 (2 + 4) along V, so the lower lip moves 6 * 0.3
    assert lips.nominal_range == pytest.approx(1.8, rel=1e-5)
    np.testing.assert_allclose(lips.lower_direction, (0.0, 1.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(lips.exp_direction, 6 * V, atol=1e-5)
    # both signals grow as the mouth opens
    rest = np.zeros((15, 3))
    opened = rest + lips.response
    assert all(b > a for a, b in zip(lips.signals(rest), lips.signals(opened), strict=True))


def test_lip_reader_maps_the_opening_range_to_0_1() -> None:
    lips = calibrate_lip_keypoints(FakeNetworks(), "mapping", 70, 256, windows=_windows())
    reader = LipReader(lips, np.zeros((15, 3), np.float32), closed_opening=0.0)
    assert reader.read(np.zeros(45)).mouth_open == 0.0
    assert reader.read(lips.response.ravel()).mouth_open == pytest.approx(1.0, rel=1e-5)
    assert reader.read(0.5 * lips.response.ravel()).mouth_open == pytest.approx(0.5, rel=1e-5)
    assert reader.read(-lips.response.ravel()).mouth_open == 0.0  # clipped


def _avatar(size: int = 256) -> PreparedAvatar:
    rng = np.random.default_rng(3)
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, :2] = rng.uniform(70, 190, size=(468, 2))
    for index, xy in {
        33: (78, 100),
        133: (108, 100),
        362: (148, 100),
        263: (178, 100),
        1: (128, 140),
        61: (98, 180),
        291: (158, 180),
    }.items():
        landmarks[index, :2] = xy
    image = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    original = np.zeros((300, 400, 3), np.uint8)
    return PreparedAvatar(
        image=image,
        landmarks=landmarks,
        crop_box=(50.0, 20.0, 200.0),
        original=original,
        original_landmarks=landmarks,
        source_hash="f" * 64,
        source_name="synthetic",
    )


def test_five_points_follow_the_68_point_rule() -> None:
    points = five_points(_avatar().landmarks, 256)
    np.testing.assert_allclose(points[0], (93, 255 - 100))  # mean of the two eye corners, y up
    np.testing.assert_allclose(points[1], (163, 155))
    np.testing.assert_allclose(points[2:], [(128, 115), (98, 75), (158, 75)])


def test_source_preparation_is_cached_by_avatar_and_checkpoint(tmp_path: Path) -> None:
    nets = FakeNetworks()
    avatar = _avatar()
    first = prepare_neural_source(avatar, nets, "mapping", 70, "fp1", cache_dir=tmp_path)
    assert not first.from_cache and nets.calls["face_3drecon"] == 1
    coeffs = np.arange(257, dtype=np.float32) / 257.0
    np.testing.assert_allclose(first.coeffs[:64], coeffs[80:144])
    np.testing.assert_allclose(first.coeffs[64:70], np.r_[coeffs[224:227], coeffs[254:257]])
    assert first.row.shape == (70,)
    # the rigid keypoints are the source keypoints without the expression offsets
    exp = nets("mapping", np.repeat(first.row[None, :, None], 27, axis=2))["exp"][0]
    np.testing.assert_allclose(first.kp_source - first.kp_rigid, exp.reshape(15, 3), atol=1e-6)

    again = prepare_neural_source(avatar, nets, "mapping", 70, "fp1", cache_dir=tmp_path)
    assert again.from_cache and nets.calls["face_3drecon"] == 1
    for name in ("coeffs", "kp_canonical", "kp_source", "kp_rigid"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    other = prepare_neural_source(avatar, nets, "mapping", 70, "fp2", cache_dir=tmp_path)
    assert not other.from_cache and nets.calls["face_3drecon"] == 2


def test_motion_rows_blink_and_expression_delta(tmp_path: Path) -> None:
    nets = FakeNetworks()
    source = prepare_neural_source(_avatar(), nets, "mapping", 70, "fp", cache_dir=tmp_path)
    constants = checkpoint_constants(nets, "mapping", 70, 256)
    np.testing.assert_allclose(constants.blink_direction, B, atol=1e-6)
    motion = NeuralMotion(nets, source, constants)
    mel = np.full((80, 16), 1.0, np.float32)  # level 5
    delta = motion.expression(mel)
    np.testing.assert_allclose(delta, 5 * V - 0.5 * source.ref_exp, atol=1e-6)
    assert np.all(motion.expression(silent_window()) == -0.5 * source.ref_exp)
    row = motion.drive_row(delta, 0.5, (10.0, -5.0, 2.0))
    np.testing.assert_allclose(row[:64], source.ref_exp + delta + 0.5 * B, atol=1e-6)
    np.testing.assert_allclose(
        row[64:67], source.coeffs[64:67] + np.radians([10.0, -5.0, 2.0]), atol=1e-6
    )
    np.testing.assert_array_equal(row[67:70], source.coeffs[67:70])
    np.testing.assert_array_equal(motion.lip_row(delta)[64:], source.row[64:])  # pose held


def test_checkpoint_constants_are_cached_by_fingerprint(tmp_path: Path) -> None:
    nets = FakeNetworks()
    first = checkpoint_constants(nets, "mapping", 70, 256, "fp", cache_dir=tmp_path)
    calls = sum(nets.calls.values())
    again = checkpoint_constants(nets, "mapping", 70, 256, "fp", cache_dir=tmp_path)
    assert sum(nets.calls.values()) == calls
    assert (again.lips.upper, again.lips.lower) == (first.lips.upper, first.lips.lower)
    np.testing.assert_array_equal(again.blink_direction, first.blink_direction)
    assert again.lips.nominal_range == pytest.approx(first.lips.nominal_range)


def test_windows_clamp_to_the_clip_and_to_what_has_arrived() -> None:
    np.testing.assert_array_equal(window_indices(0, 40)[:14], np.zeros(14))
    np.testing.assert_array_equal(window_indices(20, 40), np.arange(7, 34))
    assert window_indices(20, 22)[-1] == 22 and (window_indices(20, 22)[16:] == 22).all()
    buffer = WindowBuffer()
    for i in range(30):
        buffer.append(np.full(3, i, np.float32))
    assert buffer.window(20, last=25)[0, 0].tolist() == [*range(7, 26), *[25] * 8]
    buffer.release_before(20)
    assert buffer.window(20)[0, 0, 0] == 7
    with pytest.raises(IndexError):
        buffer.window(19)


def test_row_with_converts_the_pose_offset_to_radians() -> None:
    source = np.zeros(73, np.float32)
    source[70:73] = (0.8, 128, 128)
    row = row_with(source, 73, np.ones(64), (180.0, 0.0, -90.0))
    np.testing.assert_allclose(row[64:67], (np.pi, 0.0, -np.pi / 2), rtol=1e-6)
    np.testing.assert_array_equal(row[70:73], source[70:73])


def test_renderer_crop_and_full_paste() -> None:
    nets = FakeNetworks()
    avatar = _avatar()
    source = prepare_neural_source(avatar, nets, "mapping", 70, "fp", use_cache=False)
    renderer = NeuralRenderer(nets, source, avatar)
    assert nets.calls["generator_source_encoder"] == 1
    crop = renderer.render(np.zeros((15, 3), np.float32))
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8 and (crop == 255).all()
    full = renderer.render_full(np.zeros((15, 3), np.float32))
    assert full.shape == (300, 400, 3) and renderer.full_size == (400, 300)
    assert (full[120, 150] == 255).all()  # the box centre is the rendered crop
    assert (full[5, 5] == 0).all() and (full[:, 260:] == 0).all()  # outside stays the photo
    assert nets.calls["generator_source_encoder"] == 1  # encoded once, not per frame


def test_to_uint8_rounds_like_img_as_ubyte() -> None:
    values = np.array([0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.2, -0.1], np.float32)
    image = np.broadcast_to(values.reshape(1, 1, 6), (3, 1, 6))
    assert to_uint8(image)[0, :, 0].tolist() == [0, 0, 1, 255, 255, 0]
