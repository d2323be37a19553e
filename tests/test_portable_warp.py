"""The portable warp: 2-D grid samples over depth slices == the volumetric (5-D) grid sample.

In torch and in onnxruntime (the sliced form exported at opset 17, where ONNX has no 5-D
GridSample, against the volumetric form at opset 20), and for the generator's render view
exported with ``warp="sliced"`` against the volumetric torch module (slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from export.onnx import check_opset  # noqa: E402
from msadtalker.errors import ConfigError  # noqa: E402
from msadtalker.models.volume_sampling import (  # noqa: E402
    SAMPLERS,
    VolumeSampler,
    sliced_trilinear_sample,
    trilinear_sample,
    use_volume_sampler,
)

BOUND = 1e-4


def _inputs(seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    volume = torch.randn(batch, 3, 16, 12, 10, generator=generator) * 10  # rough: worst case
    grid = torch.rand(batch, 5, 9, 7, 3, generator=generator) * 2.6 - 1.3  # some outside
    # exact corners, borders and just-outside points of every axis
    edges = torch.tensor(
        [[-1, -1, -1], [1, 1, 1], [0, 0, -1.0625], [0, 0, 1.0625], [1.25, 0, 0], [0, -1.2, 0.5]]
    )
    grid[0, 0, 0, :6] = edges
    return volume, grid


def test_sliced_equals_volumetric_in_torch() -> None:
    for seed in range(3):
        volume, grid = _inputs(seed)
        expected = trilinear_sample(volume, grid)
        got = sliced_trilinear_sample(volume, grid)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
        assert float(got[0, :, 0, 0, 2:5].abs().max()) == 0.0  # outside: zero padding
    # it can fail: a shifted depth is not the same warp
    volume, grid = _inputs(0)
    shifted = grid.clone()
    shifted[..., 2] += 0.05
    assert (
        float(
            (sliced_trilinear_sample(volume, shifted) - trilinear_sample(volume, grid)).abs().max()
        )
        > 0.1
    )


class _Warp(torch.nn.Module):
    def __init__(self, sampler: VolumeSampler) -> None:
        super().__init__()
        self.sample_volume = sampler

    def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return self.sample_volume(volume, grid)


def _export(module: torch.nn.Module, path: Path, opset: int) -> ort.InferenceSession:
    volume, grid = _inputs(0)
    torch.onnx.export(
        module,
        (volume, grid),
        str(path),
        input_names=["volume", "grid"],
        output_names=["warped"],
        dynamic_axes={"volume": {0: "batch"}, "grid": {0: "batch"}, "warped": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _grid_sample_ranks(path: Path) -> list[int]:
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ranks = {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in (*model.graph.value_info, *model.graph.input)
    }
    return [ranks[node.input[0]] for node in model.graph.node if node.op_type == "GridSample"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sliced_equals_volumetric_in_onnxruntime(tmp_path: Path) -> None:
    sliced = _export(_Warp(sliced_trilinear_sample), tmp_path / "sliced.onnx", opset=17)
    volumetric = _export(_Warp(trilinear_sample), tmp_path / "volumetric.onnx", opset=20)
    assert set(_grid_sample_ranks(tmp_path / "sliced.onnx")) == {4}
    assert set(_grid_sample_ranks(tmp_path / "volumetric.onnx")) == {5}
    for seed, batch in ((1, 2), (2, 3)):  # the exported batch and another
        volume, grid = (t.numpy() for t in _inputs(seed, batch))
        feeds = {"volume": volume, "grid": grid}
        (got,) = sliced.run(None, feeds)
        (want,) = volumetric.run(None, feeds)
        assert got.shape == want.shape == (batch, 3, 5, 9, 7)
        assert float(np.abs(got - want).max()) <= BOUND


def test_sampler_switch_and_opset_rules() -> None:
    module = torch.nn.Sequential(_Warp(trilinear_sample), _Warp(trilinear_sample))
    use_volume_sampler(module, "sliced")
    assert all(m.sample_volume is sliced_trilinear_sample for m in module)
    with pytest.raises(ValueError, match="volume sampler must be one of"):
        use_volume_sampler(module, "cubic")
    assert set(SAMPLERS) == {"volumetric", "sliced"}
    check_opset("generator_render", 17, "sliced")
    with pytest.raises(ConfigError, match="or export with --warp sliced"):
        check_opset("generator_render", 17)
    with pytest.raises(ConfigError, match="--warp cubic"):
        check_opset("generator_render", 20, "cubic")


@pytest.mark.neural
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_generator_render_sliced_export_matches_volumetric_torch(
    synthetic_checkpoints: Path, tmp_path: Path
) -> None:
    """The render view at 128² with sliced warps at opset 17 vs the volumetric torch module."""
    from export.onnx import export_network
    from msadtalker.models.generator import FrameRenderer, OcclusionAwareSPADEGenerator
    from msadtalker.weights import build_network, load_weights

    generator = build_network("generator", load_weights(synthetic_checkpoints, 256, ["generator"]))
    assert isinstance(generator, OcclusionAwareSPADEGenerator)
    result = export_network(
        "generator_render",
        FrameRenderer(generator).eval(),
        128,
        tmp_path,
        opset=17,
        grow_batch=False,
        warp="sliced",
    )
    assert generator.sample_volume is trilinear_sample  # restored after the export
    assert set(_grid_sample_ranks(result.path)) == {4}
    assert result.parity is not None and result.parity.ok
    assert result.parity.max_abs_diff <= BOUND, result.parity
