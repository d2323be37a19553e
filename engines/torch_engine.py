"""Torch backend: our ``nn.Module``s with the official weights, on CPU or CUDA.

:class:`TorchEngine` runs one module under ``torch.inference_mode``: positional inputs in its
``ExportContract`` order (numpy arrays or torch tensors, moved to the engine's device and
dtype), outputs by contract name as numpy float32, or as device tensors with
``keep_on_device`` (so per-avatar state such as the generator's source volume stays on the
GPU between calls).

:class:`TorchEngineSet` opens one checkpoint set strictly through ``msadtalker.weights``. At
open it locates and validates the whole set (the safetensors header, every requested mapping
file), so a bad directory fails before any stream starts; each network's tensors are read and
its module built on first use (``engine(name)``, once: ``engines.base.BaseEngineSet``). The
generator's split views ``generator_source_encoder``
(once per avatar) and ``generator_render`` (per frame) share the one generator module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.base import BaseEngine, BaseEngineSet, EngineUnavailable
from engines.contracts import contract_for
from msadtalker.catalog import MAPPING_FILES, base_network
from msadtalker.models.contract import ExportContract
from msadtalker.weights import SadTalkerWeights, build_network, build_view, load_weights

log = logging.getLogger(__name__)

BACKEND = "torch"
_DTYPES = MappingProxyType({"float32": torch.float32, "float16": torch.float16})


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; an unusable request raises EngineUnavailable."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise EngineUnavailable(
            f"torch: unknown device {device!r} (use auto, cpu or cuda)"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable(
            f"torch: device {device} requested but CUDA is not available in this torch build "
            f"({torch.__version__})"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise EngineUnavailable(f"torch: device {device} is not supported (use cpu or cuda)")
    return resolved


class TorchEngine(BaseEngine):
    """One module on one device; see the module docstring."""

    BACKEND = BACKEND

    def __init__(
        self,
        network: str,
        module: nn.Module,
        contract: ExportContract,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(network, contract)
        self._module = module
        self._device = device
        self._dtype = dtype

    @property
    def module(self) -> nn.Module:
        return self._module

    @property
    def device(self) -> torch.device:
        return self._device

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        self._check_count(inputs)
        tensors = [
            self._tensor(x, spec.name)
            for x, spec in zip(inputs, self._contract.inputs, strict=True)
        ]
        with torch.inference_mode():
            out = self._module(*tensors)
        outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        names = self._contract.output_names
        if len(outputs) != len(names):
            raise RuntimeError(
                f"{self._network}: module returned {len(outputs)} outputs, contract has "
                f"{len(names)}"
            )
        if keep_on_device:
            return dict(zip(names, outputs, strict=True))
        return {name: _numpy(t) for name, t in zip(names, outputs, strict=True)}

    def _tensor(self, value: Any, name: str) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            array = np.ascontiguousarray(value)
            # torch cannot wrap a read-only array (frames are frozen) without a copy.
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        if not tensor.is_floating_point():
            raise TypeError(
                f"{self._network}: input {name} must be floating point, got {tensor.dtype}"
            )
        return tensor.to(device=self._device, dtype=self._dtype)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array: np.ndarray = tensor.detach().to("cpu", torch.float32).numpy()
    return array


class TorchEngineSet(BaseEngineSet[TorchEngine]):
    """The torch engines of one checkpoint directory, render size and device."""

    BACKEND = BACKEND

    def __init__(
        self,
        checkpoints: str | Path | None,
        size: int,
        networks: Iterable[str],
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        super().__init__(networks, size)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self._device = resolve_device(device)
        self._dtype = _DTYPES[dtype]
        self._checkpoints = checkpoints
        bases = tuple(dict.fromkeys(base_network(name) for name in self.networks))
        # Validates the directory, the whole safetensors header and the mapping files now; the
        # mapping states (small) are kept, the big networks are read on first use.
        weights = load_weights(checkpoints, size, [name for name in bases if name in MAPPING_FILES])
        self._files = weights.files
        self._mapping_states = dict(weights.state_dicts)
        self._modules: dict[str, nn.Module] = {}  # checkpoint network -> module (views share)

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def directory(self) -> Path:
        return self._files.directory

    def _open(self, network: str) -> TorchEngine:
        base = base_network(network)
        module = self._modules.get(base)
        if module is None:
            module = self._load(base)
            self._modules[base] = module
        if network != base:
            module = build_view(network, module)
        return TorchEngine(
            network, module, contract_for(network, self._size), self._device, self._dtype
        )

    def _load(self, base: str) -> nn.Module:
        if base in self._mapping_states:
            weights = SadTalkerWeights(
                self._files, MappingProxyType({base: self._mapping_states.pop(base)})
            )
        else:
            weights = load_weights(self._checkpoints, self._size, [base])
        module = build_network(base, weights)
        module = module.to(device=self._device, dtype=self._dtype)
        log.info("torch: %s ready on %s", base, self._device)
        return module

    def _release(self) -> None:
        self._modules.clear()
        self._mapping_states.clear()


def open_torch_engines(
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "auto",
) -> TorchEngineSet:
    """Registry entry point (``engines.registry``)."""
    return TorchEngineSet(checkpoints, size, networks, device)
