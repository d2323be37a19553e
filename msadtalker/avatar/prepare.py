"""Avatar preparation: photo -> face crop + dense landmarks, cached on disk.

``prepare_avatar(path, size)`` decodes the photo (``image_io``), finds the faces (``faces``),
picks one, checks that it is usable (big and sharp enough), cuts SadTalker's crop (``crop``)
at ``size`` x ``size`` and keeps the photo (long side capped, even dimensions) for "full" mode.
It also cuts the mesh renderer's talking-head frame (``crop.head_box``: the same square moved
down to show the neck), from the decoded photo too, so neither frame loses resolution.
The result is cached by content hash of (image bytes, parameters, ``PREP_VERSION``), so a
second call with the same photo skips decoding-heavy work and detection entirely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from msadtalker.avatar import cache
from msadtalker.avatar.crop import (
    CropBox,
    cut_square,
    full_frame_scale,
    head_box,
    square_crop_box,
    to_box_coords,
)
from msadtalker.avatar.faces import Face, FaceFinder
from msadtalker.avatar.image_io import decode_image
from msadtalker.avatar.limits import warn_limits
from msadtalker.avatar.topology import eye_centres, mouth_centre
from msadtalker.errors import AvatarInputError

log = logging.getLogger(__name__)

# Bump when anything that changes the prepared data changes (models, crop, thresholds).
PREP_VERSION = "avatar-prep-3"
SIZES = (256, 512)
MAX_FULL_SIDE = 1920
# Eye-centre to mouth-centre distance below which a face is refused: about a 28 px wide
# face. The bundled head-and-shoulders portrait shrunk to 112 px has 13 px; below ~11 px the
# landmarks lose the lip and lid contours and the crop would be upscaled more than ~6x at
# 256 px. Faces under SOFT_FACE_PX are accepted with a warning (the video will look soft).
MIN_FACE_PX = 11.0
SOFT_FACE_PX = 20.0
# Variance of the Laplacian of the face (normalised to a 256 px crop, gray levels 0..255)
# below which the photo is refused as too blurry; sharp portraits score in the hundreds, a
# Gaussian blur of sigma ~5 px on a 256 px face crop goes below 20. Small but sharp photos
# stay far above (a 112 px portrait scores ~500): the crop is upscaled with a sharp filter.
MIN_SHARPNESS = 20.0


@dataclass(frozen=True)
class PreparedAvatar:
    """A photo ready to animate.

    ``image``: (S, S, 3) uint8 RGB, the crop. ``landmarks``: (468, 3) float32 in ``image``'s
    pixels (pixel-centre convention), z on x's scale, smaller = closer to the camera.
    ``original``: (H, W, 3) uint8 RGB, the photo for "full" mode (long side <= 1920, even
    sides), ``original_landmarks`` in its pixels, ``crop_box`` = (x0, y0, side) of the crop
    in ``original``'s pixels. ``face_size_px``: eye-to-mouth distance in the decoded photo;
    ``sharpness``: variance of the Laplacian of the normalised face.

    ``image`` / ``landmarks`` / ``crop_box`` are SadTalker's crop (the neural path's input).
    ``head_image`` / ``head_landmarks`` / ``head_box``: the same for the talking-head frame
    the mesh renderer shows (``crop.head_box``); ``head_framed()`` returns the avatar with
    that frame as its crop. None where an avatar was built without one (then the crop is
    the frame).
    """

    image: np.ndarray
    landmarks: np.ndarray
    crop_box: tuple[float, float, float]
    original: np.ndarray
    original_landmarks: np.ndarray
    source_hash: str
    source_name: str = ""
    face_index: int = 0
    faces_found: int = 1
    face_size_px: float = 0.0
    sharpness: float = 0.0
    from_cache: bool = field(default=False, compare=False)
    head_image: np.ndarray | None = None
    head_landmarks: np.ndarray | None = None
    head_box: tuple[float, float, float] | None = None

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def head_framed(self) -> PreparedAvatar:
        """This avatar with the talking-head frame as its crop (``image``, ``landmarks``,
        ``crop_box``); itself where it has none."""
        if self.head_image is None or self.head_landmarks is None or self.head_box is None:
            return self
        return dataclasses.replace(
            self,
            image=self.head_image,
            landmarks=self.head_landmarks,
            crop_box=self.head_box,
            head_image=None,
            head_landmarks=None,
            head_box=None,
        )

    @property
    def box(self) -> CropBox:
        return CropBox(*self.crop_box)


def prepare_avatar(
    path: str | Path,
    size: int = 256,
    face_index: int | None = None,
    *,
    max_full_side: int = MAX_FULL_SIDE,
    use_cache: bool = True,
    cache_dir: Path | None = None,
) -> PreparedAvatar:
    """Prepare the photo at ``path`` (see the module docstring). Raises ``AvatarInputError``."""
    path = Path(path)
    if size not in SIZES:
        raise AvatarInputError(f"{path}: crop size must be one of {SIZES}, got {size}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AvatarInputError(f"avatar image not found: {path}") from None
    except OSError as exc:
        raise AvatarInputError(f"cannot read avatar image {path}: {exc.strerror}") from None
    return prepare_avatar_bytes(
        data,
        str(path),
        size,
        face_index,
        max_full_side=max_full_side,
        use_cache=use_cache,
        cache_dir=cache_dir,
    )


def prepare_avatar_bytes(
    data: bytes,
    name: str,
    size: int = 256,
    face_index: int | None = None,
    *,
    max_full_side: int = MAX_FULL_SIDE,
    use_cache: bool = True,
    cache_dir: Path | None = None,
) -> PreparedAvatar:
    source_hash = hashlib.sha256(data).hexdigest()
    params = {
        "size": size,
        "face_index": face_index,
        "max_full_side": max_full_side,
        "version": PREP_VERSION,
    }
    key = hashlib.sha256((source_hash + json.dumps(params, sort_keys=True)).encode()).hexdigest()[
        :40
    ]
    if use_cache:
        entry = cache.read_entry(key, cache_dir)
        if entry is not None:
            try:
                avatar = _from_arrays(entry, name)
                log.info("avatar %s: prepared data from cache", name)
                warn_limits(avatar.image, avatar.landmarks, name)
                return avatar
            except (KeyError, ValueError) as exc:
                log.warning("avatar cache entry for %s is stale (%s); preparing again", name, exc)

    rgb = decode_image(data, name)
    faces = find_faces(rgb)
    face, index = _choose(faces, face_index, name)
    face_size = _check_size(face, name)
    sharp = sharpness(rgb, face.landmarks)
    if sharp < MIN_SHARPNESS:
        raise AvatarInputError(
            f"{name}: the face is too blurry (sharpness {sharp:.1f} < {MIN_SHARPNESS:.0f}, "
            "variance of the Laplacian); use a sharper photo"
        )

    h, w = rgb.shape[:2]
    scale, out_w, out_h = full_frame_scale(w, h, max_full_side)
    if (out_w, out_h) != (w, h):
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        original = cv2.resize(rgb, (out_w, out_h), interpolation=interp)
    else:
        original = rgb
    sx, sy = out_w / w, out_h / h
    original_landmarks = face.landmarks.astype(np.float64).copy()
    original_landmarks[:, 0] = (face.landmarks[:, 0] + 0.5) * sx - 0.5
    original_landmarks[:, 1] = (face.landmarks[:, 1] + 0.5) * sy - 0.5
    original_landmarks[:, 2] = face.landmarks[:, 2] * math.sqrt(sx * sy)
    original_landmarks = original_landmarks.astype(np.float32)

    # Crop from the decoded photo (more pixels than ``original`` when it was capped).
    box = square_crop_box(face.landmarks, w, h)
    crop = cut_square(rgb, box, size)
    landmarks = to_box_coords(face.landmarks, box, size)
    box_original = CropBox(box.x0 * sx, box.y0 * sy, box.side * math.sqrt(sx * sy))
    head = head_box(face.landmarks, w, h)
    head_original = CropBox(head.x0 * sx, head.y0 * sy, head.side * math.sqrt(sx * sy))

    avatar = PreparedAvatar(
        image=_frozen(crop),
        landmarks=_frozen(landmarks),
        crop_box=box_original.as_tuple(),
        original=_frozen(np.ascontiguousarray(original)),
        original_landmarks=_frozen(original_landmarks),
        source_hash=source_hash,
        source_name=name,
        face_index=index,
        faces_found=len(faces),
        face_size_px=face_size,
        sharpness=sharp,
        head_image=_frozen(cut_square(rgb, head, size)),
        head_landmarks=_frozen(to_box_coords(face.landmarks, head, size)),
        head_box=head_original.as_tuple(),
    )
    warn_limits(avatar.image, avatar.landmarks, name)
    if use_cache:
        cache.write_entry(key, _to_arrays(avatar), cache_dir)
    return avatar


def find_faces(rgb: np.ndarray) -> list[Face]:
    """All verified faces, left to right (tests monkeypatch this to count detections)."""
    return FaceFinder().find(rgb)


def _choose(faces: list[Face], face_index: int | None, name: str) -> tuple[Face, int]:
    if not faces:
        raise AvatarInputError(f"no face found in {name}")
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise AvatarInputError(
                f"{name}: --face-index {face_index} is out of range (found {len(faces)} "
                f"face{'s' if len(faces) != 1 else ''}, valid 0..{len(faces) - 1})"
            )
        return faces[face_index], face_index
    index = max(range(len(faces)), key=lambda i: faces[i].area)
    if len(faces) > 1:
        log.warning(
            "found %d faces in %s, using the largest (index %d); --face-index selects another",
            len(faces),
            name,
            index,
        )
    return faces[index], index


def face_size_px(landmarks: np.ndarray) -> float:
    """Eye-centre to mouth-centre distance, pixels."""
    eye_l, eye_r = eye_centres(landmarks)
    return float(np.hypot(*(mouth_centre(landmarks) - (eye_l + eye_r) / 2.0)))


def _check_size(face: Face, name: str) -> float:
    size = face_size_px(face.landmarks)
    if size < MIN_FACE_PX:
        raise AvatarInputError(
            f"{name}: the face is too small ({size:.0f} px from eyes to mouth, needs at "
            f"least {MIN_FACE_PX:.0f} px); use a closer or larger photo"
        )
    if size < SOFT_FACE_PX:
        log.warning(
            "%s: small face (%.0f px from eyes to mouth); the video will look soft, a larger "
            "photo gives sharper frames",
            name,
            size,
        )
    return size


def sharpness(rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian inside the face, on the face normalised to a 256 px crop."""
    box = square_crop_box(landmarks, rgb.shape[1], rgb.shape[0])
    crop = cut_square(rgb, box, 256)
    pts = to_box_coords(landmarks, box, 256)[:, :2]
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    mask = np.zeros(gray.shape, np.uint8)
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    inner = cv2.erode(mask, np.ones((9, 9), np.uint8))
    values = lap[inner > 0]
    return float(values.var()) if values.size > 16 else 0.0


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


