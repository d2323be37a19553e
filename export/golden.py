"""Golden data files: the official ``golden_seed*.npz`` and our compact form of it.

The official file (made with the official SadTalker code, see tests/data/README.md) holds every
input and output as float32/float64 arrays. The compact form stores the same arrays in ~half
the bytes and ``load_golden`` returns the official names, dtypes and shapes for either form:

* quantised (``QUANTISED``): outputs in [0, 1] whose checks judge mean / fraction-off figures
  (generator image and dense-motion mask, end-to-end frames) as ``round(x * 65535)`` uint16,
  a step of 1.5e-5 (error <= 7.6e-6, far under their 1e-4 .. 2e-4 tolerances);
* lossless re-encodings, used only where decoding gives the same bits: images that are exactly
  ``uint8 / 255``, the loaded waveform (``int16 / 32768``), its cut prefix and the float32 mel
  (a cast of the float64 mel);
* everything else as it is.

A compact file carries its decoding instructions under ``FORMAT_KEY`` (a JSON string), so
``np.load`` plus ``expand`` is all a reader needs; it holds no pickles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msadtalker.errors import ConfigError

FORMAT_KEY = "compact_format"
FORMAT_NAME = "msadtalker-golden-compact"
FORMAT_VERSION = 1

QUANTISED_STEPS = 65535  # uint16 levels over [0, 1]
# Official arrays stored as uint16: images / mask in [0, 1], judged with tolerances >= 1e-4.
QUANTISED = re.compile(r"gen_out_prediction|gen_out_mask|e2e_frames_\d+_\d+")
EXACT_UINT8 = ("recon_input_224",)  # stored as uint8 when x * 255 is whole (checked)
WAVE_INT16 = "input_wav_int16"


@dataclass(frozen=True)
class Encoding:
    """How one official array is rebuilt: ``stored[source][:length] / scale`` as ``dtype``."""

    source: str
    scale: float = 1.0
    dtype: str = "float32"
    length: int | None = None

    def decode(self, stored: Mapping[str, np.ndarray]) -> np.ndarray:
        values = stored[self.source]
        if self.length is not None:
            values = values[: self.length]
        decoded: np.ndarray = (values.astype(np.float64) / self.scale).astype(self.dtype)
        return decoded

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"source": self.source, "scale": self.scale, "dtype": self.dtype}
        if self.length is not None:
            entry["length"] = self.length
        return entry


def is_compact(arrays: Mapping[str, np.ndarray]) -> bool:
    return FORMAT_KEY in arrays


def expand(stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The official arrays of a compact file (already loaded); ValueError if malformed."""
    spec = json.loads(str(stored[FORMAT_KEY]))
    if spec.get("format") != FORMAT_NAME or spec.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"unknown compact golden format {spec.get('format')} {spec.get('version')}"
        )
    encodings = {name: Encoding(**entry) for name, entry in spec["encodings"].items()}
    arrays = {name: value for name, value in stored.items() if name != FORMAT_KEY}
    for name, encoding in encodings.items():
        if encoding.source not in stored:
            raise ValueError(f"{name} is encoded from {encoding.source}, which is not stored")
        arrays[name] = encoding.decode(stored)
    return {name: arrays[name] for name in spec["order"]}


def compact(official: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(arrays to store, name -> how it is stored) for an official golden dict.

    Every lossless encoding is checked to decode to the same bits and every quantised one to
    within half a step; anything that does not qualify is stored as it is.
    """
    stored: dict[str, np.ndarray] = {}
    encodings: dict[str, Encoding] = {}
    how: dict[str, str] = {}
    for name, value in official.items():
        if QUANTISED.fullmatch(name) and value.dtype == np.float32 and _in_unit_range(value):
            stored[name] = np.round(value.astype(np.float64) * QUANTISED_STEPS).astype(np.uint16)
            encodings[name] = Encoding(name, QUANTISED_STEPS)
            how[name] = f"uint16, step 1/{QUANTISED_STEPS}"
        elif name in EXACT_UINT8 and _whole(value, 255):
            stored[name] = np.round(value.astype(np.float64) * 255).astype(np.uint8)
            encodings[name] = Encoding(name, 255)
            how[name] = "uint8 / 255 (exact)"
        else:
            stored[name] = value
            how[name] = "as is"
    _derive(official, stored, encodings, how)
    for name, encoding in encodings.items():
        decoded = encoding.decode(stored)
        error = np.abs(decoded.astype(np.float64) - official[name].astype(np.float64))
        bound = 0.5 / encoding.scale if QUANTISED.fullmatch(name) else 0.0
        if decoded.dtype != official[name].dtype or decoded.shape != official[name].shape:
            raise AssertionError(f"{name}: decoding changes dtype or shape")
        if error.size and float(error.max()) > bound:
            raise AssertionError(f"{name}: decoding error {error.max()} > {bound}")
    spec = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "order": list(official),
        "encodings": {name: e.to_json() for name, e in encodings.items()},
    }
    stored[FORMAT_KEY] = np.array(json.dumps(spec))
    return stored, how


def _derive(
    official: Mapping[str, np.ndarray],
    stored: dict[str, np.ndarray],
    encodings: dict[str, Encoding],
    how: dict[str, str],
) -> None:
    """Drop the arrays that are exact re-encodings of another stored array."""
    candidates: list[tuple[str, Encoding, str]] = []
    if WAVE_INT16 in official:
        samples = len(official[WAVE_INT16])
        candidates.append(("input_wav_loaded", Encoding(WAVE_INT16, 32768), "int16 / 32768"))
        if "audio_wav_cut" in official:
            cut = len(official["audio_wav_cut"])
            if cut <= samples:
                candidates.append(
                    (
                        "audio_wav_cut",
                        Encoding(WAVE_INT16, 32768, length=cut),
                        f"first {cut} of int16 / 32768",
                    )
                )
    candidates.append(("audio_mel", Encoding("audio_mel_f64"), "float32 cast of audio_mel_f64"))
    for name, encoding, text in candidates:
        if name not in official or encoding.source not in official:
            continue
        decoded = encoding.decode(official)
        if decoded.dtype == official[name].dtype and np.array_equal(decoded, official[name]):
            del stored[name]
            encodings[name] = encoding
            how[name] = f"derived: {text} (exact)"


def _in_unit_range(value: np.ndarray) -> bool:
    return bool(value.size and np.isfinite(value).all() and value.min() >= 0 and value.max() <= 1)


def _whole(value: np.ndarray, scale: int) -> bool:
    if value.dtype != np.float32 or not _in_unit_range(value):
        return False
    levels = np.round(value.astype(np.float64) * scale)
    return bool(np.array_equal((levels / scale).astype(np.float32), value))


def load_golden(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of a golden file, official or compact (no pickles), by official name."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return expand(arrays) if is_compact(arrays) else arrays
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise ConfigError(f"--golden {path}: not a readable golden .npz ({exc})") from None
