"""ONNX -> TensorRT plans for an export directory (``msadtalker export --format tensorrt``).

UNVERIFIED: TensorRT is not installable on the machines this was written on and they have no
GPU; this code follows the TensorRT 10 Python API documentation and has never run. It builds
``<network>.plan`` beside each exported ``<network>.onnx`` with
``engines.tensorrt_engine.build_plan`` (one optimisation profile from the contract's dynamic
axes), runs the plan against onnxruntime on the contract's example inputs, and records the
plan (sha256, TensorRT version, GPU, precision, profile, parity) in the network's manifest
entry. Without TensorRT or CUDA it raises EngineUnavailable before touching any file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from engines.base import EngineUnavailable
from engines.contracts import contract_for
from engines.manifest import ManifestError, PlanEntry, file_sha256, read_manifest
from engines.tensorrt_engine import (
    DEFAULT_MAX,
    DEFAULT_WORKSPACE,
    TensorRTEngine,
    build_plan,
    cuda_device,
    gpu_identity,
    import_tensorrt,
)
from export.manifest import record, with_plan
from export.onnx import TOLERANCES, compare_outputs, onnxruntime_runner
from export.tolerance import Tolerance

log = logging.getLogger(__name__)

# FP16 keeps ~3 significant digits; the generator's outputs are images in [0, 1].
FP16_TOLERANCE = Tolerance(1e-3, 2e-2)


@dataclass(frozen=True)
class BuiltPlan:
    network: str
    path: Path
    plan: PlanEntry


def build_plans(
    directory: Path,
    networks: Iterable[str],
    fp16: bool = False,
    max_sizes: Mapping[str, int] | None = None,
    default_max: int = DEFAULT_MAX,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    device: str = "auto",
    progress: Callable[[BuiltPlan], None] | None = None,
) -> tuple[list[BuiltPlan], dict[str, str]]:
    """Build and record a plan for each of ``networks`` already exported to ``directory``.

    Returns the plans built and, per network that TensorRT could not parse or build (the
    generator's 5-D GridSample, say), the one-line reason; the others still get their plans.
    Missing TensorRT / CUDA / manifest raise EngineUnavailable before anything is built."""
    trt = import_tensorrt()
    cuda = cuda_device(device)
    gpu_name, capability = gpu_identity(cuda)
    manifest = read_manifest(directory, "tensorrt")
    built: list[BuiltPlan] = []
    failed: dict[str, str] = {}
    for network in networks:
        entry = manifest.networks.get(network)
        if entry is None:
            raise ManifestError(f"tensorrt: {network} has no ONNX export in {directory}")
        contract = contract_for(network, manifest.size)
        onnx_path = directory / entry.file
        plan_path = directory / f"{network}.plan"
        try:
            ranges = build_plan(
                onnx_path,
                contract,
                plan_path,
                fp16,
                max_sizes,
                default_max,
                workspace_bytes,
                device,
            )
        except EngineUnavailable as exc:
            log.error("%s", exc)
            failed[network] = str(exc)
            continue
        engine = TensorRTEngine(network, plan_path.read_bytes(), contract, cuda, trt)

        def run_plan(
            inputs: Iterable[torch.Tensor], engine: TensorRTEngine = engine
        ) -> list[np.ndarray]:
            outputs = engine.run(*inputs)
            return [outputs[name] for name in engine.contract.output_names]

        tolerance = FP16_TOLERANCE if fp16 else TOLERANCES[network]
        parity = compare_outputs(
            onnxruntime_runner(onnx_path, contract), run_plan, contract, tolerance, grow_batch=True
        )
        plan = PlanEntry(
            file=plan_path.name,
            sha256=file_sha256(plan_path),
            bytes=plan_path.stat().st_size,
            tensorrt=str(trt.__version__),
            device_name=gpu_name,
            compute_capability=capability,
            precision="fp16" if fp16 else "fp32",
            profiles=MappingProxyType(
                {name: MappingProxyType(r.to_json()) for name, r in ranges.items()}
            ),
            parity=parity,
        )
        manifest = record(directory, manifest, with_plan(entry, plan))
        result = BuiltPlan(network, plan_path, plan)
        built.append(result)
        if not parity.ok:
            log.error("tensorrt: %s differs from onnxruntime: %s", network, parity.describe())
        if progress is not None:
            progress(result)
    return built, failed
