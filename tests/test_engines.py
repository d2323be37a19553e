"""The engine sets' shared base (on a fake backend), the torch engine set and the backend
registry (synthetic seed-0 checkpoints, small nets)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from engines.base import (  # noqa: E402
    BACKENDS,
    BaseEngine,
    BaseEngineSet,
    Engine,
    EngineUnavailable,
)
from engines.contracts import contract_for  # noqa: E402
from engines.registry import OPENERS, open_engines  # noqa: E402
from engines.torch_engine import TorchEngineSet  # noqa: E402
from msadtalker.errors import CheckpointError, ConfigError  # noqa: E402
from msadtalker.models.expnet import ExpNet  # noqa: E402
from msadtalker.weights import build_network, load_weights  # noqa: E402

pytestmark = pytest.mark.neural


@pytest.fixture(scope="module")
def engines(synthetic_checkpoints: Path) -> TorchEngineSet:
    opened = open_engines("torch", synthetic_checkpoints, 256, ["audio2exp", "mapping"], "cpu")
    assert isinstance(opened, TorchEngineSet)
    return opened


def _expnet_inputs() -> tuple[np.ndarray, ...]:
    return tuple(x.numpy() for x in ExpNet.export_contract().example_inputs())


def test_engine_matches_the_module_and_returns_numpy(
    engines: TorchEngineSet, synthetic_checkpoints: Path
) -> None:
    engine = engines.engine("audio2exp")
    assert isinstance(engine, Engine)
    assert (engine.backend, engine.network, engines.device) == ("torch", "audio2exp", "cpu")
    inputs = _expnet_inputs()
    out = engine.run(*inputs)
    assert list(out) == ["exp"] and isinstance(out["exp"], np.ndarray)
    module = build_network("audio2exp", load_weights(synthetic_checkpoints, 256, ["audio2exp"]))
    with torch.no_grad():
        expected = module(*(torch.from_numpy(x) for x in inputs)).numpy()
    np.testing.assert_array_equal(out["exp"], expected)


def test_engine_takes_tensors_and_keeps_outputs_on_device(engines: TorchEngineSet) -> None:
    engine = engines.engine("mapping")
    window = np.random.default_rng(0).normal(size=(1, 70, 27)).astype(np.float32)
    window.setflags(write=False)  # frozen frames must be accepted as they are
    host = engine.run(window)
    kept = engine.run(torch.from_numpy(window.copy()), keep_on_device=True)
    assert list(host) == ["yaw", "pitch", "roll", "t", "exp"]
    assert all(isinstance(value, torch.Tensor) for value in kept.values())
    np.testing.assert_array_equal(kept["exp"].numpy(), host["exp"])
    assert engines.engine("mapping") is engine  # built once


def test_engine_rejects_wrong_inputs(engines: TorchEngineSet) -> None:
    engine = engines.engine("audio2exp")
    with pytest.raises(ValueError, match="expected 3"):
        engine.run(np.zeros((1, 1, 80, 16), np.float32))
    with pytest.raises(TypeError, match="floating point"):
        engine.run(*_expnet_inputs()[:2], np.zeros((10, 1), np.int64))


def test_networks_not_opened_are_unavailable(engines: TorchEngineSet) -> None:
    with pytest.raises(EngineUnavailable, match="generator was not opened"):
        engines.engine("generator")


def test_registry_names_every_backend() -> None:
    assert set(OPENERS) == set(BACKENDS)
    with pytest.raises(ConfigError, match="unknown engine backend 'tpu'"):
        open_engines("tpu", None, 256, [])


def test_bad_checkpoint_directory_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is empty"):
        open_engines("torch", tmp_path, 256, ["audio2exp"], "cpu")


def test_cuda_without_a_gpu_is_unavailable(
    synthetic_checkpoints: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a CUDA machine
    with pytest.raises(EngineUnavailable, match="CUDA is not available"):
        open_engines("torch", synthetic_checkpoints, 256, ["audio2exp"], "cuda")


def test_unknown_network_is_a_programming_error(synthetic_checkpoints: Path) -> None:
    with pytest.raises(ValueError, match="unknown networks"):
        TorchEngineSet(synthetic_checkpoints, 256, ["posevae"], "cpu")


# ---------------------------------------------------------------------------- the shared base


class _FakeEngine(BaseEngine):
    BACKEND = "fake"

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        self._check_count(inputs)
        return {name: np.zeros(1) for name in self._contract.output_names}


class _FakeEngineSet(BaseEngineSet[_FakeEngine]):
    """A backend whose networks open on a signal, so tests control when a load happens."""

    BACKEND = "fake"

    def __init__(self, networks: list[str], broken: tuple[str, ...] = ()) -> None:
        super().__init__(networks, 256)
        self.opened: list[str] = []
        self.released = False
        self.proceed = threading.Event()
        self.proceed.set()
        self._broken = broken

    @property
    def device(self) -> str:
        return "cpu"

    def _open(self, network: str) -> _FakeEngine:
        self.proceed.wait()
        self.opened.append(network)
        if network in self._broken:
            raise OSError(f"{network}.bin: bad magic\nsecond line of a long report")
        return _FakeEngine(network, contract_for(network, self.size))

    def _load_errors(self) -> tuple[type[BaseException], ...]:
        return (OSError,)

    def _source(self, network: str) -> str:
        return f"/exports/{network}.bin"

    def _release(self) -> None:
        self.released = True


def test_base_set_opens_each_network_once_on_first_use() -> None:
    engines = _FakeEngineSet(["audio2exp", "mapping", "audio2exp"])
    assert engines.networks == ("audio2exp", "mapping") and engines.opened == []
    first = engines.engine("audio2exp")
    assert engines.engine("audio2exp") is first and engines.opened == ["audio2exp"]
    assert (first.backend, first.network, engines.backend) == ("fake", "audio2exp", "fake")
    with pytest.raises(ValueError, match=r"got 1 inputs, expected 3 \(mel, ref_exp, blink_ratio\)"):
        first.run(np.zeros(1))


def test_base_set_opens_once_when_threads_ask_at_the_same_time() -> None:
    engines = _FakeEngineSet(["mapping"])
    engines.proceed.clear()
    results: list[Engine] = []
    threads = [
        threading.Thread(target=lambda: results.append(engines.engine("mapping"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    engines.proceed.set()  # every thread is past the name check, at the lock or inside it
    for thread in threads:
        thread.join()
    assert engines.opened == ["mapping"]
    assert len(results) == 4 and all(engine is results[0] for engine in results)


def test_base_set_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="unknown networks \\['posevae'\\]; fake serves"):
        _FakeEngineSet(["posevae"])
    engines = _FakeEngineSet(["audio2exp", "mapping"], broken=("mapping",))
    with pytest.raises(EngineUnavailable, match="fake: network generator was not opened"):
        engines.engine("generator")
    with pytest.raises(EngineUnavailable) as load_error:
        engines.engine("mapping")
    assert str(load_error.value) == "fake: cannot load /exports/mapping.bin: mapping.bin: bad magic"
    engines.engine("audio2exp")
    engines.close()
    assert engines.released
    with pytest.raises(EngineUnavailable, match="fake: the engine set is closed"):
        engines.engine("audio2exp")
