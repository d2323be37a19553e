"""What an engine and batching buy: ms per frame of the per-frame networks, per batch size.

``bench_engines`` times each per-frame network (``PER_FRAME_NETWORKS``: one row per video
frame) through an :class:`~engines.base.EngineSet` at each batch size B: median ms per call of
``repeats`` calls after ``warmup``, hence ms per frame (call / B), frames per second, the
implied concurrent 25-fps streams, and the ratio to the baseline: our torch FP32 eager path at
batch 1 on the same device (= the official computation), measured in the same run. The whole
frame is the sum of the networks' per-frame figures (the per-avatar source encoder and keypoint
detector run once per avatar and are not in it).

Inputs are the contracts' example inputs grown to B rows (``export.onnx.resized_inputs``):
latency does not depend on the values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engines.base import EngineSet
from engines.contracts import contract_for
from export.onnx import resized_inputs

# The networks a stream runs per frame, one row per frame: the mapping window, ExpNet (whose
# calls of 10 rows cover 10 frames) and the generator's per-frame render view.
PER_FRAME_NETWORKS = ("mapping", "audio2exp", "generator_render")
STREAM_FPS = 25.0
WHOLE_FRAME = "whole_frame"


@dataclass(frozen=True)
class EngineTiming:
    """One network (or the whole frame) at one batch size on one engine."""

    network: str
    engine: str
    device: str
    precision: str
    batch: int
    ms_per_call: float
    ms_per_frame: float
    frames_per_s: float
    streams_25fps: float
    ratio_to_fp32_eager_b1: float | None

    def to_json(self) -> dict[str, Any]:
        return {key: _round(value) for key, value in asdict(self).items()}


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def time_call(call: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def _timing(
    network: str,
    label: tuple[str, str, str],
    batch: int,
    seconds_per_call: float,
    baseline_ms_per_frame: float | None,
) -> EngineTiming:
    ms_call = seconds_per_call * 1e3
    ms_frame = ms_call / batch
    fps = 1e3 / ms_frame if ms_frame > 0 else float("inf")
    ratio = None if baseline_ms_per_frame is None else baseline_ms_per_frame / ms_frame
    return EngineTiming(network, *label, batch, ms_call, ms_frame, fps, fps / STREAM_FPS, ratio)


def measure_network(
    engines: EngineSet, network: str, size: int, batch: int, warmup: int, repeats: int
) -> float:
    """Median seconds per call of ``network`` with ``batch`` rows."""
    contract = contract_for(network, size)
    inputs = [t.numpy() for t in resized_inputs(contract, {"batch": batch})]
    engine = engines.engine(network)
    return time_call(lambda: engine.run(*inputs), warmup, repeats)


def bench_engines(
    engines: EngineSet,
    baseline: EngineSet | None,
    size: int,
    batches: Sequence[int],
    networks: Iterable[str] = PER_FRAME_NETWORKS,
    precision: str = "fp32",
    warmup: int = 1,
    repeats: int = 3,
    progress: Callable[[EngineTiming], None] | None = None,
) -> list[EngineTiming]:
    """Timings of ``networks`` on ``engines`` for each batch, plus the whole frame.

    ``baseline``: the torch FP32 engines on the same device, timed at batch 1 first; None when
    ``engines`` is that path itself (its batch-1 row is the baseline then)."""
    networks = list(networks)
    label = (engines.backend, engines.device, precision)
    reference: dict[str, float] = {}
    results: list[EngineTiming] = []

    def emit(timing: EngineTiming) -> None:
        results.append(timing)
        if progress is not None:
            progress(timing)

    if baseline is not None:
        base_label = (baseline.backend, baseline.device, "fp32")
        for network in networks:
            seconds = measure_network(baseline, network, size, 1, warmup, repeats)
            reference[network] = seconds * 1e3
            emit(_timing(network, base_label, 1, seconds, reference[network]))
        emit(_whole(results, base_label, 1, sum(reference.values())))
    if baseline is None and 1 not in batches:
        batches = [1, *batches]  # the baseline is this path's own batch 1
    for batch in sorted(batches):
        frame: list[EngineTiming] = []
        for network in networks:
            seconds = measure_network(engines, network, size, batch, warmup, repeats)
            if baseline is None and batch == 1:
                reference[network] = seconds * 1e3
            timing = _timing(network, label, batch, seconds, reference.get(network))
            frame.append(timing)
            emit(timing)
        emit(_whole(frame, label, batch, sum(reference.values()) if reference else None))
    return results


def _whole(
    parts: Sequence[EngineTiming],
    label: tuple[str, str, str],
    batch: int,
    baseline_ms_per_frame: float | None,
) -> EngineTiming:
    same = [t for t in parts if t.batch == batch and (t.engine, t.device, t.precision) == label]
    seconds = sum(t.ms_per_call for t in same) / 1e3
    return _timing(WHOLE_FRAME, label, batch, seconds, baseline_ms_per_frame)


def format_timings(timings: Sequence[EngineTiming]) -> str:
    header = ("network", "engine", "device", "prec", "batch", "ms/call", "ms/frame", "fps")
    rows = [(*header, "x fp32 b1", "25-fps streams")]
    for t in timings:
        ratio = "-" if t.ratio_to_fp32_eager_b1 is None else f"{t.ratio_to_fp32_eager_b1:.2f}"
        rows.append(
            (
                t.network,
                t.engine,
                t.device,
                t.precision,
                str(t.batch),
                f"{t.ms_per_call:.1f}",
                f"{t.ms_per_frame:.1f}",
                f"{t.frames_per_s:.2f}",
                ratio,
                f"{t.streams_25fps:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
