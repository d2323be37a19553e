"""The network benchmark runs and reports what it measured (no timing assertions)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from export.bench_networks import (  # noqa: E402
    OFFICIAL_MS_2_THREADS,
    available_networks,
    benchmark_networks,
    format_timings,
)

pytestmark = pytest.mark.neural


def test_benchmark_reports_each_network_and_thread_count() -> None:
    timings = benchmark_networks(["mapping", "audio2exp"], threads=(1, 2), repeats=2, warmup=0)
    assert [(t.network, t.threads) for t in timings] == [
        ("mapping", 1),
        ("mapping", 2),
        ("audio2exp", 1),
        ("audio2exp", 2),
    ]
    assert timings[0].input_shapes == [[1, 70, 27]]
    assert timings[2].input_shapes[0] == [10, 1, 80, 16]  # the official ExpNet chunk
    assert all(t.median_ms > 0 and t.p95_ms >= t.median_ms * 0.5 for t in timings)
    assert timings[0].reference_ms_2_threads == OFFICIAL_MS_2_THREADS["mapping"]
    json.dumps([t.to_json() for t in timings])
    assert "mapping" in format_timings(timings)


def test_renderer_networks_are_optional() -> None:
    assert available_networks(False) == ["face_3drecon", "audio2exp", "mapping", "mapping_full"]
    assert set(available_networks(True)) <= set(OFFICIAL_MS_2_THREADS)
