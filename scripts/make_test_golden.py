"""Make tests/data/golden_seed0_compact.npz from the official golden_seed0.npz.

The compact form (``export.golden``: lossless re-encodings where exact, uint16 for the [0, 1]
image and mask outputs) is what the tests load; ``msadtalker check-parity --golden`` reads both
forms. The conversion checks that every array decodes exactly (quantised ones to within half a
step) and updates tests/data/SHA256SUMS. Run by hand when the golden data changes:

    .venv/bin/python scripts/make_test_golden.py [OFFICIAL_NPZ]

Default source: ``$MSADTALKER_SHARED/reference/sadtalker/golden/golden_seed0.npz`` (or
``../shared/...`` beside the checkout).
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import numpy as np

from export.golden import QUANTISED, QUANTISED_STEPS, compact, load_golden
from msadtalker.testing.checksums import SUMS_NAME, atomic_write, file_sha256, read_sums, write_sums

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TARGET = "golden_seed0_compact.npz"


def default_source() -> Path:
    shared = Path(os.environ.get("MSADTALKER_SHARED", REPO.parent / "shared"))
    return shared / "reference" / "sadtalker" / "golden" / "golden_seed0.npz"


def check_round_trip(official: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> None:
    """The written file decodes to the official arrays (quantised ones within half a step)."""
    if list(decoded) != list(official):
        raise SystemExit("the compact file's names differ from the official file's")
    for name, value in official.items():
        got = decoded[name]
        if got.dtype != value.dtype or got.shape != value.shape:
            raise SystemExit(
                f"{name}: decoded {got.dtype}{got.shape}, official {value.dtype}{value.shape}"
            )
        bound = 0.5 / QUANTISED_STEPS if QUANTISED.fullmatch(name) else 0.0
        error = np.abs(got.astype(np.float64) - value.astype(np.float64))
        if error.size and float(error.max()) > bound:
            raise SystemExit(f"{name}: decoded values differ by {error.max()} > {bound}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=default_source())
    args = parser.parse_args()
    official = load_golden(args.source)
    stored, how = compact(official)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, allow_pickle=False, **stored)
    target = DATA / TARGET
    atomic_write(target, buffer.getvalue())
    check_round_trip(official, load_golden(target))
    sums_path = DATA / SUMS_NAME
    sums = read_sums(sums_path) if sums_path.exists() else {}
    sums[TARGET] = file_sha256(target)
    write_sums(sums_path, sums)
    for name, text in how.items():
        if text != "as is":
            print(f"{name:32s} {official[name].nbytes:>9d} B  {text}")
    size = target.stat().st_size
    print(f"wrote {target}: {size} bytes (official {args.source.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
