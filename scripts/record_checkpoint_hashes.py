"""Record the official recipe's tensor digests: tests/data/synthetic_checkpoint_hashes.json.

Runs the official ``make_synthetic_checkpoint.py`` (reference data, not in the repository) in
memory for the seeds and networks the tests build, digests every tensor with
``msadtalker.testing.synthetic_checkpoints.tensor_digest`` and updates tests/data/SHA256SUMS.
Run by hand when the test seeds change (about a minute on 2 cores):

    .venv/bin/python scripts/record_checkpoint_hashes.py [--reference DIR]

``DIR`` is the SadTalker reference folder (``state_dicts.json``, ``golden/``); default
``$MSADTALKER_SHARED/reference/sadtalker`` or ``../shared/reference/sadtalker``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from msadtalker.testing.checksums import SUMS_NAME, atomic_write, file_sha256, read_sums, write_sums
from msadtalker.testing.official_recipe import SCRIPT, STATE_DICTS, official_digests
from msadtalker.testing.synthetic_checkpoints import ALL_NETWORKS

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TARGET = "synthetic_checkpoint_hashes.json"
OFFICIAL_COMMIT = "cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8"
# Seed 0: the golden data's checkpoint, every network. Seed 7: "other weights" for the tests
# that must see a wrong checkpoint fail and another seed load; they use these two networks.
SEEDS: dict[int, tuple[str, ...]] = {0: ALL_NETWORKS, 7: ("audio2exp", "mapping")}


def default_reference() -> Path:
    shared = Path(os.environ.get("MSADTALKER_SHARED", REPO.parent / "shared"))
    return shared / "reference" / "sadtalker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=default_reference())
    args = parser.parse_args()
    reference: Path = args.reference
    seeds = {str(seed): official_digests(reference, seed, nets) for seed, nets in SEEDS.items()}
    record = {
        "about": "sha256 of every tensor of the official synthetic-checkpoint recipe, per seed "
        "and network (module keys, official order), made by scripts/record_checkpoint_hashes.py "
        "from the recipe script itself.",
        "digest": "sha256 of '<dtype> <shape as JSON list>\\n' followed by the raw little-endian "
        "C-order bytes (msadtalker.testing.synthetic_checkpoints.tensor_digest)",
        "recipe": {
            "script": SCRIPT.name,
            "script_sha256": file_sha256(reference / SCRIPT),
            "state_dicts_sha256": file_sha256(reference / STATE_DICTS),
            "official_code_commit": OFFICIAL_COMMIT,
        },
        "seeds": seeds,
    }
    target = DATA / TARGET
    atomic_write(target, (json.dumps(record, indent=1) + "\n").encode())
    sums_path = DATA / SUMS_NAME
    sums = read_sums(sums_path) if sums_path.exists() else {}
    sums[TARGET] = file_sha256(target)
    write_sums(sums_path, sums)
    count = sum(len(keys) for nets in seeds.values() for keys in nets.values())
    print(f"wrote {target}: {count} tensor digests ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
