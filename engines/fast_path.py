"""The fast torch path for GPUs: reduced precision with FP32 islands, channels-last, CUDA
graphs, pinned host memory. Selected by config (``render.precision``, ``render.cuda_graphs``)
or ``msadtalker bench engines --precision``; the default path stays our FP32 eager one.

Precision policy (:data:`FP32_ISLANDS`): the generator's convolutions (source encoder, the
512 -> 256 channel mixing, the SPADE decoder: nearly all of its ~1.2 TFLOP per 256² frame) run
in BF16 / FP16 under ``torch.autocast``; what decides where the lips and head go stays FP32:

* the dense-motion network: its softmax mask is zeroed below 1e-3 (a threshold that reduced
  precision flips), and it builds the sampling grid, whose coordinates need more than FP16's
  11 bits to place a 64-pixel grid to well under a pixel;
* the volume warps (``sample_volume``): trilinear weights from those coordinates;
* the mapping network and ExpNet (the lip and head keypoints; tiny) and the keypoint detector
  (once per avatar) run entirely in FP32: no autocast at all.

An island casts its inputs to FP32 and runs with autocast off; its outputs re-enter the
reduced-precision region, where autocast casts them for the next convolution.

Transfers: inputs are staged in pinned host buffers and copied with ``non_blocking``; outputs
come back through a pinned buffer. CUDA graphs: one graph per input-shape signature, captured on
first use after a warm-up on a side stream, replayed with the inputs copied into its static
buffers (fixed shapes only; the live path's batch sizes are few). Channels-last applies to the
4-D convolutions (``memory_format=torch.channels_last``).

Verified on CPU (tests/test_fast_path.py): the policy and islands (BF16 autocast runs on CPU
too), the graph cache's bookkeeping, the PSNR check's arithmetic. Not measured on a GPU here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.base import EngineUnavailable
from engines.torch_engine import TorchEngine, TorchEngineSet
from msadtalker.catalog import base_network

log = logging.getLogger(__name__)

PRECISIONS: Mapping[str, torch.dtype | None] = MappingProxyType(
    {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
)
# Networks that run in reduced precision (with islands); every other network stays FP32.
REDUCED_NETWORKS = frozenset({"generator", "generator_source_encoder", "generator_render"})
# Submodules (attribute paths from the generator) kept in FP32.
FP32_ISLANDS = ("dense_motion_network",)


@dataclass(frozen=True)
class FastPathOptions:
    precision: str = "fp32"
    channels_last: bool = True
    cuda_graphs: bool = False
    pinned: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]


class Fp32Island(nn.Module):
    """Runs ``module`` in FP32 with autocast off, whatever the caller's precision: its
    ``forward`` and its other methods (the generator calls ``dense_motion_network.
    from_compressed``) alike."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _in_fp32(self.inner, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # transparent: the wrapped module's attributes and methods
            value = getattr(self._modules["inner"], name)
        if callable(value) and not isinstance(value, nn.Module):
            return lambda *args, **kwargs: _in_fp32(value, args, kwargs)
        return value


