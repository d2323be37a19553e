"""TensorRT backend (TensorRT 10 Python API): build plans from the exported ONNX files, run them.

UNVERIFIED: TensorRT cannot be installed on the machines this project is developed and tested
on (no reachable TensorRT libraries, no GPU), so the build and run paths below were written
against the TensorRT 10 documentation and never executed. What is tested here: profile
derivation from the contracts (:func:`optimization_profile`) and the unavailable path, which
raises :class:`~engines.base.EngineUnavailable` with one line when ``tensorrt`` cannot be
imported or there is no CUDA device. Known obstacle: TensorRT's GridSample layer is 2-D only,
to our knowledge (docs/export.md, TensorRT), so ``generator`` / ``generator_render`` (5-D
grid_sample) are expected to fail to parse or build until a plugin or a gather-based
trilinear rewrite exists; the build error is reported as one line.

* Build (:func:`build_plan`): parse the ONNX file, one optimisation profile whose ranges come
  from the contract's dynamic axes (min 1, opt = the example size, max = ``max_sizes[name]``
  or ``default_max``, never below the example), optional FP16, serialize to a ``.plan``.
* Run (:class:`TensorRTEngine`): inputs (numpy or torch) become contiguous CUDA tensors;
  outputs are allocated with torch at the shapes the context reports, bound by address, and
  ``execute_async_v3`` runs on torch's current stream. ``keep_on_device`` returns the CUDA
  tensors. One execution context per engine, guarded by a lock (contexts are not re-entrant).
* Open (:class:`TensorRTEngineSet`): like the onnxruntime set (``engines.onnx_engine``): the
  export directory's manifest must match the checkpoint fingerprint, size and contracts, and
  each network's ``plan`` entry must have been built by this TensorRT version on this GPU
  model (plans are not portable), have passed its parity check and match its sha256; all
  checked at open, the plans are deserialized on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from engines.base import BaseEngine, BaseEngineSet, EngineUnavailable
from engines.contracts import contract_for
from engines.manifest import (
    ManifestError,
    NetworkEntry,
    PlanEntry,
    check_digest,
    check_network,
    check_source,
    export_dir,
    read_manifest,
)
from msadtalker.models.contract import ExportContract
from msadtalker.weights import checkpoint_dir, checkpoint_fingerprint

log = logging.getLogger(__name__)

BACKEND = "tensorrt"
DEFAULT_MAX = 4
DEFAULT_WORKSPACE = 4 << 30


@dataclass(frozen=True)
class ShapeRange:
    """One input's TensorRT optimisation-profile shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, tuple[int, ...]]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


def optimization_profile(
    contract: ExportContract,
    max_sizes: Mapping[str, int] | None = None,
    default_max: int = DEFAULT_MAX,
) -> dict[str, ShapeRange]:
    """Per input: fixed axes as in the contract; each dynamic axis from 1 through the example
    size (opt) to ``max_sizes.get(name, default_max)`` (at least the example size).

    An axis name shared by several inputs (``batch``) gets one range; the contract must give it
    one example size."""
    max_sizes = dict(max_sizes or {})
    examples: dict[str, int] = {}
    for spec in contract.inputs:
        for axis, name in spec.dynamic.items():
            size = spec.shape[axis]
            if examples.setdefault(name, size) != size:
                raise ValueError(
                    f"{contract.name}: dynamic axis {name!r} has example sizes "
                    f"{examples[name]} and {size}"
                )
    for name, limit in max_sizes.items():
        if limit < 1:
            raise ValueError(f"maximum size of axis {name!r} must be >= 1, got {limit}")
    ranges: dict[str, ShapeRange] = {}
    for spec in contract.inputs:
        low, opt, high = list(spec.shape), list(spec.shape), list(spec.shape)
        for axis, name in spec.dynamic.items():
            low[axis] = 1
            high[axis] = max(examples[name], max_sizes.get(name, default_max))
        ranges[spec.name] = ShapeRange(tuple(low), tuple(opt), tuple(high))
    return ranges


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise EngineUnavailable(
            f"{BACKEND}: the Python package tensorrt is not installed (TensorRT 10 with a CUDA "
            "GPU is needed; it cannot be installed on every machine, see docs/export.md)"
        ) from None
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < 10:
        raise EngineUnavailable(
            f"{BACKEND}: TensorRT {tensorrt.__version__} is installed, this backend needs 10.x"
        )
    return tensorrt


