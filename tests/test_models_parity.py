"""Our networks against the official golden data (seed-0 synthetic checkpoint), via export.parity.

Tolerances: the official golden data's recommendations (tests/data/README.md). The renderer
networks (KPDetector, generator) and the end-to-end frames are checked by the one slow test that
runs the whole ``check-parity`` command. A skipped check fails every test that relies on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from export import parity  # noqa: E402
from export.golden import load_golden  # noqa: E402
from export.parity import (  # noqa: E402
    CHECK_GROUPS,
    ParityEngine,
    ParityResult,
    compare,
    run_checks,
    skipped,
)
from export.tolerance import Tolerance  # noqa: E402

pytestmark = pytest.mark.neural

OUR_GROUPS = ("face_align", "face_recon", "expnet", "mapping", "keypoints")


def _by_name(results: list[ParityResult]) -> dict[str, ParityResult]:
    return {result.name: result for result in results}


@pytest.fixture(scope="module")
def engine_seed0(synthetic_checkpoints: Path, golden: dict[str, np.ndarray]) -> ParityEngine:
    networks = parity.networks_for(golden, OUR_GROUPS)
    return parity.make_engine("torch", synthetic_checkpoints, 256, networks)


@pytest.fixture(scope="module")
def results_seed0(
    engine_seed0: ParityEngine, golden: dict[str, np.ndarray]
) -> dict[str, ParityResult]:
    return _by_name(run_checks(golden, engine_seed0, OUR_GROUPS))


@pytest.mark.parametrize(
    "name",
    [
        "face_align",
        "face_recon",
        "source_coeff_73",
        "expnet",
        "mapping70_logits",
        "mapping70_t_exp",
        "mapping73_logits",
        "mapping73_t_exp",
        "keypoints70",
        "keypoints73",
    ],
)
def test_network_matches_golden(results_seed0: dict[str, ParityResult], name: str) -> None:
    result = results_seed0[name]
    assert result.ok is True, f"{name}: max |diff| {result.max_abs_diff} {result.note}"
    assert result.max_abs_diff is not None
    assert result.max_abs_diff <= result.tolerance.atol


def test_mapping_batch_layout_is_frame_ordered(golden: dict[str, np.ndarray]) -> None:
    # The centre column of window i is frame i's coefficients: a fake "network" that returns
    # it must come back in frame order.
    def centre(coeffs: np.ndarray) -> dict[str, np.ndarray]:
        middle = coeffs[:, :, coeffs.shape[2] // 2]
        return {key: middle for key in parity.MAPPING_OUTPUTS}

    frames = golden["coeffs_70"].shape[0]
    out = parity._run_mapping_batched(centre, golden["map70_target_in_batched"], frames)
    np.testing.assert_array_equal(out["yaw"], golden["coeffs_70"])


def test_e2e_targets_follow_the_batch_rows(golden: dict[str, np.ndarray]) -> None:
    steps = golden["e2e_target_semantics"].shape[1]
    targets = parity.e2e_targets(golden)
    assert ("e2e_frames_0_3", 0, 0, 3) in targets
    assert ("e2e_frames_13_16", 1, 13 - steps, 16 - steps) in targets


def test_wrong_weights_fail(
    synthetic_checkpoints_for_seed: Callable[[int], Path], golden: dict[str, np.ndarray]
) -> None:
    engine = parity.make_engine(
        "torch", synthetic_checkpoints_for_seed(7), 256, ["audio2exp", "mapping"]
    )
    results = _by_name(run_checks(golden, engine, ["expnet", "mapping"]))
    assert results["expnet"].ok is False
    assert results["mapping70_logits"].ok is False
    # the 73-d net was not loaded: reported as skipped, never as passed
    assert results["mapping73_logits"].ok is None
    assert not parity.all_ok(list(results.values()))
    assert not parity.all_ok([results["mapping73_logits"]])


def test_only_checks_that_ran_and_passed_are_ok() -> None:
    passed = compare("x", np.zeros(3), np.zeros(3), Tolerance(1e-6))
    assert parity.all_ok([passed])
    assert not parity.all_ok([passed, skipped("y", Tolerance(1e-6), "engine lacks y")])
    assert not parity.all_ok([])
    assert "SKIPPED (engine lacks y)" in parity.format_table(
        [skipped("y", Tolerance(1e-6), "engine lacks y")]
    )


def test_compare_metrics() -> None:
    expected = np.zeros(1000, dtype=np.float32)
    actual = expected.copy()
    actual[:2] = 5e-3  # 0.2 % of values off by more than 1e-3
    tol = Tolerance(2e-2, mean_abs=1e-4, frac_off=1e-3)
    result = compare("x", actual, expected, tol)
    assert result.ok is False and result.frac_off == pytest.approx(0.002)
    assert compare("x", actual, expected, Tolerance(2e-2, mean_abs=1e-4, frac_off=5e-3)).ok is True
    assert compare("x", actual[:10], expected, tol).ok is False  # shape
    actual[5] = np.nan
    assert compare("x", actual, expected, Tolerance(1.0)).ok is False
    entry = result.to_json()
    assert set(entry) >= {"max_abs_diff", "tolerance", "ok", "mean_abs_diff", "frac_off"}


def test_unknown_engine_is_a_clear_error() -> None:
    from msadtalker.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown engine backend 'tpu'"):
        parity.make_engine("tpu", None, 256, [])


def test_cli_help_lists_every_check() -> None:
    from streamer.commands.check_parity import CHECKS_HELP

    assert [name.strip() for name in CHECKS_HELP.split(",")] == list(CHECK_GROUPS)


def _cli(argv: list[str]) -> int:
    import argparse

    from streamer.commands import check_parity

    parser = argparse.ArgumentParser(prog="msadtalker")
    check_parity.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


def test_cli_fast_subset(
    synthetic_checkpoints: Path,
    golden_npz_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "parity.json"
    code = _cli(
        [
            "check-parity",
            "--checkpoints",
            str(synthetic_checkpoints),
            "--golden",
            str(golden_npz_path),
            "--only",
            "face_align,keypoints",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) == {"face_align", "keypoints70", "keypoints73"}
    assert all(entry["ok"] is True for entry in report.values())
    assert "keypoints73" in capsys.readouterr().out


def test_cli_reads_the_official_and_the_compact_golden_alike(
    synthetic_checkpoints: Path, golden_npz_path: Path, tmp_path: Path
) -> None:
    official = tmp_path / "golden_seed0.npz"  # the official layout: plain float arrays
    arrays: dict[str, Any] = load_golden(golden_npz_path)
    np.savez(official, **arrays)
    reports = []
    for golden in (official, golden_npz_path):
        out = tmp_path / f"{golden.stem}.json"
        argv = ["check-parity", "--checkpoints", str(synthetic_checkpoints), "--golden"]
        argv += [str(golden), "--only", "face_align,mel,keypoints", "--json", str(out)]
        assert _cli(argv) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0] == reports[1]
    assert set(reports[0]) == {"face_align", "mel", "keypoints70", "keypoints73"}


def test_cli_user_errors_are_input_errors(golden_npz_path: Path, tmp_path: Path) -> None:
    from msadtalker.errors import CheckpointError, ConfigError

    golden = str(golden_npz_path)
    with pytest.raises(CheckpointError, match="empty"):
        _cli(["check-parity", "--checkpoints", str(tmp_path), "--golden", golden])
    with pytest.raises(ConfigError, match="--engine tensorrt"):
        _cli(["check-parity", "--golden", golden, "--engine", "tensorrt"])
    with pytest.raises(ConfigError, match="--only: unknown checks vae"):
        _cli(["check-parity", "--golden", golden, "--only", "expnet,vae"])


@pytest.mark.slow
def test_check_parity_command_end_to_end(
    synthetic_checkpoints: Path, golden_npz_path: Path, tmp_path: Path
) -> None:
    """Every check, generator and e2e included (minutes on 2 cores)."""
    out = tmp_path / "parity.json"
    code = _cli(
        [
            "check-parity",
            "--checkpoints",
            str(synthetic_checkpoints),
            "--golden",
            str(golden_npz_path),
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    not_passed = {name: entry for name, entry in report.items() if entry["ok"] is not True}
    assert not not_passed  # a failed or skipped check alike
    assert code == 0
    assert len(report) == 17  # every check of the golden file ran
    assert report["e2e_frames"]["frac_off"] < 5e-3
