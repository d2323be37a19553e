"""check-parity on the generator's split pair (source encoder once + per-frame render).

The default export holds the split pair, not the whole generator: ``make_engine`` picks the
form a set can serve (split first on exported backends, whole first on torch) and the generator
and e2e checks run through it. Fast tests use stand-in engine sets; the slow one runs the torch
split pair on the golden generator inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.base import EngineUnavailable
from export import parity
from export.parity import SPLIT_GENERATOR, ParityEngine, check_generator, with_split_generator
from msadtalker.errors import ConfigError


class _Engine:
    def __init__(self, network: str, fn: Any) -> None:
        self.network = network
        self.backend = "fake"
        self._fn = fn

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self._fn(*inputs)
        return result

    def close(self) -> None:
        return None


class _Set:
    """Serves what it was opened for, if ``available`` has it (else raises at open)."""

    backend = "fake"
    device = "cpu"

    def __init__(self, networks: Iterable[str], fns: Mapping[str, Any]) -> None:
        self.networks = list(networks)
        missing = [name for name in self.networks if name not in fns]
        if missing:
            raise EngineUnavailable(f"fake: {', '.join(missing)} not exported")
        self._fns = fns
        self.calls: dict[str, int] = {}

    def engine(self, network: str) -> _Engine:
        if network not in self.networks:
            raise EngineUnavailable(f"fake: {network} was not opened")

        def counted(*inputs: Any) -> Any:
            self.calls[network] = self.calls.get(network, 0) + 1
            return self._fns[network](*inputs)

        return _Engine(network, counted)

    def close(self) -> None:
        return None


def _golden_like(golden: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Stand-ins that reproduce the golden generator outputs from the golden inputs."""
    prediction = golden["gen_out_prediction"]

    def encode(image: np.ndarray) -> dict[str, np.ndarray]:
        assert image.shape[0] == 1  # once per avatar, not per frame
        return {
            "source_volume": np.full((1, 32, 16, 4, 4), 1.0, np.float32),
            "source_compressed": np.zeros((1, 4, 16, 4, 4), np.float32),
        }

    def render(volume: np.ndarray, compressed: np.ndarray, kp_s: Any, kp_d: Any) -> Any:
        assert volume.shape[0] == compressed.shape[0] == kp_d.shape[0]
        return {"prediction": prediction * float(volume.mean())}

    def whole(image: np.ndarray, kp_s: Any, kp_d: Any) -> dict[str, np.ndarray]:
        return {
            "prediction": prediction,
            "mask": golden["gen_out_mask"],
            "occlusion_map": golden["gen_out_occlusion_map"],
            "deformation": golden["gen_out_deformation"],
        }

    return {
        SPLIT_GENERATOR[0]: encode,
        SPLIT_GENERATOR[1]: render,
        "generator": whole,
        "kp_extractor": lambda image: {"keypoints": np.zeros((1, 15, 3), np.float32)},
    }


def _patch_open(monkeypatch: pytest.MonkeyPatch, fns: Mapping[str, Any], opened: list[Any]) -> None:
    def fake_open(backend: str, checkpoints: Any, size: int, networks: Any, device: str) -> _Set:
        engine_set = _Set(networks, fns)
        opened.append(engine_set)
        return engine_set

    monkeypatch.setattr(parity, "open_engines", fake_open)


def test_split_replaces_only_the_whole_generator() -> None:
    assert with_split_generator(["kp_extractor", "generator", "mapping"]) == [
        "kp_extractor",
        *SPLIT_GENERATOR,
        "mapping",
    ]
    assert with_split_generator(["generator_render", "generator"]) == [
        "generator_render",
        "generator_source_encoder",
    ]


def test_exported_backends_check_the_split_pair_first(
    monkeypatch: pytest.MonkeyPatch, golden: dict[str, np.ndarray]
) -> None:
    opened: list[_Set] = []
    fns = _golden_like(golden)
    _patch_open(monkeypatch, fns, opened)
    engine = parity.make_engine("onnxruntime", None, 256, ["kp_extractor", "generator"])
    assert engine.split_generator
    assert opened[-1].networks == ["kp_extractor", *SPLIT_GENERATOR]
    results = check_generator(golden, engine)
    assert [r.name for r in results] == ["generator_prediction"]
    assert results[0].ok is True and "generator_render" in results[0].note
    assert opened[-1].calls == {SPLIT_GENERATOR[0]: 1, SPLIT_GENERATOR[1]: 1}

    # torch serves both: the whole generator first, with all four outputs compared
    torch_engine = parity.make_engine("torch", None, 256, ["generator"])
    assert not torch_engine.split_generator
    names = [r.name for r in check_generator(golden, torch_engine)]
    assert names == ["generator_mask", "generator_occlusion", "generator_deformation"] + [
        "generator_prediction"
    ]


def test_split_check_can_fail(
    monkeypatch: pytest.MonkeyPatch, golden: dict[str, np.ndarray]
) -> None:
    fns = dict(_golden_like(golden))
    fns[SPLIT_GENERATOR[0]] = lambda image: {
        "source_volume": np.full((1, 32, 16, 4, 4), 1.1, np.float32),  # 10 % brighter frames
        "source_compressed": np.zeros((1, 4, 16, 4, 4), np.float32),
    }
    _patch_open(monkeypatch, fns, [])
    engine = parity.make_engine("onnxruntime", None, 256, ["generator"], generator="split")
    (result,) = check_generator(golden, engine)
    assert result.ok is False


def test_fallbacks_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    fns: dict[str, Any] = {
        "generator": lambda *a: {}
    }  # an export made with --networks generator only
    _patch_open(monkeypatch, fns, [])
    assert not parity.make_engine("onnxruntime", None, 256, ["generator"]).split_generator
    with pytest.raises(ConfigError, match="--engine onnxruntime: fake: generator_source_encoder"):
        parity.make_engine("onnxruntime", None, 256, ["generator"], generator="split")
    _patch_open(monkeypatch, {}, [])
    # neither form opens: the preferred form's reason is reported
    with pytest.raises(ConfigError, match="generator_source_encoder, generator_render not"):
        parity.make_engine("onnxruntime", None, 256, ["generator"])
    with pytest.raises(ConfigError, match="generator form must be one of"):
        parity.make_engine("torch", None, 256, ["generator"], generator="half")


@pytest.mark.neural
@pytest.mark.slow
def test_torch_split_pair_matches_the_golden_generator(
    synthetic_checkpoints: Path, golden: dict[str, np.ndarray]
) -> None:
    """The real split pair (torch) on the golden generator inputs (~20 s on 2 cores)."""
    engine = parity.make_engine(
        "torch", synthetic_checkpoints, 256, ["generator"], generator="split"
    )
    assert isinstance(engine, ParityEngine) and engine.split_generator
    (result,) = check_generator(golden, engine)
    assert result.ok is True, result
