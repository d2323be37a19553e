"""The fast GPU path's parts that a CPU can check (engines.fast_path, export.precision_check).

BF16 autocast runs on CPU, so the precision policy and its FP32 islands are exercised here;
CUDA graphs and pinned transfers need a GPU: only the graph cache's bookkeeping and the
refusal on CPU are tested. Nothing here measures speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from engines.base import EngineUnavailable  # noqa: E402
from engines.fast_path import (  # noqa: E402
    FastPathOptions,
    FastTorchEngine,
    Fp32Island,
    GraphCache,
    apply_islands,
    psnr,
)
from export.precision_check import check_precision  # noqa: E402


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x)
        return out

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x) * 2
        return out


def test_options_are_checked() -> None:
    assert FastPathOptions("bf16").dtype == torch.bfloat16
    assert FastPathOptions().dtype is None
    with pytest.raises(ValueError, match="precision must be one of"):
        FastPathOptions("int8")


def test_islands_stay_fp32_under_autocast() -> None:
    toy = _Toy()
    island = Fp32Island(toy)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert toy(x).dtype == torch.bfloat16  # the policy's reduced region
        assert island(x).dtype == torch.float32
        assert island.scaled(x).dtype == torch.float32  # methods too, not only forward
    assert island.linear is toy.linear  # transparent attributes


def test_generator_islands_keep_motion_fp32() -> None:
    from msadtalker.models.generator import OcclusionAwareSPADEGenerator

    generator = OcclusionAwareSPADEGenerator()
    apply_islands(apply_islands(generator))  # idempotent
    assert isinstance(generator.dense_motion_network, Fp32Island)
    island = generator.dense_motion_network
    assert isinstance(island, Fp32Island)
    inner: Any = island.inner
    assert not isinstance(inner, Fp32Island)
    assert getattr(generator.sample_volume, "fp32_island", False)
    rng = torch.Generator().manual_seed(0)
    compressed = torch.rand(1, 4, 16, 32, 32, generator=rng)
    kp = torch.rand(1, 15, 3, generator=rng) * 1.6 - 0.8
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        motion = generator.dense_motion_network.from_compressed(
            compressed.bfloat16(), kp, kp + 0.05
        )
        warped = generator.sample_volume(
            torch.randn(1, 2, 16, 32, 32).bfloat16(), motion.deformation
        )
    assert motion.deformation.dtype == torch.float32 and motion.mask.dtype == torch.float32
    assert warped.dtype == torch.float32
    with torch.inference_mode():
        plain = inner.from_compressed(compressed, kp, kp + 0.05)
    assert float((plain.deformation - motion.deformation).abs().max()) <= 1e-2  # bf16 input only


def test_graph_cache_captures_once_per_shape() -> None:
    captured: list[tuple[int, ...]] = []

    def capture(example: Any) -> Any:
        captured.append(tuple(example[0].shape))
        return lambda inputs: inputs[0] * 2

    cache = GraphCache(capture, limit=2)
    assert float(cache([torch.ones(1, 3)]).sum()) == 6.0
    cache([torch.zeros(1, 3)])
    cache([torch.ones(2, 3)])
    assert captured == [(1, 3), (2, 3)] and cache.captures == 2
    with pytest.raises(EngineUnavailable, match="more than 2 input shapes"):
        cache([torch.ones(3, 3)])


def test_cuda_graphs_need_cuda() -> None:
    from engines.contracts import contract_for

    with pytest.raises(EngineUnavailable, match="CUDA graphs need a CUDA device"):
        FastTorchEngine(
            "mapping",
            _Toy(),
            contract_for("mapping", 256),
            torch.device("cpu"),
            FastPathOptions(cuda_graphs=True),
        )


def test_psnr() -> None:
    image = np.random.default_rng(0).random((3, 8, 8))
    assert psnr(image, image) == float("inf")
    assert psnr(np.zeros(4), np.full(4, 0.01)) == pytest.approx(40.0)


class _Engine:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Any:
        return self.fn(*inputs)


class _Set:
    backend = "fake"
    device = "cpu"

    def __init__(self, noise: float) -> None:
        rng = np.random.default_rng(1)
        self.engines = {
            "generator_source_encoder": _Engine(
                lambda image: {"source_volume": image, "source_compressed": image}
            ),
            "generator_render": _Engine(
                lambda v, c, ks, kd: {
                    "prediction": np.clip(
                        v + kd.mean() + noise * rng.standard_normal(v.shape), 0, 1
                    )
                }
            ),
            "mapping": _Engine(lambda coeffs: {"t": coeffs[:, :3, 0] + noise}),
        }

    def engine(self, name: str) -> Any:
        return self.engines[name]

    def close(self) -> None:
        return None


def test_precision_check_scores_frames_and_keypoints() -> None:
    golden = {
        "source_image": np.full((1, 3, 8, 8), 0.5, np.float32),
        "gen_kp_source": np.zeros((2, 15, 3), np.float32),
        "gen_kp_driving": np.full((2, 15, 3), 0.1, np.float32),
        "map70_source_in": np.zeros((1, 70, 27), np.float32),
    }
    same = check_precision(golden, _Set(0.0), _Set(0.0))
    assert same.ok and same.frame_psnr_db == (float("inf"), float("inf"))
    noisy = check_precision(golden, _Set(0.0), _Set(0.02))
    assert not noisy.ok and 30 < min(noisy.frame_psnr_db) < 40
    assert noisy.keypoint_max_abs_diff == pytest.approx(0.02)
