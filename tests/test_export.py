"""ONNX export, the manifest, the onnxruntime backend and the (unverified) TensorRT path.

The neural tests export the small networks of the seed-0 synthetic checkpoints once per
module and compare onnxruntime with torch, and with the official golden data through
``check-parity --engine onnxruntime``. The generator's split views are exported at render
size 128 (the generator is fully convolutional; same weights, same graph, a quarter of the
pixels) to keep CPU time down; docs/export.md has the 256 figures.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engines.base import EngineUnavailable  # noqa: E402
from engines.contracts import NETWORKS, contract_for  # noqa: E402
from engines.manifest import (  # noqa: E402
    MANIFEST_NAME,
    ExportManifest,
    ManifestError,
    read_manifest,
    write_manifest,
)
from engines.onnx_engine import (  # noqa: E402
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxEngineSet,
    select_providers,
)
from engines.tensorrt_engine import cuda_device, import_tensorrt, optimization_profile  # noqa: E402
from export.onnx import (  # noqa: E402
    DEFAULT_NETWORKS,
    TOLERANCES,
    check_parity,
    compare_outputs,
    export_checkpoints,
    export_network,
    resized_inputs,
)
from export.tolerance import Tolerance  # noqa: E402
from msadtalker.models.contract import ExportContract, TensorSpec  # noqa: E402
from streamer.cli import main  # noqa: E402

SMALL = ("audio2exp", "mapping", "mapping_full", "face_3drecon", "kp_extractor")


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("msadtalker: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(autouse=True)
def _no_env_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSADTALKER_CHECKPOINTS", raising=False)
    monkeypatch.delenv("MSADTALKER_EXPORTS", raising=False)


# --- contracts, profiles, inputs (no weights) --------------------------------------------------


def test_every_network_has_a_contract_with_unique_file_names() -> None:
    for network in NETWORKS:
        contract = contract_for(network, 256)
        assert contract.inputs and contract.outputs
    assert set(DEFAULT_NETWORKS) <= set(NETWORKS)
    assert set(TOLERANCES) == set(NETWORKS)
    with pytest.raises(ValueError, match="unknown network"):
        contract_for("audio2pose", 256)


def test_cli_help_names_match_the_export_defaults() -> None:
    from streamer.commands.export import ALL_NETWORKS_HELP, DEFAULT_NETWORKS_HELP

    assert DEFAULT_NETWORKS_HELP.split() == list(DEFAULT_NETWORKS)
    assert sorted(ALL_NETWORKS_HELP.split()) == sorted(NETWORKS)


def test_profile_from_contract_dynamic_axes() -> None:
    expnet = optimization_profile(contract_for("audio2exp", 256))
    # Example batch 10 is above the default maximum: the maximum never drops below it.
    assert expnet["mel"].min == (1, 1, 80, 16)
    assert expnet["mel"].opt == (10, 1, 80, 16)
    assert expnet["mel"].max == (10, 1, 80, 16)
    mapping = optimization_profile(contract_for("mapping_full", 256), {"batch": 8})
    assert (mapping["coeffs"].min, mapping["coeffs"].opt, mapping["coeffs"].max) == (
        (1, 73, 27),
        (2, 73, 27),
        (8, 73, 27),
    )
    render = optimization_profile(contract_for("generator_render", 512), default_max=3)
    assert set(render) == {"source_volume", "source_compressed", "kp_source", "kp_driving"}
    assert render["source_volume"].max == (3, 32, 16, 128, 128)
    assert render["kp_driving"].min == (1, 15, 3)


def test_profile_rejects_inconsistent_examples_and_bad_limits() -> None:
    contract = ExportContract(
        name="odd",
        inputs=(
            TensorSpec("a", (2, 3), {0: "batch"}),
            TensorSpec("b", (5, 3), {0: "batch"}),
        ),
        outputs=(TensorSpec("y", (2, 3), {0: "batch"}),),
        example_inputs=lambda: (torch.zeros(2, 3), torch.zeros(5, 3)),
    )
    with pytest.raises(ValueError, match="example sizes 2 and 5"):
        optimization_profile(contract)
    with pytest.raises(ValueError, match=">= 1"):
        optimization_profile(contract_for("mapping", 256), {"batch": 0})


def test_resized_inputs_grow_the_batch_with_distinct_rows() -> None:
    contract = contract_for("kp_extractor", 128)
    (image,) = resized_inputs(contract, {"batch": 3})
    assert image.shape == (3, 3, 128, 128)
    assert not torch.equal(image[0], image[1]) and not torch.equal(image[1], image[2])
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    (small,) = resized_inputs(contract_for("audio2exp", 256), {"batch": 4})[:1]
    assert small.shape == (4, 1, 80, 16)


def test_thresholded_tolerance_allows_few_flips_but_not_drift() -> None:
    contract = contract_for("mapping", 256)
    tolerance = TOLERANCES["generator_render"]

    def reference(inputs: Any) -> list[np.ndarray]:
        rows = inputs[0].shape[0]
        widths = (66, 66, 66, 3, 45)  # yaw, pitch, roll, t, exp
        return [np.full((rows, width), 0.5, np.float32) for width in widths]

    def flipped(inputs: Any) -> list[np.ndarray]:
        outputs = [o.copy() for o in reference(inputs)]
        outputs[0][0, 0] += 5e-3  # one value, as a flipped mask entry does
        return outputs

    def drifted(inputs: Any) -> list[np.ndarray]:
        return [o + 3e-4 for o in reference(inputs)]

    assert compare_outputs(reference, flipped, contract, tolerance).ok is True
    drift = compare_outputs(reference, drifted, contract, tolerance)
    assert drift.ok is False and "mean |diff|" in drift.describe()
    strict = compare_outputs(reference, flipped, contract, Tolerance(1e-6, rtol=1e-4))
    assert strict.ok is False and strict.batch_sizes == (2, 3)


# --- unavailable paths --------------------------------------------------------------------------


def test_tensorrt_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import now raises ImportError
    with pytest.raises(EngineUnavailable, match="tensorrt is not installed") as info:
        import_tensorrt()
    assert "\n" not in str(info.value)
    from engines.registry import open_engines

    with pytest.raises(EngineUnavailable, match="tensorrt"):
        open_engines("tensorrt", None, 256, ["audio2exp"])


def test_tensorrt_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineUnavailable, match="CUDA only"):
        cuda_device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineUnavailable, match="no CUDA device"):
        cuda_device("auto")


def test_export_tensorrt_without_tensorrt_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code, _, err = _cli(
        ["export", "--format", "tensorrt", "--checkpoints", str(tmp_path), "--out", str(tmp_path)],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "--format tensorrt", "tensorrt is not installed")
    assert not any(tmp_path.iterdir())  # refused before exporting anything


def test_onnxruntime_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EngineUnavailable, match="onnxruntime is not installed") as info:
        OnnxEngineSet(None, 256, ["audio2exp"])
    assert "\n" not in str(info.value)


def test_provider_selection() -> None:
    assert select_providers("auto", [CPU_PROVIDER]) == [CPU_PROVIDER]
    assert select_providers("auto", [CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert select_providers("cpu", [CUDA_PROVIDER, CPU_PROVIDER]) == [CPU_PROVIDER]
    with pytest.raises(EngineUnavailable, match="no CUDA provider"):
        select_providers("cuda", [CPU_PROVIDER])
    with pytest.raises(EngineUnavailable, match="unknown device"):
        select_providers("tpu", [CPU_PROVIDER])


# --- command-line input errors ------------------------------------------------------------------


def test_export_without_checkpoints_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _cli(["export", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    _one_line_error(err, "no checkpoint directory")
    code, _, err = _cli(
        ["export", "--checkpoints", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2
    _one_line_error(err, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(
        ["export", "--checkpoints", str(empty), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2
    _one_line_error(err, "empty")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_export_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _cli(["export", "--networks", "audio2pose", "--out", str(tmp_path)], capsys)
    assert code == 2
    _one_line_error(err, "--networks", "audio2pose")
    code, _, err = _cli(
        ["export", "--networks", "generator_render", "--opset", "17", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 2
    _one_line_error(err, "--opset 17", "generator_render", "20")


def test_export_unwritable_out_exits_2(
    synthetic_checkpoints: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    for out in (a_file, a_file / "sub"):
        code, _, err = _cli(
            [
                "export",
                "--checkpoints",
                str(synthetic_checkpoints),
                "--out",
                str(out),
                "--networks",
                "audio2exp",
            ],
            capsys,
        )
        assert code == 2
        _one_line_error(err, f"--out {out}")


# --- manifest ------------------------------------------------------------------------------------


def test_manifest_round_trip_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ManifestError, match="format version 99"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format_version": 1, "size": 256}))
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(tmp_path)
    manifest = ExportManifest(256, "abc", ("x.safetensors",), "now", {"torch": "2"})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path).to_json() == manifest.to_json()


# --- exported small networks (neural) -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_export(
    synthetic_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, list[Any]]]:
    out = tmp_path_factory.mktemp("onnx_small")
    results = export_checkpoints(synthetic_checkpoints, out, 256, SMALL)
    yield out, results
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.neural
@pytest.mark.slow
def test_small_networks_export_and_match_torch(small_export: tuple[Path, list[Any]]) -> None:
    out, results = small_export
    assert [r.network for r in results] == list(SMALL)
    manifest = read_manifest(out)
    assert set(manifest.networks) == set(SMALL)
    for result in results:
        assert result.parity is not None and result.parity.ok, result
        assert len(result.parity.batch_sizes) == 2  # example batch and one larger
        entry = manifest.networks[result.network]
        assert entry.opset == 20 and (out / entry.file).is_file()
        assert entry.parity == result.parity
    # The check can fail: the same file against a module with other (untrained) weights.
    from msadtalker.models.mapping import MappingNet

    contract = contract_for("mapping", 256)
    other = check_parity(
        out / "mapping.onnx", MappingNet(70).eval(), contract, TOLERANCES["mapping"]
    )
    assert other.ok is False and other.max_abs_diff > 100 * other.tolerance


@pytest.mark.neural
@pytest.mark.slow
def test_onnxruntime_engines_match_torch_engines(
    small_export: tuple[Path, list[Any]], synthetic_checkpoints: Path
) -> None:
    from engines.registry import open_engines

    out, _ = small_export
    ort_set = OnnxEngineSet(synthetic_checkpoints, 256, SMALL, "cpu", exports=out)
    torch_set = open_engines("torch", synthetic_checkpoints, 256, SMALL, "cpu")
    assert ort_set.device == "cpu"
    for network in SMALL:
        contract = contract_for(network, 256)
        # Vector networks at a batch neither the example nor the export check used; the image
        # networks (cost ~1 s per image on CPU) at the example batch with other inputs.
        example = contract.inputs[0].shape[0]
        batch = example if network in ("face_3drecon", "kp_extractor") else example + 2
        inputs = [t.numpy() for t in resized_inputs(contract, {"batch": batch}, seed=5)]
        got = ort_set.engine(network).run(*inputs)
        want = torch_set.engine(network).run(*inputs)
        assert set(got) == set(contract.output_names)
        scale = max(float(np.abs(v).max()) for v in want.values())
        bound = TOLERANCES[network].bound(scale)
        for name in contract.output_names:
            assert got[name].shape[0] == batch
            assert float(np.abs(got[name] - want[name]).max()) <= bound, (network, name)
    _, ref_exp, blink = (t.numpy() for t in contract_for("audio2exp", 256).example_inputs())
    with pytest.raises(ValueError, match="input mel has shape"):
        ort_set.engine("audio2exp").run(np.zeros((10, 1, 80, 15), np.float32), ref_exp, blink)
    with pytest.raises(ValueError, match="got 2 inputs, expected 3"):
        ort_set.engine("audio2exp").run(ref_exp, blink)
    ort_set.close()
    torch_set.close()


@pytest.mark.neural
@pytest.mark.slow
def test_onnxruntime_matches_the_official_golden_data(
    small_export: tuple[Path, list[Any]],
    synthetic_checkpoints: Path,
    golden_npz_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = small_export
    monkeypatch.setenv("MSADTALKER_EXPORTS", str(out))
    code, stdout, err = _cli(
        [
            "check-parity",
            "--checkpoints",
            str(synthetic_checkpoints),
            "--golden",
            str(golden_npz_path),
            "--engine",
            "onnxruntime",
            "--only",
            "expnet,mapping,face_recon,kp_detector",
        ],
        capsys,
    )
    assert code == 0, stdout + err
    assert "all checks passed" in stdout and "SKIPPED" not in stdout


def _copy_export(source: Path, target: Path, networks: tuple[str, ...] = ("audio2exp",)) -> Path:
    """A private copy of part of an export (files copied: tests may damage them)."""
    target.mkdir()
    manifest = read_manifest(source)
    for network in networks:
        shutil.copy2(source / manifest.networks[network].file, target)
    kept = {name: manifest.networks[name] for name in networks}
    write_manifest(target, replace(manifest, networks=kept))
    return target


def _edit_manifest(directory: Path, edit: Any) -> None:
    path = directory / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.neural
@pytest.mark.slow
def test_mismatched_exports_are_refused(
    small_export: tuple[Path, list[Any]], synthetic_checkpoints: Path, tmp_path: Path
) -> None:
    source, _ = small_export

    def open_set(directory: Path, networks: tuple[str, ...] = ("audio2exp",)) -> OnnxEngineSet:
        return OnnxEngineSet(synthetic_checkpoints, 256, networks, "cpu", exports=directory)

    good = _copy_export(source, tmp_path / "good")
    assert set(
        open_set(good)
        .engine("audio2exp")
        .run(*[t.numpy() for t in contract_for("audio2exp", 256).example_inputs()])
    ) == {"exp"}

    other = _copy_export(source, tmp_path / "other")
    _edit_manifest(other, lambda d: d.update(checkpoint_fingerprint="0123456789abcdef"))
    with pytest.raises(ManifestError, match="exported from other checkpoints") as info:
        open_set(other)
    assert "\n" not in str(info.value)

    sized = _copy_export(source, tmp_path / "sized")
    _edit_manifest(sized, lambda d: d.update(size=512))
    with pytest.raises(ManifestError, match="render size 512, not 256"):
        open_set(sized)

    shape = _copy_export(source, tmp_path / "shape")
    _edit_manifest(
        shape, lambda d: d["networks"]["audio2exp"]["inputs"][0].update(shape=[10, 1, 80, 20])
    )
    with pytest.raises(ManifestError, match="input mel .* the contract now has mel"):
        open_set(shape)

    failed = _copy_export(source, tmp_path / "failed")
    _edit_manifest(failed, lambda d: d["networks"]["audio2exp"]["parity"].update(ok=False))
    with pytest.raises(ManifestError, match="failed its parity check"):
        open_set(failed)

    missing = _copy_export(source, tmp_path / "missing")
    (missing / "audio2exp.onnx").unlink()
    with pytest.raises(ManifestError, match="audio2exp.onnx is missing"):
        open_set(missing)

    with pytest.raises(ManifestError, match="mapping is not exported .* --networks mapping"):
        open_set(good, ("audio2exp", "mapping"))

    corrupt = _copy_export(source, tmp_path / "corrupt")
    path = corrupt / "audio2exp.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="corrupt or was replaced"):
        open_set(corrupt)

    garbage = _copy_export(source, tmp_path / "garbage")
    (garbage / "audio2exp.onnx").write_bytes(b"not an onnx file")
    from engines.manifest import file_sha256

    def point_at_garbage(d: dict[str, Any]) -> None:
        d["networks"]["audio2exp"].update(bytes=16, sha256=file_sha256(garbage / "audio2exp.onnx"))

    _edit_manifest(garbage, point_at_garbage)
    with pytest.raises(EngineUnavailable, match="cannot load .*audio2exp.onnx") as load_error:
        open_set(garbage).engine("audio2exp")
    assert "\n" not in str(load_error.value)

    with pytest.raises(ManifestError, match="does not exist"):
        open_set(tmp_path / "nowhere")


@pytest.mark.neural
def test_export_command_writes_files_manifest_and_json(
    synthetic_checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exports" / "new"  # parents are created
    report = tmp_path / "export.json"
    code, stdout, err = _cli(
        [
            "export",
            "--checkpoints",
            str(synthetic_checkpoints),
            "--out",
            str(out),
            "--networks",
            "mapping",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 0, stdout + err
    assert "mapping" in stdout and "max |diff|" in stdout
    rows = json.loads(report.read_text())["networks"]
    assert [row["network"] for row in rows] == ["mapping"] and rows[0]["ok"] is True
    manifest = read_manifest(out)
    assert list(manifest.networks) == ["mapping"]
    assert manifest.versions["torch"] == torch.__version__
    # A second export into the same directory adds to the manifest.
    code, _, _ = _cli(
        [
            "export",
            "--checkpoints",
            str(synthetic_checkpoints),
            "--out",
            str(out),
            "--networks",
            "audio2exp",
            "--skip-parity",
        ],
        capsys,
    )
    assert code == 0
    manifest = read_manifest(out)
    assert set(manifest.networks) == {"mapping", "audio2exp"}
    assert manifest.networks["audio2exp"].parity is None


# --- generator views (neural, slow) ---------------------------------------------------------------


@pytest.mark.neural
@pytest.mark.slow
def test_generator_views_export_and_match_torch(
    synthetic_checkpoints: Path, tmp_path: Path
) -> None:
    from msadtalker.models.generator import (
        FrameRenderer,
        OcclusionAwareSPADEGenerator,
        SourceEncoder,
    )
    from msadtalker.weights import build_network, load_weights

    generator = build_network("generator", load_weights(synthetic_checkpoints, 256, ["generator"]))
    assert isinstance(generator, OcclusionAwareSPADEGenerator)
    size = 128
    encoder = export_network(
        "generator_source_encoder",
        SourceEncoder(generator).eval(),
        size,
        tmp_path,
        grow_batch=False,
    )
    renderer = export_network(
        "generator_render", FrameRenderer(generator).eval(), size, tmp_path, grow_batch=False
    )
    for result in (encoder, renderer):
        assert result.parity is not None and result.parity.ok, result.parity
    assert renderer.parity is not None and renderer.parity.reference_scale <= 1.0  # an image

    # Chained as the live path runs them: encode once, render a frame from its outputs.
    import onnxruntime

    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    kp_source = torch.rand(2, 15, 3, generator=torch.Generator().manual_seed(4)) * 1.6 - 0.8
    kp_driving = kp_source + 0.05
    enc = onnxruntime.InferenceSession(str(encoder.path), providers=["CPUExecutionProvider"])
    volume, compressed = enc.run(None, {"source_image": image.numpy()})
    ren = onnxruntime.InferenceSession(str(renderer.path), providers=["CPUExecutionProvider"])
    # batch 2 keypoint pairs on a batch-2 source (the dynamic axis of every input)
    feeds = {
        "source_volume": np.repeat(volume, 2, axis=0),
        "source_compressed": np.repeat(compressed, 2, axis=0),
        "kp_source": kp_source.numpy(),
        "kp_driving": kp_driving.numpy(),
    }
    (frames,) = ren.run(None, feeds)
    with torch.inference_mode():
        expected = generator(image.expand(2, -1, -1, -1), kp_source, kp_driving).prediction
    assert frames.shape == (2, 3, size, size)
    assert float(np.abs(frames - expected.numpy()).max()) <= TOLERANCES["generator"].bound(1.0)


# --- TensorRT control flow against a stand-in module ------------------------------------------
# TensorRT cannot be installed here; these run our builder's and checks' own logic against a
# minimal fake of the TensorRT 10 calls it makes. They catch our mistakes, not TensorRT's.


class _FakeTensorRT:
    __version__ = "10.0.0"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"

    def __init__(self, parse_ok: bool = True) -> None:
        self.parse_ok = parse_ok
        self.calls: list[tuple[Any, ...]] = []
        fake = self

        class Profile:
            def set_shape(self, *args: Any) -> None:
                fake.calls.append(("set_shape", *args))

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag: str) -> None:
                fake.calls.append(("flag", flag))

            def add_optimization_profile(self, profile: Profile) -> None:
                fake.calls.append(("profile",))

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> str:
                fake.calls.append(("network", flags))
                return "network"

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: str, config: Config) -> bytes:
                return b"PLAN"

        class Error:
            def desc(self) -> str:
                return "GridSample: only 4-D input is supported"

        class OnnxParser:
            num_errors = 1

            def __init__(self, network: str, logger: Any) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse", path))
                return fake.parse_ok

            def get_error(self, index: int) -> Error:
                return Error()

        self.Builder = Builder
        self.OnnxParser = OnnxParser


def test_build_plan_flow_with_a_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engines.tensorrt_engine import build_plan

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    contract = contract_for("mapping", 256)
    plan = tmp_path / "mapping.plan"
    ranges = build_plan(
        tmp_path / "mapping.onnx", contract, plan, fp16=True, max_sizes={"batch": 6}
    )
    assert plan.read_bytes() == b"PLAN" and not list(tmp_path.glob(".*partial"))
    assert ("set_shape", "coeffs", (1, 70, 27), (2, 70, 27), (6, 70, 27)) in fake.calls
    assert ("flag", "fp16") in fake.calls and ("network", 0) in fake.calls
    assert ranges["coeffs"].max == (6, 70, 27)

    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTensorRT(parse_ok=False))
    with pytest.raises(EngineUnavailable, match="cannot parse .*: GridSample: only 4-D") as info:
        build_plan(tmp_path / "g.onnx", contract, tmp_path / "g.plan")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "g.plan").exists()

    old = _FakeTensorRT()
    old.__version__ = "8.6.1"
    monkeypatch.setitem(sys.modules, "tensorrt", old)
    with pytest.raises(
        EngineUnavailable, match="TensorRT 8.6.1 is installed, this backend needs 10"
    ):
        import_tensorrt()


def test_plans_from_elsewhere_are_refused(tmp_path: Path) -> None:
    from engines.manifest import NetworkEntry, ParityEntry, PlanEntry
    from engines.tensorrt_engine import check_plan

    plan = PlanEntry("audio2exp.plan", "0" * 64, 4, "10.3.0", "NVIDIA H100", "9.0", "fp32", {})
    entry = NetworkEntry(
        "audio2exp", "audio2exp.onnx", "0" * 64, 4, 20, "expnet", (), (), None, plan
    )
    gpu = ("NVIDIA H100", "9.0")
    with pytest.raises(ManifestError, match="no TensorRT plan"):
        check_plan(replace(entry, plan=None), tmp_path, "10.3.0", gpu)
    with pytest.raises(ManifestError, match="built by TensorRT 10.3.0, this is 10.4.0"):
        check_plan(entry, tmp_path, "10.4.0", gpu)
    with pytest.raises(ManifestError, match="built for NVIDIA H100 .* this GPU is NVIDIA L4"):
        check_plan(entry, tmp_path, "10.3.0", ("NVIDIA L4", "8.9"))
    failed = replace(plan, parity=ParityEntry(0.5, 1.0, 0.01, False, (1, 2)))
    with pytest.raises(ManifestError, match="failed its parity check against onnxruntime"):
        check_plan(replace(entry, plan=failed), tmp_path, "10.3.0", gpu)
    with pytest.raises(ManifestError, match="audio2exp.plan is missing"):
        check_plan(entry, tmp_path, "10.3.0", gpu)
    (tmp_path / "audio2exp.plan").write_bytes(b"PLAN")
    assert check_plan(entry, tmp_path, "10.3.0", gpu) == plan
