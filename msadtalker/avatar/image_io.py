"""Reading a portrait from disk robustly: any common format, any orientation, bounded memory.

``load_image(path)`` -> (H, W, 3) RGB uint8:

* formats: whatever Pillow decodes (jpg, png, webp, gif, bmp, tiff, ...); animated files give
  their first frame;
* EXIF orientation is applied (phones store rotated pixels plus a tag);
* grayscale / palette / 16-bit / CMYK become RGB; transparency is composited on WHITE (a
  cut-out portrait reads as a studio backdrop; black would put pure-black pixels around the
  head that look like holes once it moves);
* large pictures are reduced while decoding where the format allows it (JPEG DCT scaling via
  ``Image.draft``) and by ``Image.reduce`` otherwise, so the working image has at most
  ``max_side`` pixels on its long side; decompression bombs (Pillow's limit, ~179 MP) are
  refused with a clear message before any pixel is decoded;
* not-an-image, truncated or corrupt files and images smaller than ``MIN_SIDE`` raise
  ``AvatarInputError`` with one line naming the file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from msadtalker.errors import AvatarInputError

MIN_SIDE = 64
DEFAULT_MAX_SIDE = 4096

log = logging.getLogger(__name__)


def load_image(path: str | Path, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Decode ``path`` into an RGB uint8 array with at most ``max_side`` px on its long side."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AvatarInputError(f"avatar image not found: {path}") from None
    except OSError as exc:
        raise AvatarInputError(f"cannot read avatar image {path}: {exc.strerror}") from None
    return decode_image(data, str(path), max_side)


def decode_image(data: bytes, name: str, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """``load_image`` on bytes already read (``name`` is used in messages)."""
    import io

    if not data:
        raise AvatarInputError(f"{name}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            # We check the size ourselves below; Pillow's warning for > 89 MP is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if image.format == "JPEG" and max(width, height) > max_side:
                # DCT scaling: decode at 1/2, 1/4 or 1/8 size directly (bounded memory).
                scale = max(width, height) / max_side
                image.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))
            image.seek(0)  # first frame of animations
            image.load()
    except Image.DecompressionBombError:
        raise AvatarInputError(
            f"{name}: image is too large to decode safely (more than "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels)"
        ) from None
    except UnidentifiedImageError:
        raise AvatarInputError(f"{name}: not an image (unknown or unsupported format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise AvatarInputError(f"{name}: truncated or corrupt image ({exc})") from None

    # Reduce BEFORE turning upright: the transpose copies the image, and on a 12000 px photo
    # that copy alone is ~430 MB. Reduction is symmetric in x and y, so the order is moot.
    transpose = _orientation(image, name)
    picture = _reduce(image, max_side)
    if transpose is not None:
        picture = picture.transpose(transpose)
    rgb = _to_rgb(picture)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise AvatarInputError(
            f"{name}: image is {w}x{h} pixels, too small (needs at least {MIN_SIDE} px a side)"
        )
    return rgb


def _orientation(image: Image.Image, name: str) -> Image.Transpose | None:
    """The transpose that makes an EXIF-rotated photo upright (None: already upright)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        # A broken EXIF block must not make the picture unusable; it is then taken as is.
        log.warning("%s: unreadable EXIF data (%s); orientation not applied", name, exc)
        return None
    return _TRANSPOSES.get(orientation)


_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduce(image: Image.Image, max_side: int) -> Image.Image:
    long_side = max(image.size)
    if long_side <= max_side:
        return image
    factor = int(np.ceil(long_side / max_side))
    if factor > 1 and image.mode not in ("P", "1"):
        image = image.reduce(factor)  # box filter by an integer factor: cheap and alias-free
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: convert("RGB") would clip instead of rescale.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        span = max(float(values.max() - values.min()), 1e-12)
        gray = ((values - values.min()) / span * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = (
        mode in ("RGBA", "LA", "PA", "RGBa", "La")
        or (mode == "P" and "transparency" in image.info)
        or (mode in ("RGB", "L") and "transparency" in image.info)
    )
    if has_alpha:
        # Integer "over white" (c * a + 255 * (255 - a)) / 255 fits in uint16 and needs a
        # third of the memory of a float32 version on a 4096 px picture.
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[:, :, 3:4].astype(np.uint16)
        mixed = rgba[:, :, :3] * alpha
        mixed += 255 * (255 - alpha)
        mixed += 127
        mixed //= 255
        return mixed.astype(np.uint8)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
