"""CPU latency of the SadTalker networks (torch, float32, eval, no grad), next to the official
modules' figures.

``benchmark_networks`` times each network on its export contract's example inputs, cut to the
batch of one call of the official code (ExpNet: a chunk of 10 frames, everything else batch 1),
for each thread count: median and p95 of ``repeats`` runs after ``warmup`` runs. Weights come
from a checkpoint directory when given, else the networks keep their random initialisation
(latency does not depend on the values). ``format_timings`` prints a table;
``msadtalker bench networks`` runs it and writes JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msadtalker.weights import build_network, load_weights, new_network

# The official modules (OpenTalker/SadTalker), ms per call, measured on a 2-core AMD EPYC with
# 2 torch threads (torch 2.13 CPU), median of 5 runs after warm-up; docs/neural.md.
OFFICIAL_MS_2_THREADS = {
    "face_3drecon": 85.5,
    "audio2exp": 19.0,
    "mapping": 16.8,
    "mapping_full": 11.6,
    "kp_extractor": 280.0,
    "generator": 8569.0,
}
# Batch of one official call where it is not 1: ExpNet runs chunks of 10 frames.
BENCH_BATCH = {"audio2exp": 10}
# Seconds per call or less on a CPU; the renderer's networks take seconds (the generator ~9 s).
LIGHT_NETWORKS = ("face_3drecon", "audio2exp", "mapping", "mapping_full")
RENDER_NETWORKS = ("kp_extractor", "generator")


@dataclass(frozen=True)
class NetworkTiming:
    network: str
    input_shapes: list[list[int]]
    threads: int
    median_ms: float
    p95_ms: float
    runs: int
    reference_ms_2_threads: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def available_networks(include_renderer: bool) -> list[str]:
    """The networks this benchmark times (the renderer's are the slow ones)."""
    return [*LIGHT_NETWORKS, *(RENDER_NETWORKS if include_renderer else ())]


def _time_ms(call: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def benchmark_networks(
    networks: Iterable[str],
    threads: Sequence[int] = (2, 1),
    checkpoints: str | Path | None = None,
    repeats: int = 5,
    warmup: int = 2,
) -> list[NetworkTiming]:
    """Median / p95 ms per call of each network for each thread count."""
    networks = list(networks)
    weights = load_weights(checkpoints, 256, networks) if checkpoints is not None else None
    previous = torch.get_num_threads()
    timings = []
    try:
        for name in networks:
            module = build_network(name, weights) if weights else new_network(name)
            contract = module.export_contract()  # type: ignore[operator]
            batch = BENCH_BATCH.get(name, 1)
            inputs = tuple(x[:batch] for x in contract.example_inputs())
            for count in threads:
                torch.set_num_threads(count)
                with torch.no_grad():
                    samples = _time_ms(partial(module, *inputs), warmup, repeats)
                timings.append(
                    NetworkTiming(
                        network=name,
                        input_shapes=[list(x.shape) for x in inputs],
                        threads=count,
                        median_ms=float(np.median(samples)),
                        p95_ms=float(np.percentile(samples, 95)),
                        runs=repeats,
                        reference_ms_2_threads=OFFICIAL_MS_2_THREADS.get(name),
                    )
                )
            del module
    finally:
        torch.set_num_threads(previous)
    return timings


def format_timings(timings: Sequence[NetworkTiming]) -> str:
    rows = [("network", "input", "threads", "median ms", "p95 ms", "official ms (2 thr)")]
    for t in timings:
        shapes = " ".join("x".join(str(n) for n in shape) for shape in t.input_shapes)
        reference = "-" if t.reference_ms_2_threads is None else f"{t.reference_ms_2_threads:g}"
        rows.append(
            (t.network, shapes, str(t.threads), f"{t.median_ms:.1f}", f"{t.p95_ms:.1f}", reference)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