def cuda_device(device: str = "auto") -> torch.device:
    """The CUDA device TensorRT runs on; EngineUnavailable without one."""
    if device == "cpu":
        raise EngineUnavailable(f"{BACKEND}: runs on CUDA only, device cpu was requested")
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            f"{BACKEND}: no CUDA device (torch {torch.__version__} sees none); TensorRT needs an "
            "NVIDIA GPU"
        )
    resolved = torch.device("cuda" if device == "auto" else device)
    if resolved.type != "cuda":
        raise EngineUnavailable(f"{BACKEND}: unknown device {device!r} (use auto or cuda)")
    return resolved


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability) that a plan is tied to."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def _logger(trt: ModuleType) -> Any:
    return trt.Logger(trt.Logger.WARNING)


def build_plan(
    onnx_path: Path,
    contract: ExportContract,
    plan_path: Path,
    fp16: bool = False,
    max_sizes: Mapping[str, int] | None = None,
    default_max: int = DEFAULT_MAX,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    device: str = "auto",
) -> dict[str, ShapeRange]:
    """Build a TensorRT engine from ``onnx_path`` and write it to ``plan_path``.

    Returns the profile used. Raises EngineUnavailable (one line) when TensorRT or CUDA is
    missing, the parser rejects the file or the build fails."""
    trt = import_tensorrt()
    cuda_device(device)
    profile_ranges = optimization_profile(contract, max_sizes, default_max)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    # TensorRT 10: networks are always explicit-batch; the creation flag is gone.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        first = errors[0] if errors else "unknown parser error"
        raise EngineUnavailable(f"{BACKEND}: cannot parse {onnx_path}: {first}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, shapes in profile_ranges.items():
        profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineUnavailable(
            f"{BACKEND}: building {onnx_path} failed (the TensorRT log above says why)"
        )
    tmp = plan_path.with_name(f".{plan_path.name}.partial")
    try:
        tmp.write_bytes(bytes(memoryview(serialized)))
        tmp.replace(plan_path)
    finally:
        tmp.unlink(missing_ok=True)
    return profile_ranges


def _torch_dtype(trt: ModuleType, dtype: Any) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    if dtype not in table:
        raise EngineUnavailable(f"{BACKEND}: unsupported tensor type {dtype}")
    return table[dtype]


class TensorRTEngine(BaseEngine):
    """One deserialized plan with one execution context; see the module docstring."""

    BACKEND = BACKEND

    def __init__(
        self,
        network: str,
        plan: bytes,
        contract: ExportContract,
        device: torch.device,
        trt: ModuleType,
    ) -> None:
        super().__init__(network, contract)
        self._device = device
        self._runtime = trt.Runtime(_logger(trt))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineUnavailable(f"{BACKEND}: cannot deserialize the {network} plan")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != sorted(contract.input_names) or sorted(outputs) != sorted(
            contract.output_names
        ):
            raise EngineUnavailable(
                f"{BACKEND}: the {network} plan has inputs {inputs} and outputs {outputs}, the "
                f"contract has {contract.input_names} and {contract.output_names}"
            )
        self._dtypes = {n: _torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
        self._lock = threading.Lock()

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        self._check_count(inputs)
        names = self._contract.input_names
        with self._lock:
            tensors = [self._tensor(value, name) for value, name in zip(inputs, names, strict=True)]
            for name, tensor in zip(names, tensors, strict=True):
                if not self._context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(
                        f"{self._network}: input {name} shape {tuple(tensor.shape)} is outside "
                        "the plan's optimisation profile"
                    )
                self._context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self._contract.output_names:
                shape = tuple(self._context.get_tensor_shape(name))
                buffer = torch.empty(shape, dtype=self._dtypes[name], device=self._device)
                self._context.set_tensor_address(name, buffer.data_ptr())
                outputs[name] = buffer
            stream = torch.cuda.current_stream(self._device)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"{BACKEND}: executing {self._network} failed")
            # Inputs must outlive the enqueued work; later torch work on this stream is ordered.
            stream.synchronize()
        if keep_on_device:
            return outputs
        return {name: _numpy(tensor) for name, tensor in outputs.items()}

    def _tensor(self, value: Any, name: str) -> torch.Tensor:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        return tensor.to(device=self._device, dtype=self._dtypes[name]).contiguous()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array: np.ndarray = tensor.detach().to("cpu", torch.float32).numpy()
    return array


def check_plan(
    entry: NetworkEntry, directory: Path, trt_version: str, gpu: tuple[str, str]
) -> PlanEntry:
    """The network's plan entry, refused when missing or built elsewhere."""
    plan = entry.plan
    if plan is None:
        raise ManifestError(
            f"{BACKEND}: {entry.network} has no TensorRT plan in {directory} (run msadtalker "
            f"export --format tensorrt --networks {entry.network})"
        )
    if plan.tensorrt != trt_version:
        raise ManifestError(
            f"{BACKEND}: {directory / plan.file} was built by TensorRT {plan.tensorrt}, this is "
            f"{trt_version}; rebuild it"
        )
    if (plan.device_name, plan.compute_capability) != gpu:
        raise ManifestError(
            f"{BACKEND}: {directory / plan.file} was built for {plan.device_name} (sm "
            f"{plan.compute_capability}), this GPU is {gpu[0]} (sm {gpu[1]}); rebuild it"
        )
    if plan.parity is not None and not plan.parity.ok:
        raise ManifestError(
            f"{BACKEND}: {directory / plan.file} failed its parity check against onnxruntime "
            f"({plan.parity.describe()})"
        )
    if not (directory / plan.file).is_file():
        raise ManifestError(f"{BACKEND}: {directory / plan.file} is missing")
    return plan


class TensorRTEngineSet(BaseEngineSet[TensorRTEngine]):
    """The TensorRT engines of one export directory; see the module docstring."""

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
        self._trt = import_tensorrt()
        self._device = cuda_device(device)
        self._gpu = gpu_identity(self._device)
        root = checkpoint_dir(checkpoints)
        fingerprint = checkpoint_fingerprint(root, size)
        self._directory = export_dir(exports, root, size)
        manifest = read_manifest(self._directory, BACKEND)
        check_source(manifest, self._directory, fingerprint, size, BACKEND)
        self._contracts = {name: contract_for(name, size) for name in self.networks}
        # Everything is checked now so that a stale export fails before any stream starts.
        self._plans: dict[str, PlanEntry] = {}
        for name in self.networks:
            entry = check_network(manifest, self._directory, name, self._contracts[name], BACKEND)
            plan = check_plan(entry, self._directory, str(self._trt.__version__), self._gpu)
            check_digest(self._directory / plan.file, plan.sha256, BACKEND)
            self._plans[name] = plan

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def directory(self) -> Path:
        return self._directory

    def _open(self, network: str) -> TensorRTEngine:
        plan = self._directory / self._plans[network].file
        return TensorRTEngine(
            network, plan.read_bytes(), self._contracts[network], self._device, self._trt
        )


def open_tensorrt_engines(
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "auto",
    exports: str | Path | None = None,
) -> TensorRTEngineSet:
    """Registry entry point (``engines.registry``)."""
    return TensorRTEngineSet(checkpoints, size, networks, device, exports)
