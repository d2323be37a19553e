"""Shared fixtures: paths to the shared reference data and cached synthetic checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MSADTALKER_SHARED", REPO.parent / "shared"))
SADTALKER_REF = SHARED / "reference" / "sadtalker"
GOLDEN_DIR = SADTALKER_REF / "golden"
GOLDEN_NPZ = GOLDEN_DIR / "golden_seed0.npz"
CACHE = Path(os.environ.get("MSADTALKER_TEST_CACHE", REPO / ".cache" / "tests"))


@pytest.fixture(scope="session")
def golden_npz_path() -> Path:
    if not GOLDEN_NPZ.exists():
        pytest.skip(f"golden data not found at {GOLDEN_NPZ} (clone beside ../shared)")
    return GOLDEN_NPZ


@pytest.fixture(scope="session")
def golden(golden_npz_path: Path):
    import numpy as np

    with np.load(golden_npz_path) as data:
        return {key: data[key] for key in data.files}


def make_synthetic_checkpoints(seed: int, size: int = 256) -> Path:
    """Official-format synthetic checkpoints from the shared script, cached across runs."""
    out = CACHE / f"synthetic_ckpt_seed{seed}_{size}"
    marker = out / ".complete"
    if not marker.exists():
        script = GOLDEN_DIR / "make_synthetic_checkpoint.py"
        if not script.exists():
            pytest.skip(f"checkpoint script not found at {script}")
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(script),
                "--seed",
                str(seed),
                "--out",
                str(out),
                "--size",
                str(size),
            ],
            check=True,
        )
        marker.touch()
    return out


@pytest.fixture(scope="session")
def synthetic_checkpoints() -> Path:
    """Directory with SadTalker_V0.0.2_256.safetensors + both mapping files (seed 0)."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    return make_synthetic_checkpoints(seed=0)


@pytest.fixture(scope="session")
def synthetic_checkpoints_for_seed():
    """Factory ``seed -> directory`` of cached synthetic checkpoints (first call ~20 s, 800 MB)."""
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    return make_synthetic_checkpoints
