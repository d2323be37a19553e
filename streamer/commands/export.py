"""``msadtalker export``: the SadTalker networks of a checkpoint set -> ONNX (-> TensorRT).

Writes ``<network>.onnx`` (and with ``--format tensorrt`` ``<network>.plan``) plus
``manifest.json`` into ``--out`` (default ``$MSADTALKER_EXPORTS``, else
``<checkpoints>/export_<size>``, where the onnxruntime and TensorRT backends look). Prints one
row per network: file size, export and parity seconds, max |onnxruntime - torch| and its
tolerance. Exit 1 if a parity check failed (the file is written but the backends refuse it),
2 for bad input (checkpoints, flags, an unwritable --out, TensorRT unavailable).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msadtalker.catalog import NETWORKS, RENDER_SIZES, STREAMING_NETWORKS
from msadtalker.errors import ConfigError
from streamer.commands._options import writable_path

if TYPE_CHECKING:
    from export.onnx import ExportedNetwork
    from export.tensorrt import BuiltPlan

# From the torch-free catalog, so that `msadtalker --help` does not import torch.
DEFAULT_NETWORKS_HELP = " ".join(STREAMING_NETWORKS)
ALL_NETWORKS_HELP = " ".join(NETWORKS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export the SadTalker networks to ONNX (and TensorRT plans)",
        description=(
            "Export each network of a checkpoint set to ONNX with the names and dynamic axes "
            "of its contract, check it with the ONNX checker and against our torch module in "
            "onnxruntime, and record everything in manifest.json. Exit 1 if a parity check "
            "fails."
        ),
    )
    parser.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="checkpoint directory (default: $MSADTALKER_CHECKPOINTS)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default: $MSADTALKER_EXPORTS, else <checkpoints>/export_<size>)",
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "tensorrt", "triton"),
        default="onnx",
        help="onnx; tensorrt = onnx plus TensorRT plans (needs TensorRT 10 and a GPU); triton = "
        "onnx (in the usual export directory) plus a Triton model repository at --out",
    )
    parser.add_argument(
        "--triton-max-batch",
        type=int,
        default=16,
        metavar="N",
        help="triton: max_batch_size of every model (default 16)",
    )
    parser.add_argument(
        "--triton-instances",
        type=int,
        default=1,
        metavar="N",
        help="triton: model instances per GPU (instance_group count, default 1)",
    )
    parser.add_argument(
        "--triton-kind",
        choices=("gpu", "cpu"),
        default="gpu",
        help="triton: where the instances run (default gpu)",
    )
    parser.add_argument(
        "--triton-delay-us",
        type=int,
        default=4000,
        metavar="US",
        help="triton: the dynamic batcher's max queue delay (default 4000 us)",
    )
    parser.add_argument(
        "--size", type=int, choices=RENDER_SIZES, default=256, help="render size (default 256)"
    )
    parser.add_argument(
        "--networks",
        nargs="+",
        metavar="NAME",
        help=f"networks to export (default: {DEFAULT_NETWORKS_HELP}; any of: {ALL_NETWORKS_HELP})",
    )
    parser.add_argument(
        "--opset", type=int, default=20, help="ONNX opset (default 20; the generator needs 20)"
    )
    parser.add_argument(
        "--warp",
        choices=("volumetric", "sliced"),
        default="volumetric",
        help="generator volume warps as 5-D GridSample (volumetric, opset 20) or as 2-D "
        "GridSample over depth slices (sliced: for runtimes without 5-D GridSample, opset 17+)",
    )
    parser.add_argument(
        "--skip-parity",
        action="store_true",
        help="do not compare onnxruntime with torch (the manifest then records no figures)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="tensorrt: build FP16 plans (default FP32)"
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=4,
        metavar="N",
        help="tensorrt: largest batch of the optimisation profile (default 4, at least the "
        "contract's example batch)",
    )
    parser.add_argument(
        "--json", type=writable_path, metavar="OUT", help="also write the rows as JSON"
    )
    parser.set_defaults(run=run)


def _network_names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def _out_dir(args: argparse.Namespace) -> Path:
    from engines.manifest import export_dir
    from msadtalker.weights import checkpoint_dir

    if args.format == "triton":  # --out is the repository; the ONNX files go where they go
        return export_dir(None, checkpoint_dir(args.checkpoints), args.size)
    if args.out is not None:
        out: Path = args.out.expanduser()
        return out
    return export_dir(None, checkpoint_dir(args.checkpoints), args.size)


def _check_tensorrt(args: argparse.Namespace) -> None:
    """Refuse --format tensorrt before minutes of ONNX export when TensorRT cannot run."""
    from engines.base import EngineUnavailable
    from engines.tensorrt_engine import cuda_device, import_tensorrt

    if args.max_batch < 1:
        raise ConfigError(f"--max-batch {args.max_batch}: must be >= 1")
    try:
        import_tensorrt()
        cuda_device()
    except EngineUnavailable as exc:
        raise ConfigError(f"--format tensorrt: {exc}") from None


def _row(result: ExportedNetwork) -> dict[str, Any]:
    parity = result.parity
    return {
        "network": result.network,
        "file": str(result.path),
        "megabytes": round(result.path.stat().st_size / 1e6, 1),
        "opset": result.opset,
        "export_s": round(result.export_seconds, 2),
        "parity_s": round(result.parity_seconds, 2),
        "max_abs_diff": None if parity is None else parity.max_abs_diff,
        "tolerance": None if parity is None else parity.tolerance,
        "reference_scale": None if parity is None else parity.reference_scale,
        "batch_sizes": None if parity is None else list(parity.batch_sizes),
        "mean_abs_diff": None if parity is None else parity.mean_abs_diff,
        "frac_off": None if parity is None else parity.frac_off,
        "ok": None if parity is None else parity.ok,
        "figures": "parity skipped" if parity is None else parity.describe(),
    }


def _print_row(row: dict[str, Any]) -> None:
    verdict = "" if row["ok"] is not False else "  FAIL"
    print(
        f"{row['network']:<26} {row['megabytes']:>8.1f} MB  opset {row['opset']}  "
        f"export {row['export_s']:>6.1f} s  parity {row['parity_s']:>6.1f} s  "
        f"{row['figures']}{verdict}",
        flush=True,
    )


def _print_plan(built: BuiltPlan) -> None:
    parity = built.plan.parity
    figures = "" if parity is None else f"  vs onnxruntime: {parity.describe()}"
    ok = "" if parity is None or parity.ok else " FAIL"
    print(f"{built.network:<26} -> {built.path.name} ({built.plan.precision}){figures}{ok}")


def _write_triton(args: argparse.Namespace, export_dir: Path, networks: list[str]) -> None:
    from export.triton_repo import TritonOptions, write_repository

    options = TritonOptions(
        max_batch_size=args.triton_max_batch,
        queue_delay_us=args.triton_delay_us,
        instances=args.triton_instances,
        kind="KIND_GPU" if args.triton_kind == "gpu" else "KIND_CPU",
    )
    repo: Path = args.out.expanduser()
    models = write_repository(export_dir, repo, options, networks)
    print(f"triton model repository {repo}: {', '.join(models)}")


def run(args: argparse.Namespace) -> int:
    from engines.base import EngineUnavailable
    from export.onnx import export_checkpoints, resolve_networks

    networks = resolve_networks(_network_names(args.networks))
    if args.format == "tensorrt":
        _check_tensorrt(args)
    if args.format == "triton" and args.out is None:  # before minutes of export
        raise ConfigError("--format triton needs --out REPO (the model repository to write)")
    out = _out_dir(args)
    print(f"exporting {', '.join(networks)} (size {args.size}, opset {args.opset}) -> {out}")
    rows: list[dict[str, Any]] = []

    def progress(result: ExportedNetwork) -> None:
        rows.append(_row(result))
        _print_row(rows[-1])

    export_checkpoints(
        args.checkpoints,
        out,
        size=args.size,
        networks=networks,
        opset=args.opset,
        parity=not args.skip_parity,
        progress=progress,
        warp=args.warp,
    )
    ok = all(row["ok"] is not False for row in rows)
    if args.format == "triton":
        _write_triton(args, out, networks)
    plans_ok = True
    if args.format == "tensorrt":
        from export.tensorrt import build_plans

        try:
            built, failed = build_plans(
                out,
                networks,
                fp16=args.fp16,
                max_sizes={"batch": args.max_batch},
                progress=_print_plan,
            )
        except EngineUnavailable as exc:
            raise ConfigError(f"--format tensorrt: {exc}") from None
        for network, reason in failed.items():
            print(f"{network:<26} -> no plan: {reason}")
        plans_ok = not failed and all(b.plan.parity is None or b.plan.parity.ok for b in built)
    if args.json is not None:
        args.json.write_text(json.dumps({"out": str(out), "networks": rows}, indent=2) + "\n")
    print(f"manifest: {out / 'manifest.json'}")
    if not (ok and plans_ok):
        print("FAILED for some networks (see above): the backends will refuse those files")
        return 1
    return 0
