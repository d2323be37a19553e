"""Shared fixtures: golden data and synthetic checkpoints, made from the repository alone.

* ``tests/data``: the official code's golden outputs (compact form) and the recorded digests of
  the official synthetic-checkpoint recipe (README.md there); every file is checked against
  ``tests/data/SHA256SUMS`` when loaded, a mismatch is an error naming the file.
* Synthetic checkpoints: written by ``msadtalker.testing`` (official files, recipe values), built
  once per machine into ``$MSADTALKER_TEST_CACHE`` (default ``~/.cache/msadtalker/
  test-checkpoints``), every tensor checked against the recorded digests while building and
  every file against the entry's manifest on first use in a session.
* The official reference data (recipe script, ``state_dicts.json``, official golden npz) exists
  only on some machines: ``$MSADTALKER_SHARED`` (default ``../shared`` beside the checkout).
  Tests that compare with it carry the ``reference`` marker and are deselected at collection
  when it is absent (the report header says so); what they check is recorded in tests/data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from export.golden import load_golden
from msadtalker.testing.checkpoint_cache import CACHE_ENV, Request, cache_root, cached_checkpoints
from msadtalker.testing.checksums import verify_listed

# After each server test: no task, thread, fd or peer connection left behind (leakcheck.py).
pytest_plugins = ["leakcheck"]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED = Path(os.environ.get("MSADTALKER_SHARED") or REPO.parent / "shared")
REFERENCE = SHARED / "reference" / "sadtalker"
REFERENCE_FILES = (
    "state_dicts.json",
    "golden/make_synthetic_checkpoint.py",
    "golden/golden_seed0.npz",
)
GOLDEN_FILE = "golden_seed0_compact.npz"
DIGESTS_FILE = "synthetic_checkpoint_hashes.json"
DATA_FIX = (
    "restore it (git checkout -- tests/data) or remake it with scripts/make_test_golden.py / "
    "scripts/record_checkpoint_hashes.py"
)

Digests = dict[str, dict[str, str]]  # network -> key -> tensor digest
CheckpointFactory = Callable[..., Path]


def reference_available() -> bool:
    return all((REFERENCE / name).is_file() for name in REFERENCE_FILES)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference: compares with the official reference data ($MSADTALKER_SHARED); "
        "deselected when it is absent",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"synthetic checkpoints: cached in {cache_root()} (${CACHE_ENV})"]
    if reference_available():
        lines.append(f"official reference data: {REFERENCE} ('reference' tests run)")
    else:
        lines.append(
            f"official reference data: not at {REFERENCE} ($MSADTALKER_SHARED): 'reference' "
            "tests deselected; the recipe digests and golden data recorded in tests/data are "
            "checked instead"
        )
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if reference_available():
        return
    kept = [item for item in items if item.get_closest_marker("reference") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def data_file(name: str) -> Path:
    """``tests/data/<name>`` after its sha256 check (``CorruptFixtureError`` naming it)."""
    return verify_listed(DATA, name, DATA_FIX)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The official SadTalker reference folder (only 'reference' tests use it)."""
    assert reference_available(), "'reference' tests are deselected without the data"
    return REFERENCE


@pytest.fixture(scope="session")
def golden_npz_path() -> Path:
    """The compact golden file of seed 0 (``export.golden``; check-parity reads it)."""
    return data_file(GOLDEN_FILE)


@pytest.fixture(scope="session")
def golden(golden_npz_path: Path) -> dict[str, np.ndarray]:
    """The official golden arrays of seed 0, by official name."""
    return load_golden(golden_npz_path)


@pytest.fixture(scope="session")
def recorded_digests() -> dict[int, Digests]:
    """seed -> network -> key -> digest of the official recipe's tensors."""
    record = json.loads(data_file(DIGESTS_FILE).read_text())
    return {int(seed): networks for seed, networks in record["seeds"].items()}


@pytest.fixture(scope="session")
def synthetic_checkpoints_for_seed(recorded_digests: dict[int, Digests]) -> CheckpointFactory:
    """Factory ``(seed, networks=None) -> directory`` of cached synthetic checkpoints.

    ``networks`` defaults to those recorded for the seed (seed 0: all, ~810 MB; seed 7:
    audio2exp and mapping, ~52 MB); a first build takes ~20 s per 800 MB on 2 idle cores.
    """
    opened: dict[Request, Path] = {}

    def factory(seed: int, networks: Sequence[str] | None = None) -> Path:
        recorded = recorded_digests.get(seed)
        if recorded is None:
            raise LookupError(
                f"seed {seed} has no recorded digests in tests/data/{DIGESTS_FILE} (seeds "
                f"{sorted(recorded_digests)}); record it with scripts/record_checkpoint_hashes.py"
            )
        request = Request.of(seed, list(recorded) if networks is None else networks)
        unrecorded = [name for name in request.networks if name not in recorded]
        if unrecorded:
            raise LookupError(f"seed {seed}: no recorded digests for {', '.join(unrecorded)}")
        if request not in opened:
            opened[request] = cached_checkpoints(request, recorded)
        return opened[request]

    return factory


@pytest.fixture(scope="session")
def synthetic_checkpoints(synthetic_checkpoints_for_seed: CheckpointFactory) -> Path:
    """SadTalker_V0.0.2_256.safetensors + both mapping files of seed 0 (the golden data's)."""
    return synthetic_checkpoints_for_seed(0)
