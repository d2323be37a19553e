"""``msadtalker bench networks``: per-network CPU latency of our SadTalker networks.

Runs ``export.bench_networks`` (torch, float32, eval, no grad, the batch of one official call:
ExpNet a chunk of 10 frames, everything else 1): median and p95 ms per call for each thread
count, next to the official modules' figures (measured from the official modules on a 2-core
AMD EPYC, torch 2.13 CPU, 2 threads).
Weights from ``--checkpoints`` when given, else random initialisation (latency does not depend
on the values). The load average is reported so that figures taken on a busy machine can be
recognised as such.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

from msadtalker.catalog import LOADABLE_NETWORKS

DESCRIPTION = "CPU ms per call of each SadTalker network (torch), next to the official modules'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--networks",
        metavar="LIST",
        help=f"comma-separated subset (default: all of {', '.join(LOADABLE_NETWORKS)})",
    )
    parser.add_argument(
        "--threads", default="2", metavar="LIST", help="torch thread counts, e.g. 2,1 (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per network")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument(
        "--checkpoints", type=Path, metavar="DIR", help="load these weights (default: random)"
    )


def _ints(value: str, flag: str) -> list[int]:
    from msadtalker.errors import ConfigError

    try:
        numbers = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(
            f"{flag}: expected comma-separated whole numbers, got {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise ConfigError(f"{flag}: expected numbers >= 1, got {value!r}")
    return numbers


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from export.bench_networks import available_networks, benchmark_networks
    from msadtalker.errors import ConfigError

    known = available_networks(include_renderer=True)
    names = known if not args.networks else [n.strip() for n in args.networks.split(",")]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(
            f"--networks: unknown {', '.join(unknown)} (choose from {', '.join(known)})"
        )
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats must be >= 1 and --warmup >= 0")
    threads = _ints(args.threads, "--threads")
    load_before = os.getloadavg()[0]
    timings = benchmark_networks(names, threads, args.checkpoints, args.repeats, args.warmup)
    networks: dict[str, Any] = {}
    for t in timings:
        entry = networks.setdefault(
            t.network,
            {
                "input": " ".join("x".join(str(n) for n in shape) for shape in t.input_shapes),
                "official_ms_2_threads": t.reference_ms_2_threads,
            },
        )
        entry[f"threads_{t.threads}"] = {
            "median_ms": round(t.median_ms, 2),
            "p95_ms": round(t.p95_ms, 2),
            "runs": t.runs,
        }
    return {
        "networks": networks,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        },
        "weights": str(args.checkpoints) if args.checkpoints else "random initialisation",
    }
