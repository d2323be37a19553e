"""Digests of the official recipe's tensors, computed by running the official script.

The script (``make_synthetic_checkpoint.py`` in the golden reference folder, next to
``../state_dicts.json``) exists only where the reference data does; it is imported from its
path and its ``make_state_dict`` is called network by network, in memory (no 810 MB files).
Used to record ``tests/data/synthetic_checkpoint_hashes.json`` and, where the reference data
is present, to re-check the recording.
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from msadtalker.catalog import SAFETENSORS_NETWORKS
from msadtalker.testing.synthetic_checkpoints import group_of, tensor_digest

SCRIPT = Path("golden") / "make_synthetic_checkpoint.py"
STATE_DICTS = Path("state_dicts.json")

Digests = dict[str, dict[str, str]]  # network -> module key -> digest


def load_script(reference_dir: Path) -> ModuleType:
    """Import the official recipe script from ``reference_dir / golden``."""
    path = reference_dir / SCRIPT
    spec = importlib.util.spec_from_file_location("official_make_synthetic_checkpoint", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_digests(reference_dir: Path, seed: int, networks: Iterable[str]) -> Digests:
    """network -> module key -> ``tensor_digest`` of the official recipe's tensor."""
    script = load_script(reference_dir)
    text = (reference_dir / STATE_DICTS).read_text()
    specs: dict[str, Any] = json.loads(text, object_pairs_hook=OrderedDict)["networks"]
    digests: Digests = {}
    for network in networks:
        state = script.make_state_dict(specs[network]["state_dict"], group_of(network), seed)
        prefix = f"{network}." if network in SAFETENSORS_NETWORKS else ""
        digests[network] = {
            key.removeprefix(prefix): tensor_digest(value) for key, value in state.items()
        }
        del state
    return digests
