"""``msadtalker bench engines`` (export.bench_engines, streamer/bench/engines.py).

The small per-frame networks on the torch engine at batches 1 and 2: the rows, the whole
frame, the ratio to the FP32 batch-1 baseline (1.0 at batch 1 by construction) and the flag
checks. No timing is asserted beyond being positive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from export.bench_engines import WHOLE_FRAME, EngineTiming, bench_engines  # noqa: E402
from msadtalker.errors import ConfigError  # noqa: E402


def _cli(argv: list[str]) -> int:
    from streamer.commands import bench

    parser = argparse.ArgumentParser(prog="msadtalker")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.run(args))


@pytest.mark.neural
def test_bench_engines_rows_and_json(
    synthetic_checkpoints: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "engines.json"
    argv = ["bench", "engines", "--engine", "torch", "--device", "cpu", "--batch", "2,1"]
    argv += ["--networks", "mapping,audio2exp", "--repeats", "1", "--warmup", "0"]
    argv += ["--checkpoints", str(synthetic_checkpoints), "--json", str(out)]
    assert _cli(argv) == 0
    rows: dict[str, Any] = json.loads(out.read_text())["rows"]
    assert set(rows) == {
        f"torch.fp32.b{b}.{n}" for b in (1, 2) for n in ("mapping", "audio2exp", WHOLE_FRAME)
    }
    for key, row in rows.items():
        assert row["ms_per_frame"] > 0 and row["frames_per_s"] > 0
        assert row["streams_25fps"] == pytest.approx(row["frames_per_s"] / 25, rel=1e-2)
        if ".b1." in key:
            assert row["ratio_to_fp32_eager_b1"] == 1.0
    whole = rows[f"torch.fp32.b2.{WHOLE_FRAME}"]
    parts = [rows[f"torch.fp32.b2.{n}"]["ms_per_call"] for n in ("mapping", "audio2exp")]
    assert whole["ms_per_call"] == pytest.approx(sum(parts), rel=1e-2)
    assert "whole_frame" in capsys.readouterr().out


def test_bench_engines_flag_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--batch"):
        _cli(["bench", "engines", "--batch", "0,2"])
    with pytest.raises(ConfigError, match="--networks: unknown kp_extractor"):
        _cli(["bench", "engines", "--networks", "kp_extractor"])
    with pytest.raises(ConfigError, match="--engine triton needs --engine-url"):
        _cli(["bench", "engines", "--engine", "triton"])
    with pytest.raises(ConfigError, match="options of the torch engine"):
        _cli(["bench", "engines", "--engine", "onnxruntime", "--precision", "bf16"])


def test_ratios_use_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: the baseline costs 10 ms per row, the engine 4 ms per call whatever B."""
    import export.bench_engines as bench

    per_row = {"base": 0.010, "fast": 0.0}
    per_call = {"base": 0.0, "fast": 0.004}

    class _Set:
        def __init__(self, name: str) -> None:
            self.backend = name
            self.device = "cpu"

    def fake_measure(engines: Any, network: str, size: int, batch: int, *_: Any) -> float:
        return per_call[engines.backend] + per_row[engines.backend] * batch

    monkeypatch.setattr(bench, "measure_network", fake_measure)
    fast: Any = _Set("fast")
    base: Any = _Set("base")
    timings: list[EngineTiming] = bench_engines(fast, base, 256, [1, 4], ["mapping"])
    by = {(t.engine, t.batch, t.network): t for t in timings}
    assert by[("base", 1, "mapping")].ratio_to_fp32_eager_b1 == pytest.approx(1.0)
    assert by[("fast", 1, "mapping")].ratio_to_fp32_eager_b1 == pytest.approx(2.5)
    assert by[("fast", 4, "mapping")].ratio_to_fp32_eager_b1 == pytest.approx(10.0)
    assert by[("fast", 4, WHOLE_FRAME)].streams_25fps == pytest.approx(1000 / 25)
