"""Our synthetic-checkpoint writer against the recorded digests of the official recipe, its
files, and the per-machine cache (build once, atomic, checked on use).

Which tensors are checked where:

* here, always: every tensor of the small networks (audio2exp, both MappingNets) and, in every
  other network, the smallest tensor of each recipe rule (each gain pattern, BatchNorm part,
  spectral-norm triple, the Gaussian, the ConvTranspose fan-in, the column scale), for every
  recorded seed: about a second, and any change to a rule shows;
* when a cache entry is built (``conftest``: the first run on a machine, and again whenever the
  writer or the layout changes, since both are in the entry's name): every tensor it writes;
* with the reference data ('reference' marker): the official script against the record.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors import safe_open  # noqa: E402

from msadtalker.catalog import MAPPING_FILES, safetensors_file  # noqa: E402
from msadtalker.errors import CheckpointError  # noqa: E402
from msadtalker.testing.checkpoint_cache import (  # noqa: E402
    CACHE_ENV,
    MANIFEST,
    Request,
    cache_root,
    cached_checkpoints,
    open_entry,
)
from msadtalker.testing.checksums import CorruptFixtureError  # noqa: E402
from msadtalker.testing.official_recipe import official_digests  # noqa: E402
from msadtalker.testing.synthetic_checkpoints import (  # noqa: E402
    ALL_NETWORKS,
    COLUMN_SCALES,
    GAINS,
    Kind,
    RecipeMismatch,
    TensorSpec,
    check_digests,
    network_specs,
    network_tensors,
    rule_for,
    write_checkpoints,
)
from msadtalker.weights import load_weights, official_layout  # noqa: E402

pytestmark = pytest.mark.neural

Digests = dict[str, dict[str, str]]
SMALL_NETWORKS = ("audio2exp", "mapping", "mapping_full")
ST_256 = safetensors_file(256)


def _sample(network: str) -> list[str]:
    """The smallest tensor of every rule of ``network`` (with whole spectral-norm triples)."""
    smallest: dict[str, TensorSpec] = {}
    for spec in network_specs(network):
        label = rule_for(spec).label
        if label not in smallest or math.prod(spec.shape) < math.prod(smallest[label].shape):
            smallest[label] = spec
    keys = {spec.key for spec in smallest.values()}
    for spec in smallest.values():
        if rule_for(spec).kind in (Kind.SPECTRAL_U, Kind.SPECTRAL_V):
            keys |= {f"{spec.stem}{leaf}" for leaf in ("weight_orig", "weight_u", "weight_v")}
    return sorted(keys)


def _checked_keys(network: str) -> list[str] | None:
    return None if network in SMALL_NETWORKS else _sample(network)


def test_sample_covers_every_rule() -> None:
    labels = {rule_for(spec).label for net in ALL_NETWORKS for spec in network_specs(net)}
    sampled = set()
    for network in ALL_NETWORKS:
        keys = _checked_keys(network)
        specs = network_specs(network)
        sampled |= {rule_for(s).label for s in specs if keys is None or s.key in keys}
    assert sampled == labels
    assert {rule_for(s).kind for net in ALL_NETWORKS for s in network_specs(net)} == set(Kind)
    # Every gain pattern and column scale of the recipe applies to some tensor (no dead rule).
    for network, rules in GAINS.items():
        for pattern, _ in rules:
            assert any(f"weight gain {pattern}" in label for label in labels), (network, pattern)
    for network, scales in COLUMN_SCALES.items():
        assert any(rule_for(s).columns for s in network_specs(network)), network
        assert len(scales) == 1


def test_writer_matches_the_recorded_recipe(recorded_digests: dict[int, Digests]) -> None:
    notes = []
    for seed, networks in recorded_digests.items():
        for network, expected in networks.items():
            tensors = network_tensors(network, seed, _checked_keys(network))
            assert set(tensors) <= set(expected)
            notes += check_digests(network, tensors, expected)
    for note in notes:  # platform-dependent bits, accepted by their defining property
        warnings.warn(note, stacklevel=1)


def test_differing_tensors_are_caught(recorded_digests: dict[int, Digests]) -> None:
    expected = recorded_digests[0]["generator"]
    triple = [
        k for k in _sample("generator") if k.endswith(("weight_orig", "weight_u", "weight_v"))
    ]
    tensors = network_tensors("generator", 0, triple)
    u_key = next(key for key in triple if key.endswith("weight_u"))
    # One ulp on a singular vector: other bits, same singular vector (a BLAS build difference).
    nudged = dict(tensors)
    nudged[u_key] = np.nextafter(tensors[u_key], np.float32(np.inf), dtype=np.float32)
    assert len(check_digests("generator", nudged, expected)) == 1
    nudged[u_key] = tensors[u_key][::-1].copy()  # not the singular vector any more
    with pytest.raises(RecipeMismatch, match=u_key):
        check_digests("generator", nudged, expected)
    bias_key = "dense_motion_network.mask.bias"
    bias = network_tensors("generator", 0, [bias_key])
    bias[bias_key] = bias[bias_key] + np.float32(1e-7)  # drawn tensors must match bit for bit
    with pytest.raises(RecipeMismatch, match=bias_key):
        check_digests("generator", bias, expected)
    kernel = network_tensors("kp_extractor", 0, ["down.weight"])
    kernel["down.weight"] = np.nextafter(kernel["down.weight"], np.float32(1), dtype=np.float32)
    assert len(check_digests("kp_extractor", kernel, recorded_digests[0]["kp_extractor"])) == 1


def test_written_files_have_the_official_layout(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, seed=3, networks=["mapping_full", "audio2exp"], size=512)
    st_512 = safetensors_file(512)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [st_512, MAPPING_FILES["mapping_full"]]
    )
    with safe_open(str(tmp_path / st_512), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        keys = set(handle.keys())
        assert keys == {f"audio2exp.{key}" for key in official_layout()["audio2exp"]}
        exp = handle.get_tensor("audio2exp.mapping1.weight").numpy()
    assert np.array_equal(
        exp, network_tensors("audio2exp", 3, ["mapping1.weight"])["mapping1.weight"]
    )
    checkpoint = torch.load(tmp_path / MAPPING_FILES["mapping_full"], weights_only=True)
    assert set(checkpoint) == {"mapping", "epoch"} and checkpoint["epoch"] == 109
    assert list(checkpoint["mapping"]) == list(official_layout()["mapping_full"])
    weights = load_weights(tmp_path, 512, ["audio2exp", "mapping_full"])
    assert set(weights.state_dicts) == {"audio2exp", "mapping_full"}
    with pytest.raises(CheckpointError, match="holds no kp_extractor tensors"):
        load_weights(tmp_path, 512, ["kp_extractor"])


# --- cache --------------------------------------------------------------------------------------

SMALL_REQUEST = Request.of(7, ["audio2exp"])  # 11 MB


@pytest.fixture(scope="module")
def small_entry(
    tmp_path_factory: pytest.TempPathFactory, recorded_digests: dict[int, Digests]
) -> Path:
    root = tmp_path_factory.mktemp("cache")
    return cached_checkpoints(SMALL_REQUEST, recorded_digests[7], root=root)


def test_entry_is_built_once_and_reused(
    small_entry: Path, recorded_digests: dict[int, Digests]
) -> None:
    assert small_entry.name.startswith("seed7-audio2exp-256-")
    manifest = json.loads((small_entry / MANIFEST).read_text())
    assert set(manifest["files"]) == {ST_256}
    assert manifest["tensors_checked"].startswith("every tensor")
    before = (small_entry / ST_256).stat().st_mtime_ns
    again = cached_checkpoints(SMALL_REQUEST, recorded_digests[7], root=small_entry.parent)
    assert again == small_entry and (again / ST_256).stat().st_mtime_ns == before
    assert sorted(p.name for p in small_entry.parent.iterdir() if not p.name.startswith(".")) == [
        small_entry.name
    ]


def _damaged(small_entry: Path, tmp_path: Path, damage: Callable[[Path], object]) -> str:
    copy = tmp_path / small_entry.name
    shutil.copytree(small_entry, copy)
    damage(copy)
    with pytest.raises(CorruptFixtureError) as info:
        open_entry(copy)
    message = str(info.value)
    assert f"delete {copy}" in message
    return message


def _truncate(entry: Path) -> None:
    path = entry / ST_256
    path.write_bytes(path.read_bytes()[:-10])


def _flip_byte(entry: Path) -> None:
    path = entry / ST_256
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_damaged_entries_are_errors_naming_the_file(small_entry: Path, tmp_path: Path) -> None:
    assert f"{ST_256}: " in _damaged(small_entry, tmp_path / "a", _truncate)
    assert "truncated" in _damaged(small_entry, tmp_path / "b", _truncate)
    assert f"{ST_256}: sha256 differs" in _damaged(small_entry, tmp_path / "c", _flip_byte)
    extra = _damaged(small_entry, tmp_path / "d", lambda e: (e / "epoch_20.pth").write_bytes(b""))
    assert "unexpected ['epoch_20.pth']" in extra
    missing = _damaged(small_entry, tmp_path / "e", lambda e: (e / ST_256).unlink())
    assert f"missing ['{ST_256}']" in missing
    gone = _damaged(small_entry, tmp_path / "f", lambda e: (e / MANIFEST).unlink())
    assert MANIFEST in gone


def test_a_build_that_differs_from_the_record_leaves_nothing(
    tmp_path: Path, recorded_digests: dict[int, Digests]
) -> None:
    expected = {net: dict(keys) for net, keys in recorded_digests[7].items()}
    expected["audio2exp"]["mapping1.bias"] = "0" * 64
    with pytest.raises(RecipeMismatch, match="mapping1.bias"):
        cached_checkpoints(SMALL_REQUEST, expected, root=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_build_removes_stale_entries_and_interrupted_builds(
    tmp_path: Path, recorded_digests: dict[int, Digests]
) -> None:
    stale = tmp_path / f"{SMALL_REQUEST.prefix}000000000000"  # an older writer's entry
    interrupted = tmp_path / f".{SMALL_REQUEST.name}.abc123"
    other = tmp_path / f"{Request.of(7, ['mapping']).prefix}000000000000"  # another request
    for folder in (stale, interrupted, other):
        folder.mkdir()
    (tmp_path / f".{stale.name}.lock").touch()
    entry = cached_checkpoints(SMALL_REQUEST, recorded_digests[7], root=tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([entry.name, other.name, f".{entry.name}.lock"])


def test_concurrent_builds_share_one_entry(
    tmp_path: Path, recorded_digests: dict[int, Digests]
) -> None:
    request = Request.of(7, ["mapping"])
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(cached_checkpoints, request, recorded_digests[7], tmp_path)
            for _ in range(2)
        ]
        entries = {future.result() for future in futures}
    assert entries == {tmp_path / request.name}
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [request.name]


def test_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "msadtalker" / "test-checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "msadtalker" / "test-checkpoints"
    assert os.environ.get(CACHE_ENV) is None


# --- the official recipe ------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.slow
def test_official_recipe_matches_the_recorded_digests(
    reference_dir: Path, recorded_digests: dict[int, Digests]
) -> None:
    """The official script (run in memory) still makes exactly the recorded tensors."""
    for seed, networks in recorded_digests.items():
        assert official_digests(reference_dir, seed, networks) == networks, seed
