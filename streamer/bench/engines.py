"""``msadtalker bench engines``: per-frame network cost per engine, precision and batch size.

Runs ``export.bench_engines``: for each per-frame network (mapping, ExpNet, the generator's
render view) and for the whole frame, ms per frame, frames per second, the implied concurrent
25-fps streams and the ratio to our torch FP32 eager batch-1 path on the same device, measured
in the same run. ``--engine onnxruntime`` reads the export in ``$MSADTALKER_EXPORTS`` (else
``<checkpoints>/export_<size>``); ``--engine triton`` talks to ``--engine-url``. The load average
is reported so that figures from a busy machine can be recognised as such.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
from typing import Any

from engines.base import BACKENDS
from msadtalker.errors import ConfigError
from streamer.commands._options import existing_dir

DESCRIPTION = "ms/frame, frames/s and 25-fps streams per engine, precision and batch size"
PRECISIONS = ("fp32", "fp16", "bf16")
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine", choices=BACKENDS, default="torch", help="backend to measure (default torch)"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto"
    )
    parser.add_argument(
        "--batch", default="1,2,4,8,16", metavar="LIST", help="batch sizes (default 1,2,4,8,16)"
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="torch on CUDA: fp16 / bf16 with fp32 islands (engines.fast_path); default fp32",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="torch on CUDA: replay captured CUDA graphs"
    )
    parser.add_argument(
        "--networks",
        metavar="LIST",
        help="comma-separated subset of mapping, audio2exp, generator_render (default all)",
    )
    parser.add_argument(
        "--checkpoints",
        type=existing_dir,
        metavar="DIR",
        help="checkpoint directory (default: $MSADTALKER_CHECKPOINTS)",
    )
    parser.add_argument("--size", type=int, choices=(256, 512), default=256)
    parser.add_argument("--engine-url", metavar="URL", help="triton: the server's gRPC host:port")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first")


def _batches(value: str) -> list[int]:
    try:
        batches = sorted({int(item) for item in value.split(",") if item.strip()})
    except ValueError:
        raise ConfigError(
            f"--batch: expected comma-separated whole numbers, got {value!r}"
        ) from None
    if not batches or batches[0] < 1 or batches[-1] > 256:
        raise ConfigError(f"--batch: expected numbers 1 .. 256, got {value!r}")
    return batches


def run(args: argparse.Namespace) -> dict[str, Any]:
    from engines.base import EngineSet, EngineUnavailable
    from engines.registry import open_engines
    from export.bench_engines import PER_FRAME_NETWORKS, bench_engines, format_timings

    batches = _batches(args.batch)
    networks = list(PER_FRAME_NETWORKS)
    if args.networks:
        networks = [name.strip() for name in args.networks.split(",") if name.strip()]
        unknown = [name for name in networks if name not in PER_FRAME_NETWORKS]
        if unknown:
            raise ConfigError(
                f"--networks: unknown {', '.join(unknown)} "
                f"(choose from {', '.join(PER_FRAME_NETWORKS)})"
            )
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats must be >= 1 and --warmup >= 0")
    if args.engine == "triton" and not args.engine_url:
        raise ConfigError("--engine triton needs --engine-url HOST:PORT")
    fast = args.precision != "fp32" or args.cuda_graphs
    if fast and args.engine != "torch":
        raise ConfigError("--precision and --cuda-graphs are options of the torch engine")
    load_before = os.getloadavg()[0]
    opened: list[EngineSet] = []
    try:
        try:
            if fast:
                from engines.fast_path import FastPathOptions, open_fast_torch_engines

                options = FastPathOptions(args.precision, cuda_graphs=args.cuda_graphs)
                engines: EngineSet = open_fast_torch_engines(
                    args.checkpoints, args.size, networks, args.device, options
                )
            else:
                engines = open_engines(
                    args.engine,
                    args.checkpoints,
                    args.size,
                    networks,
                    args.device,
                    url=args.engine_url,
                )
            opened.append(engines)
            baseline = None
            if args.engine != "torch" or fast:
                device = engines.device.split(":")[0]
                baseline = open_engines("torch", args.checkpoints, args.size, networks, device)
                opened.append(baseline)
        except EngineUnavailable as exc:
            raise ConfigError(f"--engine {args.engine}: {exc}") from None
        timings = bench_engines(
            engines,
            baseline,
            args.size,
            batches,
            networks,
            precision=args.precision,
            warmup=args.warmup,
            repeats=args.repeats,
            progress=lambda t: log.info(
                "%s %s b%d: %.1f ms/frame", t.engine, t.network, t.batch, t.ms_per_frame
            ),
        )
    finally:
        for engine_set in opened:
            engine_set.close()
    print(format_timings(timings))
    rows = {f"{t.engine}.{t.precision}.b{t.batch}.{t.network}": t.to_json() for t in timings}
    return {
        "rows": rows,
        "size": args.size,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
        },
    }
