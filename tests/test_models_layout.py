"""SadTalker networks without checkpoints: state-dict layout, export contracts, pure helpers."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from msadtalker.models.expnet import ExpNet  # noqa: E402
from msadtalker.models.face_recon import (  # noqa: E402
    STANDARD_POINTS_3D,
    FaceReconNet,
    align_face,
    coeffs_73,
    fit_camera,
    five_points_from_68,
)
from msadtalker.models.keypoints import (  # noqa: E402
    degrees_from_bins,
    keypoint_transformation,
    keypoint_transformation_degrees,
    rotation_matrix,
)
from msadtalker.models.mapping import MappingNet, MappingOutput  # noqa: E402
from msadtalker.weights import fold_spectral_norm, folded_layout, official_layout  # noqa: E402

pytestmark = pytest.mark.neural

OUR_NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "audio2exp": ExpNet,
    "face_3drecon": FaceReconNet,
    "mapping": lambda: MappingNet(70),
    "mapping_full": lambda: MappingNet(73),
}
PREFIXED = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")


def _reference_layout(
    reference: dict[str, Any], network: str
) -> dict[str, tuple[tuple[int, ...], str]]:
    strip = f"{network}." if network in PREFIXED else ""
    return {
        key.removeprefix(strip): (tuple(info["shape"]), info["dtype"])
        for key, info in reference["networks"][network]["state_dict"].items()
    }


def _module_layout(module: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        key: (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        for key, tensor in module.state_dict().items()
    }


@pytest.mark.parametrize("network", sorted(OUR_NETWORKS))
def test_our_state_dicts_equal_the_official_layout(network: str) -> None:
    with torch.device("meta"):
        module = OUR_NETWORKS[network]()
    ours = _module_layout(module)
    official: Mapping[str, tuple[tuple[int, ...], str]] = official_layout()[network]
    assert list(ours) == list(official)  # same keys, same order
    assert ours == dict(official)


@pytest.mark.reference
def test_packaged_layout_equals_reference(reference_dir: Path) -> None:
    reference: dict[str, Any] = json.loads((reference_dir / "state_dicts.json").read_text())
    packaged = official_layout()
    for network, layout in packaged.items():
        assert dict(layout) == _reference_layout(reference, network), network
    stored = {net for net in reference["networks"] if net != "he_estimator"}
    assert set(packaged) == stored
    n_safetensors = sum(len(packaged[net]) for net in PREFIXED)
    assert (
        n_safetensors
        == reference["files"]["SadTalker_V0.0.2_256.safetensors"]["expected_n_tensors"]
    )


@pytest.mark.parametrize(
    ("network", "module", "cls"),
    [
        ("kp_extractor", "msadtalker.models.kp_detector", "KPDetector"),
        ("generator", "msadtalker.models.generator", "OcclusionAwareSPADEGenerator"),
    ],
)
def test_renderer_modules_take_the_folded_layout(network: str, module: str, cls: str) -> None:
    factory = getattr(importlib.import_module(module), cls)
    with torch.device("meta"):
        instance = factory()
    assert _module_layout(instance) == folded_layout(official_layout()[network])


def test_keys_belong_to_exactly_one_network() -> None:
    # The upstream loader routes a key to every network whose name it contains.
    layout = official_layout()
    for network in PREFIXED:
        for key in layout[network]:
            owners = [name for name in PREFIXED if name in f"{network}.{key}"]
            assert owners == [network], key


@pytest.mark.parametrize("network", sorted(OUR_NETWORKS))
def test_export_contract_describes_forward(network: str) -> None:
    module = OUR_NETWORKS[network]().eval()
    contract = module.export_contract()  # type: ignore[operator]
    inputs = contract.example_inputs()
    assert len(inputs) == len(contract.inputs)
    for spec, tensor in zip(contract.inputs, inputs, strict=True):
        assert spec.matches(tensor), spec.name
        assert tuple(tensor.shape) == spec.shape
    with torch.no_grad():
        out = module(*inputs)
    outputs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    assert len(outputs) == len(contract.outputs)
    for spec, tensor in zip(contract.outputs, outputs, strict=True):
        assert tuple(tensor.shape) == spec.shape, spec.name
        assert spec.matches(tensor)
    assert all(0 in axes for axes in contract.dynamic_axes().values())
    # batch is dynamic: another batch size gives the same per-row results
    with torch.no_grad():
        single = module(*(x[:1] for x in inputs))
    first = (single,) if isinstance(single, torch.Tensor) else tuple(single)
    for a, b in zip(first, outputs, strict=True):
        torch.testing.assert_close(a, b[:1], rtol=1e-4, atol=1e-5)


def test_mapping_rejects_unknown_width() -> None:
    with pytest.raises(ValueError, match="coeff_nc"):
        MappingNet(71)


# --- spectral norm ------------------------------------------------------------------------------


def test_folded_spectral_norm_equals_eval_spectral_norm() -> None:
    torch.manual_seed(0)
    conv = nn.utils.spectral_norm(nn.Conv2d(4, 6, 3, padding=1))
    conv.train()
    with torch.no_grad():
        conv(torch.randn(1, 4, 8, 8))  # one power iteration: u, v are not exact any more
    conv.eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = conv(x)
    state = {f"decoder.conv_0.{k}": v.clone() for k, v in conv.state_dict().items()}
    folded = fold_spectral_norm(state)
    assert set(folded) == {"decoder.conv_0.weight", "decoder.conv_0.bias"}
    plain = nn.Conv2d(4, 6, 3, padding=1)
    plain.load_state_dict({k.removeprefix("decoder.conv_0."): v for k, v in folded.items()})
    with torch.no_grad():
        torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-6)
    # sigma came from the stored vectors, not from an SVD: the result is not exactly unit norm
    sigma = torch.linalg.matrix_norm(folded["decoder.conv_0.weight"].reshape(6, -1), ord=2)
    assert abs(sigma.item() - 1.0) > 1e-6


def test_fold_spectral_norm_needs_all_three_tensors() -> None:
    from msadtalker.errors import CheckpointError

    state = {"a.weight_orig": torch.ones(2, 3), "a.weight_u": torch.ones(2)}
    with pytest.raises(CheckpointError, match="a.weight_v"):
        fold_spectral_norm(state)
    with pytest.raises(CheckpointError, match="without"):
        fold_spectral_norm({"a.weight_u": torch.ones(2)})


# --- keypoints ----------------------------------------------------------------------------------


def test_degrees_from_bins_range_and_centre() -> None:
    logits = torch.full((3, 66), -1e4)
    logits[0, 0] = logits[1, 65] = logits[2, 33] = 0.0
    torch.testing.assert_close(degrees_from_bins(logits), torch.tensor([-99.0, 96.0, 0.0]))


def test_rotation_uses_pi_3_14_and_axis_order() -> None:
    zero = torch.zeros(1)
    quarter = torch.full((1,), 90.0)
    r = rotation_matrix(yaw=quarter, pitch=zero, roll=zero)[0]
    angle = 90.0 / 180.0 * 3.14  # not math.pi / 2
    assert r[0, 2].item() == pytest.approx(math.sin(angle), abs=1e-7)
    assert r[0, 0].item() == pytest.approx(math.cos(angle), abs=1e-7)
    assert abs(r[0, 0].item()) > 1e-4  # would be ~0 with the true pi
    pitch, yaw, roll = torch.tensor([10.0]), torch.tensor([-20.0]), torch.tensor([30.0])
    rx = rotation_matrix(yaw=zero, pitch=pitch, roll=zero)
    ry = rotation_matrix(yaw=yaw, pitch=zero, roll=zero)
    rz = rotation_matrix(yaw=zero, pitch=zero, roll=roll)
    torch.testing.assert_close(rotation_matrix(yaw, pitch, roll), rx @ ry @ rz)
    full = rotation_matrix(yaw, pitch, roll)[0].double()
    torch.testing.assert_close(full @ full.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)


def test_keypoint_transformation_keeps_only_t_y_and_does_not_mutate() -> None:
    generator = torch.Generator().manual_seed(1)
    kp = torch.rand(1, 15, 3, generator=generator)
    motion = MappingOutput(*(torch.randn(2, n, generator=generator) for n in (66, 66, 66, 3, 45)))
    saved = [tensor.clone() for tensor in motion]
    out = keypoint_transformation(kp, motion)
    for before, after in zip(saved, motion, strict=True):
        assert torch.equal(before, after)
    assert out.shape == (2, 15, 3)
    yaw, pitch, roll = (degrees_from_bins(x) for x in (motion.yaw, motion.pitch, motion.roll))
    shifted_t = motion.t.clone()
    shifted_t[:, 0] += 5.0
    shifted_t[:, 2] -= 5.0
    again = keypoint_transformation_degrees(kp, yaw, pitch, roll, t=shifted_t, exp=motion.exp)
    torch.testing.assert_close(again, out)
    r = rotation_matrix(yaw, pitch, roll)
    manual = torch.einsum("bij,bkj->bki", r, kp.expand(2, -1, -1))
    manual = manual + motion.t[:, None, :] * torch.tensor([0.0, 1.0, 0.0])
    manual = manual + motion.exp.view(2, 15, 3)
    torch.testing.assert_close(out, manual)


# --- face alignment -----------------------------------------------------------------------------


def test_fit_camera_recovers_a_known_projection() -> None:
    scale, tx, ty = 90.0, 120.5, 101.25
    points = STANDARD_POINTS_3D[:, :2] * scale + np.array([tx, ty])
    fitted = fit_camera(points)
    assert fitted == pytest.approx((scale, tx, ty), rel=1e-9)


def test_align_face_crops_224_and_reports_params() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    points = STANDARD_POINTS_3D[:, :2] * 120.0 + np.array([150.0, 150.0])
    aligned = align_face(image, points)
    assert aligned.image.shape == (224, 224, 3)
    assert aligned.scale == pytest.approx(102.0 / 120.0)
    assert aligned.params.dtype == np.float32
    tensor = aligned.tensor()
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min().item() and tensor.max().item() <= 1.0


def test_five_points_from_68_flips_y() -> None:
    lm = np.zeros((68, 2))
    lm[36], lm[39], lm[42], lm[45] = (10, 20), (20, 20), (40, 22), (50, 22)
    lm[30], lm[48], lm[54] = (30, 40), (15, 60), (45, 60)
    points = five_points_from_68(lm, height=100)
    np.testing.assert_allclose(points, [[15, 79], [45, 77], [30, 59], [15, 39], [45, 39]])


def test_coeffs_73_layout() -> None:
    coeffs = torch.arange(257, dtype=torch.float32)[None]
    params = torch.tensor([0.5, 100.0, 110.0])
    out = coeffs_73(coeffs, params)[0]
    torch.testing.assert_close(out[:64], torch.arange(80, 144, dtype=torch.float32))
    torch.testing.assert_close(out[64:67], torch.arange(224, 227, dtype=torch.float32))
    torch.testing.assert_close(out[67:70], torch.arange(254, 257, dtype=torch.float32))
    torch.testing.assert_close(out[70:], params)
