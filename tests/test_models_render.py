"""Renderer networks (KPDetector, OcclusionAwareSPADEGenerator) against the official golden data.

Weights: the seed-0 synthetic checkpoint in the official format, loaded with the official rule
(every key containing the prefix, ``prefix.`` removed, strict). Tolerances: the official golden
data's recommendations (tests/data/README.md). The modules' state-dict layouts are checked in
test_models_layout.py.
One batch-2 generator forward at 256 (~20 s on 2 cores) is shared by all the parity tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from msadtalker.models.generator import (  # noqa: E402
    FrameRenderer,
    GeneratorOutput,
    OcclusionAwareSPADEGenerator,
    SourceEncoder,
)
from msadtalker.models.kp_detector import KPDetector  # noqa: E402
from msadtalker.weights import fold_spectral_norm  # noqa: E402

pytestmark = pytest.mark.neural

CHECKPOINT_NAME = "SadTalker_V0.0.2_256.safetensors"


def _load_official(checkpoint: Path, prefix: str) -> dict[str, Any]:
    """The official rule: every key containing ``prefix``, ``prefix.`` removed; SN folded."""
    from safetensors import safe_open

    state = {}
    with safe_open(str(checkpoint), framework="pt") as file:
        for key in file.keys():
            if prefix in key:
                state[key.replace(prefix + ".", "", 1)] = file.get_tensor(key)
    return fold_spectral_norm(state)


@pytest.fixture(scope="module")
def two_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def checkpoint(synthetic_checkpoints: Path) -> Path:
    return synthetic_checkpoints / CHECKPOINT_NAME


@pytest.fixture(scope="module")
def kp_detector(checkpoint: Path) -> KPDetector:
    model = KPDetector()
    model.load_state_dict(_load_official(checkpoint, "kp_extractor"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def generator(checkpoint: Path) -> OcclusionAwareSPADEGenerator:
    model = OcclusionAwareSPADEGenerator()
    model.load_state_dict(_load_official(checkpoint, "generator"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def generator_output(
    generator: OcclusionAwareSPADEGenerator, golden: dict[str, np.ndarray], two_threads: None
) -> GeneratorOutput:
    """The official generator call: source image repeated to batch 2, frames 0 and 25."""
    source = torch.from_numpy(golden["source_image"]).repeat(2, 1, 1, 1)
    with torch.no_grad():
        output: GeneratorOutput = generator(
            source,
            torch.from_numpy(golden["gen_kp_source"]),
            torch.from_numpy(golden["gen_kp_driving"]),
        )
    return output


def _abs_diff(ours: Any, reference: np.ndarray) -> np.ndarray:
    values: np.ndarray = ours.numpy().astype(np.float64)
    assert values.shape == reference.shape
    assert np.isfinite(values).all()
    diff: np.ndarray = np.abs(values - reference.astype(np.float64))
    return diff


def test_folded_spectral_norm_weights_have_unit_norm(
    generator: OcclusionAwareSPADEGenerator,
) -> None:
    weight = generator.decoder.up_1.conv_1.weight.detach().double()
    top_singular_value = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
    assert abs(top_singular_value.item() - 1.0) < 1e-5


def test_kp_detector_matches_golden(
    kp_detector: KPDetector, golden: dict[str, np.ndarray], two_threads: None
) -> None:
    with torch.no_grad():
        keypoints = kp_detector(torch.from_numpy(golden["source_image"]))
    assert _abs_diff(keypoints, golden["kp_canonical"]).max() <= 5e-5
    contract = KPDetector.export_contract(256)
    assert tuple(keypoints.shape) == contract.outputs[0].shape


@pytest.mark.slow
def test_generator_mask_matches_golden(
    generator_output: GeneratorOutput, golden: dict[str, np.ndarray]
) -> None:
    assert _abs_diff(generator_output.mask, golden["gen_out_mask"]).max() <= 2e-4


@pytest.mark.slow
def test_generator_occlusion_matches_golden(
    generator_output: GeneratorOutput, golden: dict[str, np.ndarray]
) -> None:
    diff = _abs_diff(generator_output.occlusion_map, golden["gen_out_occlusion_map"])
    assert diff.max() <= 1e-4


@pytest.mark.slow
def test_generator_deformation_matches_golden(
    generator_output: GeneratorOutput, golden: dict[str, np.ndarray]
) -> None:
    # A few mask entries near the 1e-3 threshold may fall on the other side (tests/data/README).
    diff = _abs_diff(generator_output.deformation, golden["gen_out_deformation"])
    assert diff.mean() <= 2e-5
    assert diff.max() <= 1e-2


@pytest.mark.slow
def test_generator_prediction_matches_golden(
    generator_output: GeneratorOutput, golden: dict[str, np.ndarray]
) -> None:
    diff = _abs_diff(generator_output.prediction, golden["gen_out_prediction"])
    assert diff.mean() <= 1e-4
    assert diff.max() <= 2e-2
    assert (diff > 1e-3).mean() < 1e-3


@pytest.mark.slow
def test_generator_outputs_match_export_contract(generator_output: GeneratorOutput) -> None:
    contract = OcclusionAwareSPADEGenerator.export_contract(256)
    assert [spec.name for spec in contract.outputs] == list(GeneratorOutput._fields)
    for spec, tensor in zip(contract.outputs, generator_output, strict=True):
        assert (1, *tensor.shape[1:]) == spec.shape, spec.name


@pytest.mark.slow
def test_split_render_with_shared_source_matches_forward(
    generator: OcclusionAwareSPADEGenerator, golden: dict[str, np.ndarray], two_threads: None
) -> None:
    """encode_source once (batch 1) + render for a batch of keypoint pairs == forward.

    Runs at S = 128 (a quarter of the cost) which also exercises another render size.
    """
    size = 128
    image = torch.nn.functional.interpolate(
        torch.from_numpy(golden["source_image"]), size=(size, size), mode="area"
    )
    kp_source = torch.from_numpy(golden["gen_kp_source"])
    kp_driving = torch.from_numpy(golden["gen_kp_driving"])
    with torch.no_grad():
        whole = generator(image.repeat(2, 1, 1, 1), kp_source, kp_driving)
        source = SourceEncoder(generator)(image)
        frames = FrameRenderer(generator)(*source, kp_source, kp_driving)

    for spec, tensor in zip(SourceEncoder.export_contract(size).outputs, source, strict=True):
        assert tuple(tensor.shape) == spec.shape, spec.name
    assert (1, *frames.shape[1:]) == FrameRenderer.export_contract(size).outputs[0].shape

    diff = np.abs(frames.numpy() - whole.prediction.numpy())
    assert diff.mean() <= 1e-5
    assert (diff > 1e-3).mean() < 1e-3