_META_FIELDS = ("source_hash", "face_index", "faces_found", "face_size_px", "sharpness")


def _to_arrays(avatar: PreparedAvatar) -> dict[str, np.ndarray]:
    meta = {name: getattr(avatar, name) for name in _META_FIELDS}
    meta["version"] = PREP_VERSION
    return {
        "image": avatar.image,
        "landmarks": avatar.landmarks,
        "crop_box": np.asarray(avatar.crop_box, dtype=np.float64),
        "original": avatar.original,
        "original_landmarks": avatar.original_landmarks,
        "meta": np.array(json.dumps(meta)),
        **_head_arrays(avatar),
    }


def _head_arrays(avatar: PreparedAvatar) -> dict[str, np.ndarray]:
    if avatar.head_image is None or avatar.head_landmarks is None or avatar.head_box is None:
        return {}
    return {
        "head_image": avatar.head_image,
        "head_landmarks": avatar.head_landmarks,
        "head_box": np.asarray(avatar.head_box, dtype=np.float64),
    }


def _from_arrays(entry: dict[str, np.ndarray], name: str) -> PreparedAvatar:
    meta = json.loads(str(entry["meta"]))
    if meta.get("version") != PREP_VERSION:
        raise ValueError("version mismatch")
    image = entry["image"]
    landmarks = entry["landmarks"]
    head_image, head_landmarks = entry["head_image"], entry["head_landmarks"]
    shapes_ok = all(
        im.ndim == 3 and im.dtype == np.uint8 and lm.shape == (468, 3)
        for im, lm in ((image, landmarks), (head_image, head_landmarks))
    )
    if not shapes_ok:
        raise ValueError("unexpected array shapes")
    return PreparedAvatar(
        image=_frozen(image),
        landmarks=_frozen(landmarks.astype(np.float32)),
        crop_box=tuple(float(v) for v in entry["crop_box"]),  # type: ignore[arg-type]
        original=_frozen(entry["original"]),
        original_landmarks=_frozen(entry["original_landmarks"].astype(np.float32)),
        source_hash=str(meta["source_hash"]),
        source_name=name,
        face_index=int(meta["face_index"]),
        faces_found=int(meta["faces_found"]),
        face_size_px=float(meta["face_size_px"]),
        sharpness=float(meta["sharpness"]),
        from_cache=True,
        head_image=_frozen(head_image),
        head_landmarks=_frozen(head_landmarks.astype(np.float32)),
        head_box=tuple(float(v) for v in entry["head_box"]),  # type: ignore[arg-type]
    )
