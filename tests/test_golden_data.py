"""tests/data: the compact golden file (``export.golden``) and the sha256 checks of the data files.

Without the reference data these tests check the compact file on its own (names, types, exact
re-encodings) and the format on synthetic arrays; with it ('reference' marker) they compare the
compact file with the official one array by array, and the dropped files with the arrays that
replace them.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from export.golden import QUANTISED, QUANTISED_STEPS, compact, load_golden
from msadtalker.errors import ConfigError
from msadtalker.testing.checksums import SUMS_NAME, CorruptFixtureError, read_sums, verify_listed

DATA = Path(__file__).resolve().parent / "data"
FIX = "restore it"

OUTPUTS = ("yaw", "pitch", "roll", "t", "exp")


def _mapping_outputs(prefix: str) -> list[str]:
    return [
        *(f"{prefix}_source_out_{out}" for out in OUTPUTS),
        f"{prefix}_kp_source",
        *(f"{prefix}_target_out_{out}" for out in OUTPUTS),
        f"{prefix}_kp_driving",
    ]


# The arrays of the official golden file (its README §3), in file order.
OFFICIAL_NAMES = [
    "recon_input_224",
    "recon_coeffs_257",
    "source_coeff_73",
    "audio_wav_cut",
    "audio_mel",
    "audio_mel_f64",
    "expnet_in_mels",
    "expnet_in_ref",
    "expnet_in_ratio",
    "expnet_out_exp",
    "pose_in",
    "coeffs_70",
    "map70_source_in",
    "map70_target_in_batched",
    "source_image",
    "kp_canonical",
    "kp_canonical_batch_rows_equal",
    *_mapping_outputs("map70"),
    "map73_source_in",
    "map73_target_in_batched",
    *_mapping_outputs("map73"),
    "gen_frames",
    "gen_kp_source",
    "gen_kp_driving",
    "gen_out_prediction",
    "gen_out_occlusion_map",
    "gen_out_mask",
    "gen_out_deformation",
    "e2e_coeffs_70",
    "e2e_source_semantics",
    "e2e_target_semantics",
    "e2e_frames_0_3",
    "e2e_frames_13_16",
    "meta_T",
    "input_source_png_uint8",
    "input_wav_int16",
    "input_wav_loaded",
    "meta_seed",
    "meta_blink_python_random_seed",
]
NOT_FLOAT32 = {
    "audio_mel_f64": "float64",
    "kp_canonical_batch_rows_equal": "bool",
    "gen_frames": "int64",
    "meta_T": "int64",
    "input_source_png_uint8": "uint8",
    "input_wav_int16": "int16",
    "meta_seed": "int64",
    "meta_blink_python_random_seed": "int64",
}


def test_compact_golden_has_the_official_arrays(golden: dict[str, np.ndarray]) -> None:
    assert list(golden) == OFFICIAL_NAMES
    for name, value in golden.items():
        assert value.dtype == NOT_FLOAT32.get(name, "float32"), name
    samples = golden["input_wav_int16"]
    assert np.array_equal(golden["input_wav_loaded"], samples.astype(np.float32) / 32768)
    frames = int(golden["meta_T"])
    assert np.array_equal(golden["audio_wav_cut"], golden["input_wav_loaded"][: 640 * frames])
    assert np.array_equal(golden["audio_mel"], golden["audio_mel_f64"].astype(np.float32))
    for name in golden:
        if QUANTISED.fullmatch(name):
            assert 0.0 <= golden[name].min() and golden[name].max() <= 1.0, name
    assert golden["gen_out_mask"].shape == (2, 16, 16, 64, 64)
    # softmax over the 16 regions: the quantised mask still sums to 1 within 16 half-steps
    sums = golden["gen_out_mask"].astype(np.float64).sum(axis=1)
    assert np.abs(sums - 1.0).max() <= 16 * 0.5 / QUANTISED_STEPS + 1e-6


def _fake_official() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    samples = rng.integers(-32768, 32767, 1000).astype(np.int16)
    mel = rng.normal(size=(7, 5))
    return {
        "recon_input_224": (rng.integers(0, 256, (1, 3, 4, 4)) / 255).astype(np.float32),
        "gen_out_mask": rng.random((2, 3, 4)).astype(np.float32),
        "e2e_frames_0_3": rng.random((4, 3, 2, 2)).astype(np.float32),
        "gen_out_prediction": rng.normal(size=(2, 3)).astype(np.float32),  # not in [0, 1]
        "audio_wav_cut": (samples[:640].astype(np.float64) / 32768).astype(np.float32),
        "input_wav_int16": samples,
        "input_wav_loaded": samples.astype(np.float32) / 32768,
        "audio_mel": mel.astype(np.float32),
        "audio_mel_f64": mel,
        "source_image": rng.random((1, 3, 4, 4)).astype(np.float32),  # not whole / 255
    }


def test_compact_format_round_trip(tmp_path: Path) -> None:
    official = _fake_official()
    stored, how = compact(official)
    assert how["gen_out_mask"].startswith("uint16") and stored["gen_out_mask"].dtype == np.uint16
    assert how["recon_input_224"].startswith("uint8") and how["source_image"] == "as is"
    assert how["gen_out_prediction"] == "as is"
    assert {"input_wav_loaded", "audio_wav_cut", "audio_mel"}.isdisjoint(stored)
    path = tmp_path / "compact.npz"
    arrays: dict[str, Any] = stored
    np.savez_compressed(path, **arrays)
    decoded = load_golden(path)
    assert list(decoded) == list(official)
    for name, value in official.items():
        assert decoded[name].dtype == value.dtype and decoded[name].shape == value.shape, name
        error = np.abs(decoded[name].astype(np.float64) - value).max()
        quantised = QUANTISED.fullmatch(name) and how[name].startswith("uint16")
        assert error <= (0.5 / QUANTISED_STEPS if quantised else 0.0), name


def test_unreadable_golden_files_are_config_errors(tmp_path: Path) -> None:
    text = tmp_path / "golden.npz"
    text.write_text("not an archive")
    with pytest.raises(ConfigError, match=f"--golden {text}: not a readable golden"):
        load_golden(text)
    stored, _ = compact(_fake_official())
    del stored["input_wav_int16"]  # the source of three derived arrays
    broken = tmp_path / "broken.npz"
    arrays: dict[str, Any] = stored
    np.savez(broken, **arrays)
    with pytest.raises(ConfigError, match="input_wav_int16"):
        load_golden(broken)


def test_every_data_file_is_listed_and_intact() -> None:
    sums = read_sums(DATA / SUMS_NAME)
    on_disk = {p.name for p in DATA.iterdir() if p.is_file()} - {SUMS_NAME, "README.md"}
    assert set(sums) == on_disk
    for name in sums:
        verify_listed(DATA, name, FIX)


def _corrupted(tmp_path: Path, damage: Any) -> str:
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    damage(copy / "golden_seed0_compact.npz")
    with pytest.raises(CorruptFixtureError) as info:
        verify_listed(copy, "golden_seed0_compact.npz", FIX)
    message = str(info.value)
    assert str(copy / "golden_seed0_compact.npz") in message and message.endswith(FIX)
    return message


def test_damaged_data_files_are_errors_naming_them(tmp_path: Path) -> None:
    def truncate(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:-1])

    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))

    assert "truncated or modified" in _corrupted(tmp_path / "a", truncate)
    assert "truncated or modified" in _corrupted(tmp_path / "b", flip)
    assert "missing" in _corrupted(tmp_path / "c", Path.unlink)
    with pytest.raises(CorruptFixtureError, match="not listed"):
        verify_listed(DATA, "README.md", FIX)


# --- against the official files -----------------------------------------------------------------


@pytest.mark.reference
def test_compact_golden_equals_the_official_file(
    reference_dir: Path, golden: dict[str, np.ndarray]
) -> None:
    official = load_golden(reference_dir / "golden" / "golden_seed0.npz")
    assert list(official) == OFFICIAL_NAMES == list(golden)
    for name, value in official.items():
        ours = golden[name]
        assert ours.dtype == value.dtype and ours.shape == value.shape, name
        if not QUANTISED.fullmatch(name):
            assert np.array_equal(ours, value), name
            continue
        error = np.abs(ours.astype(np.float64) - value.astype(np.float64))
        # Far under the 1e-4 .. 2e-4 bounds these arrays are judged with, and no value moves by
        # more than the 1e-3 "off" threshold of the fraction metrics.
        assert error.max() <= 0.5 / QUANTISED_STEPS, name
        assert error.mean() <= 0.3 / QUANTISED_STEPS, name


@pytest.mark.reference
def test_dropped_files_hold_the_stored_arrays(
    reference_dir: Path, golden: dict[str, np.ndarray]
) -> None:
    with wave.open(str(reference_dir / "golden" / "golden_seed0_speech.wav")) as speech:
        assert (speech.getnchannels(), speech.getsampwidth(), speech.getframerate()) == (
            1,
            2,
            16000,
        )
        samples = np.frombuffer(speech.readframes(speech.getnframes()), "<i2")
    assert np.array_equal(samples, golden["input_wav_int16"])
    picture = cv2.imread(str(reference_dir / "golden" / "golden_seed0_source.png"))
    assert picture is not None
    assert np.array_equal(picture[:, :, ::-1], golden["input_source_png_uint8"])
