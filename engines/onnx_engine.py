"""onnxruntime backend: the networks exported by ``msadtalker export``, on CUDA or CPU.

:class:`OnnxEngineSet` opens an export directory (``exports`` argument, else
``$MSADTALKER_EXPORTS``, else ``<checkpoints>/export_<size>``) and refuses, with one line
(:class:`~engines.base.EngineUnavailable`), anything that does not belong to the checkpoint
set it is opened for. At open it reads ``manifest.json`` and checks the checkpoint
fingerprint, the render size and, for every requested network, that it was exported, its
tensors against its current ``ExportContract``, its export parity and its file's sha256, so a
stale or damaged export fails before any stream starts. A network's session is made on first
use (``engine(name)``), which checks the session's input / output names.

Providers: CUDA then CPU with ``device="auto"`` (CUDA only when the installed onnxruntime has
it, i.e. ``onnxruntime-gpu``), CPU with ``"cpu"``; ``"cuda"`` without a CUDA provider is
unavailable. :class:`OnnxEngine` takes numpy arrays or torch tensors in contract order and
returns numpy arrays by contract name; ``keep_on_device`` is accepted and ignored (outputs are
always host arrays here: the per-avatar generator volume then travels host -> device once per
frame on CUDA, which IO binding could avoid; not done, and CUDA is unverified on these machines).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.base import BaseEngine, BaseEngineSet, EngineUnavailable
from engines.contracts import contract_for
from engines.manifest import (
    NetworkEntry,
    check_digest,
    check_network,
    check_source,
    export_dir,
    read_manifest,
)
from msadtalker.models.contract import ExportContract, TensorSpec
from msadtalker.weights import checkpoint_dir, checkpoint_fingerprint

log = logging.getLogger(__name__)

BACKEND = "onnxruntime"
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise EngineUnavailable(
            f"{BACKEND}: the Python package onnxruntime is not installed "
            "(pip install 'msadtalker[export]', or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def select_providers(device: str, available: Iterable[str]) -> list[str]:
    """Execution providers for ``device`` (auto / cpu / cuda) given the installed ones."""
    available = list(available)
    if device == "cpu":
        return [CPU_PROVIDER]
    if device in ("cuda", "cuda:0"):
        if CUDA_PROVIDER not in available:
            raise EngineUnavailable(
                f"{BACKEND}: device cuda requested but this onnxruntime has no CUDA provider "
                f"(has {', '.join(available)}); install onnxruntime-gpu"
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    raise EngineUnavailable(f"{BACKEND}: unknown device {device!r} (use auto, cpu or cuda)")


def _session_errors(ort: ModuleType) -> tuple[type[BaseException], ...]:
    """onnxruntime's load errors (pybind classes that derive from Exception directly)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidProtobuf", "NoSuchFile", "InvalidArgument", "InvalidGraph")
    found = tuple(getattr(state, name) for name in (*names, "RuntimeException"))
    return (OSError, *found)


class OnnxEngine(BaseEngine):
    """One onnxruntime session for one network; see the module docstring."""

    BACKEND = BACKEND

    def __init__(self, network: str, session: Any, contract: ExportContract) -> None:
        super().__init__(network, contract)
        self._session = session

    @property
    def providers(self) -> list[str]:
        providers: list[str] = self._session.get_providers()
        return providers

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, np.ndarray]:
        self._check_count(inputs)
        specs = self._contract.inputs
        feeds = {spec.name: self._array(x, spec) for x, spec in zip(inputs, specs, strict=True)}
        outputs = self._session.run(self._contract.output_names, feeds)
        return dict(zip(self._contract.output_names, outputs, strict=True))

    def _array(self, value: Any, spec: TensorSpec) -> np.ndarray:
        if hasattr(value, "detach"):  # a torch tensor, possibly on a GPU
            value = value.detach().cpu().numpy()
        array = np.ascontiguousarray(value, dtype=_NUMPY_DTYPES[spec.dtype])
        fixed_ok = array.ndim == len(spec.shape) and all(
            axis in spec.dynamic or size == expected
            for axis, (size, expected) in enumerate(zip(array.shape, spec.shape, strict=True))
        )
        if not fixed_ok:
            wanted = ", ".join(spec.dynamic.get(axis, str(n)) for axis, n in enumerate(spec.shape))
            raise ValueError(
                f"{self._network}: input {spec.name} has shape {array.shape}, expected ({wanted})"
            )
        return array


class OnnxEngineSet(BaseEngineSet[OnnxEngine]):
    """The onnxruntime engines of one export directory; see the module docstring."""

    BACKEND = BACKEND

    def __init__(
        self,
        checkpoints: str | Path | None,
        size: int,
        networks: Iterable[str],
        device: str = "auto",
        exports: str | Path | None = None,
    ) -> None:
        super().__init__(networks, size)
        self._ort = import_onnxruntime()
        self._providers = select_providers(device, self._ort.get_available_providers())
        root = checkpoint_dir(checkpoints)
        fingerprint = checkpoint_fingerprint(root, size)
        self._directory = export_dir(exports, root, size)
        manifest = read_manifest(self._directory, BACKEND)
        check_source(manifest, self._directory, fingerprint, size, BACKEND)
        self._contracts = {name: contract_for(name, size) for name in self.networks}
        # Every requested file is checked in full now (sha256: ~2 s for the 400 MB render
        # view), so a stale or damaged export fails before any stream starts.
        self._entries: dict[str, NetworkEntry] = {}
        for name in self.networks:
            entry = check_network(manifest, self._directory, name, self._contracts[name], BACKEND)
            check_digest(self._directory / entry.file, entry.sha256, BACKEND)
            self._entries[name] = entry

    @property
    def device(self) -> str:
        return "cuda" if self._providers[0] == CUDA_PROVIDER else "cpu"

    @property
    def directory(self) -> Path:
        return self._directory

    def _open(self, network: str) -> OnnxEngine:
        contract = self._contracts[network]
        path = self._directory / self._entries[network].file
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = self._ort.InferenceSession(
            str(path), sess_options=options, providers=self._providers
        )
        names = (
            [item.name for item in session.get_inputs()],
            [item.name for item in session.get_outputs()],
        )
        if names != (contract.input_names, contract.output_names):
            raise EngineUnavailable(
                f"{BACKEND}: {path} has inputs {names[0]} and outputs {names[1]}, the "
                f"{network} contract has {contract.input_names} and {contract.output_names}"
            )
        log.info("%s: %s ready (%s)", BACKEND, network, ", ".join(session.get_providers()))
        return OnnxEngine(network, session, contract)

    def _load_errors(self) -> tuple[type[BaseException], ...]:
        return _session_errors(self._ort)

    def _source(self, network: str) -> str:
        return str(self._directory / self._entries[network].file)


def open_onnxruntime_engines(
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "auto",
    exports: str | Path | None = None,
) -> OnnxEngineSet:
    """Registry entry point (``engines.registry``)."""
    return OnnxEngineSet(checkpoints, size, networks, device, exports)
