"""Avatar preparation: decoding odd inputs, face detection and choice, errors, crop, cache."""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from msadtalker.avatar import default_avatar_path, load_image, prepare_avatar
from msadtalker.avatar import prepare as prepare_module
from msadtalker.avatar.crop import ffhq_quad
from msadtalker.avatar.topology import eye_centres, mouth_centre
from msadtalker.errors import AvatarInputError


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The bundled avatar, RGB uint8 (336 x 336, one face with shoulders)."""
    return np.asarray(Image.open(default_avatar_path()).convert("RGB"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSADTALKER_CACHE", str(tmp_path / "cache"))


def _save(tmp_path: Path, name: str, image: np.ndarray | Image.Image, **kw: Any) -> Path:
    path = tmp_path / name
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    pil.save(path, **kw)
    return path


# --- the bundled avatar -------------------------------------------------------------------


def test_bundled_avatar_is_found_and_framed(tmp_path: Path) -> None:
    avatar = prepare_avatar(default_avatar_path(), 256)
    assert avatar.faces_found == 1 and avatar.face_index == 0
    assert avatar.image.shape == (256, 256, 3) and avatar.image.dtype == np.uint8
    assert avatar.landmarks.shape == (468, 3) and avatar.landmarks.dtype == np.float32
    lm = avatar.landmarks
    eye_l, eye_r = eye_centres(lm)
    mouth = mouth_centre(lm)
    # FFHQ-style framing: face centred, eyes in the upper half, mouth below them.
    assert abs(float(lm[:, 0].mean()) - 128) < 0.08 * 256
    assert 0.3 * 256 < (eye_l[1] + eye_r[1]) / 2 < 0.55 * 256
    assert mouth[1] > max(eye_l[1], eye_r[1]) + 0.12 * 256
    assert eye_l[0] < eye_r[0]
    # The photo is kept for "full" mode with the crop box inside it, even sides.
    h, w = avatar.original.shape[:2]
    assert h % 2 == 0 and w % 2 == 0
    x0, y0, side = avatar.crop_box
    assert 0 <= x0 and 0 <= y0 and x0 + side <= w + 1e-6 and y0 + side <= h + 1e-6
    # Shoulders/background visible in the photo around the crop (full mode has a body).
    assert h > 1.5 * side * 0.9 or w > 1.5 * side * 0.9
    assert avatar.face_size_px > prepare_module.MIN_FACE_PX


def test_crop_matches_the_sadtalker_quad() -> None:
    avatar = prepare_avatar(default_avatar_path(), 512)
    quad, qsize = ffhq_quad(avatar.original_landmarks)
    x0, y0, side = avatar.crop_box
    # The crop is the quad's bounding box (square, moved inside the photo if needed).
    bbox = float((quad.max(axis=0) - quad.min(axis=0)).max())
    assert qsize <= bbox <= qsize * 1.42
    assert side == pytest.approx(min(bbox, *avatar.original.shape[:2]), abs=1.5)
    assert x0 <= quad[:, 0].min() + 1.5


def test_landmarks_agree_between_crop_and_photo() -> None:
    avatar = prepare_avatar(default_avatar_path(), 256)
    x0, y0, side = avatar.crop_box
    k = 256 / side
    mapped = (avatar.original_landmarks[:, :2] + 0.5 - [x0, y0]) * k - 0.5
    np.testing.assert_allclose(mapped, avatar.landmarks[:, :2], atol=0.05)


# --- errors ------------------------------------------------------------------------------


def test_no_face_names_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    clouds = cv2.GaussianBlur(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), (0, 0), 6)
    path = _save(tmp_path, "landscape.png", clouds)
    with pytest.raises(AvatarInputError, match=r"no face found in .*landscape\.png"):
        prepare_avatar(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(AvatarInputError, match=r"notes\.jpg: not an image"):
        prepare_avatar(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AvatarInputError, match="not found"):
        prepare_avatar(tmp_path / "nope.png")


def test_truncated_file(tmp_path: Path, portrait: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(portrait).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(AvatarInputError, match=r"cut\.jpg: truncated or corrupt"):
        prepare_avatar(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # A valid PNG header claiming 40000 x 40000 pixels; the data is never read.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path = tmp_path / "bomb.png"
    path.write_bytes(png + chunk(b"IEND", b""))
    with pytest.raises(AvatarInputError, match=r"bomb\.png: image is too large"):
        load_image(path)


def test_tiny_image_and_small_face_errors(tmp_path: Path, portrait: np.ndarray) -> None:
    tiny = _save(tmp_path, "tiny.png", cv2.resize(portrait, (40, 40)))
    with pytest.raises(AvatarInputError, match=r"tiny\.png: image is 40x40 pixels, too small"):
        prepare_avatar(tiny)
    # A face far too small for the crop: the size is stated.
    canvas = np.full((900, 1200, 3), 200, np.uint8)
    canvas[300:384, 500:584] = cv2.resize(portrait, (84, 84), interpolation=cv2.INTER_AREA)
    small = _save(tmp_path, "crowd.png", canvas)
    with pytest.raises(AvatarInputError, match=r"(too small \(\d+ px from eyes to mouth)|no face"):
        prepare_avatar(small)


def test_blurry_face_is_refused(tmp_path: Path, portrait: np.ndarray) -> None:
    path = _save(tmp_path, "blur.png", cv2.GaussianBlur(portrait, (0, 0), 4))
    with pytest.raises(AvatarInputError, match=r"blur\.png: the face is too blurry \(sharpness"):
        prepare_avatar(path)


# --- odd but valid inputs ----------------------------------------------------------------


def test_small_picture_from_112_px_works(tmp_path: Path, portrait: np.ndarray) -> None:
    face = portrait[20:220, 70:270]  # the head and a little around it
    path = _save(tmp_path, "small.png", cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA))
    avatar = prepare_avatar(path, 256)
    assert avatar.image.shape == (256, 256, 3)
    assert avatar.original.shape[:2] == (112, 112)


def test_whole_portrait_shrunk_to_112_px_works(
    tmp_path: Path, portrait: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    # Head and shoulders at 112 px: the face is ~13 px from eyes to mouth. Usable, with a
    # warning that the video will look soft.
    path = _save(
        tmp_path, "thumb.png", cv2.resize(portrait, (112, 112), interpolation=cv2.INTER_AREA)
    )
    with caplog.at_level(logging.WARNING, logger="msadtalker.avatar.prepare"):
        avatar = prepare_avatar(path, 256)
    assert avatar.image.shape == (256, 256, 3)
    assert avatar.face_size_px < prepare_module.SOFT_FACE_PX
    assert any("small face" in r.getMessage() for r in caplog.records)


def test_grayscale_becomes_rgb(tmp_path: Path, portrait: np.ndarray) -> None:
    gray = Image.fromarray(portrait).convert("L")
    avatar = prepare_avatar(_save(tmp_path, "gray.png", gray), 256)
    img = avatar.image.astype(int)
    assert img.shape == (256, 256, 3)
    assert np.abs(img[..., 0] - img[..., 1]).max() <= 1
    assert np.abs(img[..., 1] - img[..., 2]).max() <= 1


def test_sixteen_bit_grayscale_is_rescaled(tmp_path: Path, portrait: np.ndarray) -> None:
    gray16 = (np.asarray(Image.fromarray(portrait).convert("L"), np.uint16) * 257).astype(np.uint16)
    path = _save(tmp_path, "g16.png", Image.fromarray(gray16))
    rgb = load_image(path)
    expected = np.asarray(Image.fromarray(portrait).convert("L"))
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1


def test_alpha_is_composited_on_white(tmp_path: Path, portrait: np.ndarray) -> None:
    h, w = portrait.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, h // 2), (w // 3, h // 2 - 4), 0, 0, 360, 255, -1)
    rgba = np.dstack([portrait, alpha])
    rgb = load_image(_save(tmp_path, "cutout.png", rgba))
    assert (rgb[alpha == 0] == 255).all()
    assert (rgb[alpha == 255] == portrait[alpha == 255]).all()
    assert prepare_avatar(tmp_path / "cutout.png", 256).faces_found == 1


def test_exif_orientation_is_applied(tmp_path: Path, portrait: np.ndarray) -> None:
    # Pixels stored rotated (as a phone does) with the tag that says how to show them.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(portrait, k=1)))  # 90 deg CCW
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)
    rgb = load_image(path)
    assert rgb.shape == portrait.shape
    assert np.abs(rgb.astype(int) - portrait.astype(int)).mean() < 6
    avatar = prepare_avatar(path, 256)
    eye_l, eye_r = eye_centres(avatar.landmarks)
    assert abs(eye_l[1] - eye_r[1]) < 0.1 * abs(eye_r[0] - eye_l[0])  # upright face


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_exif_orientation_survives_the_reduction(
    tmp_path: Path, portrait: np.ndarray, suffix: str
) -> None:
    # Reduced first, turned upright second (the transpose of a full-size photo would cost a
    # whole extra copy): the result is the same upright picture, at the reduced size.
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(portrait, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"phone.{suffix}"
    stored.save(path, exif=exif)
    rgb = load_image(path, max_side=168)
    assert rgb.shape == (168, 168, 3)
    small = cv2.resize(portrait, (168, 168), interpolation=cv2.INTER_AREA)
    assert np.abs(rgb.astype(int) - small.astype(int)).mean() < 8
    assert np.abs(rgb.astype(int) - np.rot90(small, k=1).astype(int)).mean() > 20


def test_webp_and_animated_gif_first_frame(tmp_path: Path, portrait: np.ndarray) -> None:
    webp = _save(tmp_path, "a.webp", portrait, quality=92)
    assert prepare_avatar(webp, 256).faces_found == 1
    noise = np.random.default_rng(1).integers(0, 255, portrait.shape, dtype=np.uint8)
    frames = [Image.fromarray(portrait), Image.fromarray(noise)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(gif), "n_frames", 1) == 2
    assert prepare_avatar(gif, 256).faces_found == 1


def test_huge_jpeg_is_reduced_while_decoding(tmp_path: Path, portrait: np.ndarray) -> None:
    side = 9000
    canvas = Image.new("L", (side, side), 180)
    head = Image.fromarray(portrait).convert("L").resize((4500, 4500))
    canvas.paste(head, (2250, 2000))
    path = tmp_path / "huge.jpg"
    canvas.save(path, quality=80)
    del canvas, head
    decoded: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: Image.Image, mode: str | None, size: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        result = real_draft(self, mode, size)  # type: ignore[arg-type]
        decoded.append(self.size)
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
        rgb = load_image(path, max_side=4096)
    assert max(rgb.shape[:2]) <= 4096
    assert decoded and max(decoded[0]) <= side // 2  # DCT-scaled decode, never full size
    avatar = prepare_avatar(path, 256)
    assert max(avatar.original.shape[:2]) <= 1920


# --- several faces -----------------------------------------------------------------------


def _two_faces(portrait: np.ndarray) -> np.ndarray:
    canvas = np.full((460, 900, 3), 205, np.uint8)
    big = portrait
    small = cv2.resize(portrait, (240, 240), interpolation=cv2.INTER_AREA)
    canvas[60:300, 40:280] = small  # left: smaller face
    canvas[62:398, 480:816] = big  # right: larger face
    return canvas


def test_several_faces_pick_the_largest_and_face_index(
    tmp_path: Path, portrait: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    path = _save(tmp_path, "pair.png", _two_faces(portrait))
    with caplog.at_level(logging.WARNING, logger="msadtalker.avatar.prepare"):
        avatar = prepare_avatar(path, 256)
    assert avatar.faces_found == 2
    assert avatar.face_index == 1  # faces are numbered left to right; the right one is larger
    assert "found 2 faces" in caplog.text and "using the largest (index 1)" in caplog.text
    assert "--face-index" in caplog.text
    left = prepare_avatar(path, 256, face_index=0)
    assert left.face_index == 0 and left.face_size_px < avatar.face_size_px
    assert left.crop_box[0] < avatar.crop_box[0]
    with pytest.raises(AvatarInputError, match=r"--face-index 5 is out of range \(found 2 faces"):
        prepare_avatar(path, 256, face_index=5)


# --- cache -------------------------------------------------------------------------------


def test_cache_hit_skips_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = prepare_module.find_faces

    def counting(rgb: np.ndarray):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise AssertionError("detection ran again on a cache hit")
        return real(rgb)

    monkeypatch.setattr(prepare_module, "find_faces", counting)
    cache_dir = tmp_path / "c"
    first = prepare_avatar(default_avatar_path(), 256, cache_dir=cache_dir)
    second = prepare_avatar(default_avatar_path(), 256, cache_dir=cache_dir)
    assert calls["n"] == 1 and second.from_cache and not first.from_cache
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.landmarks, second.landmarks)
    np.testing.assert_array_equal(first.original, second.original)
    assert first.crop_box == second.crop_box and first.source_hash == second.source_hash
    # Entries are plain npz (no pickles) written atomically: no temporary files left.
    files = list((cache_dir / "avatars").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    with np.load(files[0], allow_pickle=False) as data:
        assert {"image", "landmarks", "original", "meta"} <= set(data.files)
    # Other parameters are another entry (detection runs again).
    monkeypatch.setattr(prepare_module, "find_faces", real)
    prepare_avatar(default_avatar_path(), 512, cache_dir=cache_dir)
    assert len(list((cache_dir / "avatars").iterdir())) == 2


def test_corrupt_cache_entry_is_a_miss(tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    prepare_avatar(default_avatar_path(), 256, cache_dir=cache_dir)
    (entry,) = (cache_dir / "avatars").iterdir()
    entry.write_bytes(b"garbage")
    again = prepare_avatar(default_avatar_path(), 256, cache_dir=cache_dir)
    assert not again.from_cache and again.image.shape == (256, 256, 3)


def test_paste_crop_blends_back_into_the_photo() -> None:
    from msadtalker.avatar.crop import CropBox, paste_crop

    avatar = prepare_avatar(default_avatar_path(), 256)
    photo = avatar.original
    box = CropBox(*avatar.crop_box)
    grey = np.full((256, 256, 3), 128, np.uint8)
    out = paste_crop(photo, grey, box, feather_frac=0.1)
    assert out.shape == photo.shape and out.dtype == np.uint8
    x0, y0, side = (int(round(v)) for v in avatar.crop_box)
    centre = out[y0 + side // 2 - 5 : y0 + side // 2 + 5, x0 + side // 2 - 5 : x0 + side // 2 + 5]
    assert np.abs(centre.astype(int) - 128).max() <= 1  # fully the crop in the middle
    outside = np.ones(photo.shape[:2], bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    np.testing.assert_array_equal(out[outside], photo[outside])  # untouched around the box
    edge = out[y0 + side // 2, x0 + 1].astype(int)
    inner = photo[y0 + side // 2, x0 + 1].astype(int)
    assert np.abs(edge - inner).max() < np.abs(128 - inner).max() * 0.2 + 2  # feathered edge