def _in_fp32(call: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
    with torch.autocast(device_type=device, enabled=False):
        return call(*(_fp32(a) for a in args), **{k: _fp32(v) for k, v in kwargs.items()})


def _fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def fp32_sampler(
    sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A volume warp that samples in FP32 (the trilinear weights come from the grid)."""

    def sample(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=volume.device.type, enabled=False):
            return sampler(volume.float(), grid.float())

    return sample


def apply_islands(generator: nn.Module) -> nn.Module:
    """Wrap the generator's FP32 islands in place (idempotent); returns ``generator``."""
    for name in FP32_ISLANDS:
        module = getattr(generator, name)
        if not isinstance(module, Fp32Island):
            setattr(generator, name, Fp32Island(module))
    for sub in generator.modules():
        sampler = getattr(sub, "sample_volume", None)
        if sampler is not None and not getattr(sampler, "fp32_island", False):
            wrapped = fp32_sampler(sampler)
            wrapped.fp32_island = True  # type: ignore[attr-defined]
            sub.sample_volume = wrapped  # type: ignore[assignment]
    return generator


class GraphCache:
    """One captured graph per input signature (shapes, dtypes, device); see the module
    docstring. ``capture(inputs) -> replay`` is injected so the bookkeeping is testable."""

    def __init__(
        self,
        capture: Callable[[Sequence[torch.Tensor]], Callable[[Sequence[torch.Tensor]], Any]],
        limit: int = 8,
    ) -> None:
        self._capture = capture
        self._graphs: dict[tuple[Any, ...], Callable[[Sequence[torch.Tensor]], Any]] = {}
        self.limit = limit
        self.captures = 0

    def __call__(self, inputs: Sequence[torch.Tensor]) -> Any:
        key = tuple((tuple(t.shape), t.dtype, str(t.device)) for t in inputs)
        replay = self._graphs.get(key)
        if replay is None:
            if len(self._graphs) >= self.limit:
                raise EngineUnavailable(
                    f"torch: more than {self.limit} input shapes for CUDA graphs; "
                    "disable cuda_graphs for variable shapes"
                )
            replay = self._capture(inputs)
            self._graphs[key] = replay
            self.captures += 1
        return replay(inputs)


def cuda_graph_capture(
    run: Callable[..., Any],
) -> Callable[[Sequence[torch.Tensor]], Callable[[Sequence[torch.Tensor]], Any]]:
    """``capture(example) -> replay(inputs)`` with torch.cuda.CUDAGraph (CUDA only)."""

    def capture(example: Sequence[torch.Tensor]) -> Callable[[Sequence[torch.Tensor]], Any]:
        static = [t.clone() for t in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: cuDNN picks its algorithms outside the graph
                run(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = run(*static)

        def replay(inputs: Sequence[torch.Tensor]) -> Any:
            for buffer, value in zip(static, inputs, strict=True):
                buffer.copy_(value, non_blocking=True)
            graph.replay()
            return static_out

        return replay

    return capture


class FastTorchEngine(TorchEngine):
    """A torch engine with the fast-path options (module docstring)."""

    def __init__(
        self,
        network: str,
        module: nn.Module,
        contract: Any,
        device: torch.device,
        options: FastPathOptions,
    ) -> None:
        super().__init__(network, module, contract, device, torch.float32)
        self.options = options
        reduced = options.dtype is not None and base_network(network) in REDUCED_NETWORKS
        self.autocast_dtype = options.dtype if reduced else None
        if options.cuda_graphs and device.type != "cuda":
            raise EngineUnavailable("torch: CUDA graphs need a CUDA device")
        self._graphs = (
            GraphCache(cuda_graph_capture(self._forward)) if options.cuda_graphs else None
        )

    def _forward(self, *tensors: torch.Tensor) -> Any:
        if self.autocast_dtype is None:
            return self._module(*tensors)
        with torch.autocast(device_type=self._device.type, dtype=self.autocast_dtype):
            return self._module(*tensors)

    def _tensor(self, value: Any, name: str) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            array = np.ascontiguousarray(value, dtype=np.float32)
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        if self._device.type == "cuda" and tensor.device.type == "cpu" and self.options.pinned:
            tensor = tensor.pin_memory()
        tensor = tensor.to(device=self._device, dtype=torch.float32, non_blocking=True)
        if self.options.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        self._check_count(inputs)
        tensors = [
            self._tensor(x, s.name) for x, s in zip(inputs, self._contract.inputs, strict=True)
        ]
        with torch.inference_mode():
            out = self._graphs(tensors) if self._graphs is not None else self._forward(*tensors)
        outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        names = self._contract.output_names
        if keep_on_device:
            return {n: t.float() for n, t in zip(names, outputs, strict=True)}
        return {n: self._host(t) for n, t in zip(names, outputs, strict=True)}

    def _host(self, tensor: torch.Tensor) -> np.ndarray:
        tensor = tensor.detach().float()
        if tensor.device.type == "cuda" and self.options.pinned:
            host = torch.empty(tensor.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(tensor, non_blocking=True)
            torch.cuda.current_stream().synchronize()
            return host.numpy()
        array: np.ndarray = tensor.cpu().numpy()
        return array


class FastTorchEngineSet(TorchEngineSet):
    """TorchEngineSet whose engines follow :class:`FastPathOptions`."""

    def __init__(
        self,
        checkpoints: str | Path | None,
        size: int,
        networks: Iterable[str],
        device: str,
        options: FastPathOptions,
    ) -> None:
        super().__init__(checkpoints, size, networks, device)
        self.options = options

    def _open(self, network: str) -> FastTorchEngine:
        plain = super()._open(network)
        module = plain.module
        base = base_network(network)
        generator = self._modules.get(base) if base == "generator" else None
        if generator is not None and self.options.dtype is not None:
            apply_islands(generator)
        if self.options.channels_last and base in REDUCED_NETWORKS:
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return FastTorchEngine(network, module, plain.contract, plain.device, self.options)


def open_fast_torch_engines(
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str,
    options: FastPathOptions,
) -> FastTorchEngineSet:
    return FastTorchEngineSet(checkpoints, size, networks, device, options)


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``test`` against ``reference`` (images in [0, peak])."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))


PSNR_GOAL_DB = 40.0
