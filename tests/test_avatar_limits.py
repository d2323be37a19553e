"""Photos the mesh avatar animates only partly are named in a warning, not refused."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from msadtalker.avatar import PreparedAvatar, default_avatar_path, prepare_avatar
from msadtalker.avatar import topology as tp
from msadtalker.avatar.limits import photo_limits, warn_limits
from msadtalker.mesh.renderer import MeshRenderer


@pytest.fixture(scope="module")
def avatar(tmp_path_factory: pytest.TempPathFactory) -> PreparedAvatar:
    prepared = prepare_avatar(default_avatar_path(), 256, cache_dir=tmp_path_factory.mktemp("c"))
    return prepared.head_framed()  # its crop is what the mesh renderer shows


def _covered(avatar: PreparedAvatar) -> np.ndarray:
    """The photo with a skin-coloured patch (a hand) over the mouth."""
    image, lm = avatar.image.copy(), avatar.landmarks
    x0, x1 = int(lm[tp.MOUTH_CORNERS[0], 0]) - 8, int(lm[tp.MOUTH_CORNERS[1], 0]) + 8
    y0, y1 = int(lm[tp.LIPS_UPPER_OUTER[5], 1]) - 8, int(lm[tp.LIPS_LOWER_OUTER[5], 1]) + 8
    cheek = lm[205, :2].astype(int)
    skin = np.median(image[cheek[1] - 3 : cheek[1] + 3, cheek[0] - 3 : cheek[0] + 3], axis=(0, 1))
    image[y0:y1, x0:x1] = skin
    return image


def test_an_ordinary_portrait_has_no_warning(avatar: PreparedAvatar) -> None:
    assert photo_limits(avatar.image, avatar.landmarks) == []


def test_covered_mouth_dark_face_and_turned_face_are_named(avatar: PreparedAvatar) -> None:
    image, lm = avatar.image, avatar.landmarks
    (covered,) = photo_limits(_covered(avatar), lm)
    assert "mouth looks covered" in covered
    (dark,) = photo_limits((image * 0.15).astype(np.uint8), lm)
    assert "extreme light" in dark
    side = image.copy()
    side[:, : int(lm[tp.NOSE_TIP, 0])] //= 4
    assert any("extreme light" in p for p in photo_limits(side, lm))
    turned = lm.copy()
    turned[tp.NOSE_TIP, 0] = 0.8 * lm[tp.CHEEK_EXTREMES[1], 0] + 0.2 * lm[tp.CHEEK_EXTREMES[0], 0]
    assert any("turned" in p for p in photo_limits(image, turned))


def test_a_covered_mouth_warns_once_and_still_renders_without_holes(
    avatar: PreparedAvatar, caplog: pytest.LogCaptureFixture
) -> None:
    image = np.maximum(_covered(avatar), 1)
    with caplog.at_level(logging.WARNING):
        warn_limits(image, avatar.landmarks, "hand.jpg")
    warned = [r for r in caplog.records if "hand.jpg" in r.getMessage()]
    assert len(warned) == 1
    renderer = MeshRenderer(dataclasses.replace(avatar, image=image), 256)
    for open_, wide in ((1.0, 0.0), (0.3, -1.0)):
        frame = renderer.render(pitch=8, yaw=-6, roll=5, mouth_open=open_, mouth_wide=wide)
        assert frame.max(axis=2).min() >= 1  # no hole anywhere, the painted mouth included
