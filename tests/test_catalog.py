"""The catalog of network and file names: torch-free, and what every table keyed by a network
name agrees with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from msadtalker import catalog
from msadtalker.catalog import (
    COEFF_NC,
    LOADABLE_NETWORKS,
    MAPPING_FILES,
    MAPPING_FOR_MODE,
    MOTION_NETWORKS,
    NETWORKS,
    RENDER_NETWORKS,
    SAFETENSORS_NETWORKS,
    SIZED_NETWORKS,
    SKIPPED_NETWORKS,
    STREAMING_NETWORKS,
    VIEWS,
    base_network,
    checkpoint_file,
    mapping_for_mode,
    mapping_network,
    safetensors_file,
)


@pytest.mark.parametrize("module", ["msadtalker.catalog", "engines.registry"])
def test_importing_the_names_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_official_file_names() -> None:
    assert safetensors_file(256) == "SadTalker_V0.0.2_256.safetensors"
    assert safetensors_file(512) == "SadTalker_V0.0.2_512.safetensors"
    assert dict(MAPPING_FILES) == {
        "mapping": "mapping_00229-model.pth.tar",
        "mapping_full": "mapping_00109-model.pth.tar",
    }
    assert dict(COEFF_NC) == {"mapping": 70, "mapping_full": 73}


def test_every_network_comes_from_one_file() -> None:
    for network in NETWORKS:
        expected = MAPPING_FILES.get(base_network(network), safetensors_file(512))
        assert checkpoint_file(network, 512) == expected
    assert checkpoint_file("generator_render", 256) == safetensors_file(256)
    with pytest.raises(ValueError, match="unknown network 'posevae'"):
        checkpoint_file("posevae", 256)


def test_network_sets_fit_together() -> None:
    assert set(LOADABLE_NETWORKS) == (set(SAFETENSORS_NETWORKS) - set(SKIPPED_NETWORKS)) | set(
        MAPPING_FILES
    )
    assert not set(VIEWS) & set(LOADABLE_NETWORKS)
    assert set(VIEWS.values()) <= set(LOADABLE_NETWORKS)
    assert len(set(NETWORKS)) == len(NETWORKS)
    assert SIZED_NETWORKS <= set(NETWORKS)
    assert set(STREAMING_NETWORKS) <= set(NETWORKS) and "generator" not in STREAMING_NETWORKS
    for mode in MAPPING_FOR_MODE:
        name, _ = mapping_for_mode(mode)
        assert {*MOTION_NETWORKS, name, *RENDER_NETWORKS} <= set(STREAMING_NETWORKS)


def test_mapping_networks_by_mode_and_coefficient_count() -> None:
    assert mapping_for_mode("crop") == ("mapping", 70)
    assert mapping_for_mode("full") == ("mapping_full", 73)
    assert all(mapping_network(count) == name for name, count in COEFF_NC.items())
    with pytest.raises(ValueError, match="render mode must be 'crop' or 'full'"):
        mapping_for_mode("extcrop")
    with pytest.raises(ValueError, match="coeff_nc must be one of"):
        mapping_network(71)


def test_the_official_layout_holds_exactly_the_catalogued_networks() -> None:
    pytest.importorskip("torch")
    from msadtalker.weights import official_layout

    assert list(official_layout()) == [*SAFETENSORS_NETWORKS, *MAPPING_FILES]


def test_tables_keyed_by_network_name_cover_the_catalog() -> None:
    pytest.importorskip("torch")
    from engines.contracts import CONTRACTS, contract_for
    from export.bench_networks import OFFICIAL_MS_2_THREADS, available_networks
    from msadtalker.models.config import RENDER_CONFIGS

    assert set(CONTRACTS) == set(NETWORKS)
    for name, count in COEFF_NC.items():
        assert contract_for(name, 256).inputs[0].shape[1] == count
    assert set(available_networks(True)) == set(LOADABLE_NETWORKS)
    assert set(OFFICIAL_MS_2_THREADS) <= set(LOADABLE_NETWORKS)
    assert all(
        config.safetensors_file == safetensors_file(s) for s, config in RENDER_CONFIGS.items()
    )
    assert set(RENDER_CONFIGS) == set(catalog.RENDER_SIZES)


def test_tolerances_and_help_texts_name_every_network() -> None:
    pytest.importorskip("torch")
    from export.onnx import DEFAULT_NETWORKS, TOLERANCES
    from streamer.commands.export import ALL_NETWORKS_HELP, DEFAULT_NETWORKS_HELP

    assert set(TOLERANCES) == set(NETWORKS)
    assert DEFAULT_NETWORKS_HELP.split() == list(DEFAULT_NETWORKS) == list(STREAMING_NETWORKS)
    assert ALL_NETWORKS_HELP.split() == list(NETWORKS)
