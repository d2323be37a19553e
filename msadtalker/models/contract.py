"""Export contracts: what a network takes and returns, declared once beside the network.

Every network has ``export_contract(...) -> ExportContract`` (a static method or a method when
the contract depends on the instance, e.g. MappingNet's 70 / 73 input channels). Exporters
(ONNX, TensorRT), engines and parity checks read names, shapes, dtypes and dynamic axes from it
instead of repeating them:

* ``inputs`` / ``outputs``: ``TensorSpec`` in the order of ``forward``'s positional arguments /
  of the returned tensor(s). ``shape`` is the example shape; ``dynamic`` maps an axis index to
  the name of a dynamic axis (``{0: "batch"}``), the other axes are fixed.
* ``example_inputs``: a zero-argument factory returning tensors in ``forward`` order with the
  example shapes (values like real data: images in [0, 1], mels in [-4, 4] ...).
* ``dynamic_axes()`` is the ``torch.onnx.export(dynamic_axes=...)`` mapping,
  ``input_names`` / ``output_names`` its ``input_names`` / ``output_names``.

Example::

    ExportContract(
        name="expnet",
        inputs=(TensorSpec("mel", (10, 1, 80, 16), {0: "batch"}), ...),
        outputs=(TensorSpec("exp", (10, 64), {0: "batch"}),),
        example_inputs=lambda: (torch.rand(10, 1, 80, 16) * 8 - 4, ...),
    )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: example shape, dynamic axes (index -> name) and dtype."""

    name: str
    shape: tuple[int, ...]
    dynamic: Mapping[int, str] = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"{self.name}: unsupported dtype {self.dtype!r}")
        if any(not 0 <= axis < len(self.shape) for axis in self.dynamic):
            raise ValueError(f"{self.name}: dynamic axis index outside shape {self.shape}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def matches(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` fits this spec (dtype, rank, every fixed axis)."""
        if tensor.dtype != self.torch_dtype or tensor.dim() != len(self.shape):
            return False
        return all(
            axis in self.dynamic or size == expected
            for axis, (size, expected) in enumerate(zip(tensor.shape, self.shape, strict=True))
        )


@dataclass(frozen=True)
class ExportContract:
    """Names, shapes, dtypes, dynamic axes and an example-input factory of one network."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example_inputs: Callable[[], tuple[torch.Tensor, ...]]

    def __post_init__(self) -> None:
        names = [spec.name for spec in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: input/output names must be unique")

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export(dynamic_axes=...)`` mapping for inputs and outputs."""
        return {
            spec.name: dict(spec.dynamic) for spec in (*self.inputs, *self.outputs) if spec.dynamic
        }
