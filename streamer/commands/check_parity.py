"""``msadtalker check-parity``: compare our networks with official golden data.

Prints one row per check (max |diff|, tolerance, mean |diff|, ok / FAIL / SKIPPED) and exits 1
unless every selected check ran and passed. ``--json OUT`` writes ``{check: {"max_abs_diff",
"tolerance", "ok", ...}}`` (image checks add ``mean_abs_diff`` / ``frac_off`` and their
tolerances). A check is skipped (``"ok": null`` plus a ``"skipped"`` reason) when the engine
lacks its network or the golden data cannot drive it; a skipped check verified nothing, so it
makes the exit code 1 too (select what the engine serves with ``--only``). The golden file is
the official ``golden_seed<N>.npz`` or its compact form (tests/data); the render size comes from
it and the checkpoint must be made with its seed.
"""

from __future__ import annotations

import argparse
import json

from engines.base import BACKENDS
from msadtalker.errors import ConfigError
from streamer.commands._options import existing_file, writable_path

# Kept in sync with export.parity.CHECK_GROUPS (tested); export.parity imports torch, which is
# only loaded when the command runs, so `msadtalker --help` stays fast.
CHECKS_HELP = "face_align, face_recon, mel, expnet, mapping, keypoints, kp_detector, generator, e2e"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check-parity",
        help="compare the SadTalker networks with official golden outputs",
        description=(
            "Feed the golden inputs (golden_seed*.npz made by the official code) to our "
            "networks and compare with the golden outputs, network by network and end to end. "
            "Exit code 1 if any check fails."
        ),
    )
    parser.add_argument(
        "--checkpoints",
        metavar="DIR",
        help="checkpoint directory (default: $MSADTALKER_CHECKPOINTS)",
    )
    parser.add_argument(
        "--golden",
        type=existing_file,
        required=True,
        metavar="NPZ",
        help=(
            "golden data file: the official golden_seed<N>.npz or its compact form; its seed "
            "must match the checkpoint's"
        ),
    )
    parser.add_argument(
        "--engine",
        default="torch",
        metavar="NAME",
        help=f"inference backend: {', '.join(BACKENDS)} (default torch)",
    )
    parser.add_argument(
        "--only", metavar="CHECKS", help=f"comma-separated subset of: {CHECKS_HELP}"
    )
    parser.add_argument(
        "--json",
        type=writable_path,
        metavar="OUT",
        help="also write the results as JSON (object keyed by check name)",
    )
    parser.set_defaults(run=run)


def _groups(value: str | None) -> list[str]:
    from export.parity import CHECK_GROUPS

    if not value:
        return list(CHECK_GROUPS)
    groups = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [group for group in groups if group not in CHECK_GROUPS]
    if unknown:
        raise ConfigError(
            f"--only: unknown checks {', '.join(unknown)} (choose from {', '.join(CHECK_GROUPS)})"
        )
    return groups


def run(args: argparse.Namespace) -> int:
    from export.golden import load_golden
    from export.parity import (
        all_ok,
        format_table,
        make_engine,
        networks_for,
        render_size,
        results_json,
        run_checks,
    )

    groups = _groups(args.only)
    golden = load_golden(args.golden)
    size = render_size(golden)
    engine = make_engine(args.engine, args.checkpoints, size, networks_for(golden, groups))
    results = run_checks(golden, engine, groups)
    print(f"golden {args.golden} (render size {size}), engine {args.engine}")
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results_json(results), indent=2) + "\n")
    ok = all_ok(results)
    failed = sum(result.ok is False for result in results)
    skipped = sum(result.ok is None for result in results)
    if ok:
        print("all checks passed")
    else:
        parts = [f"{failed} check(s) FAILED"] if failed else []
        parts += [f"{skipped} check(s) SKIPPED (not verified)"] if skipped else []
        print(", ".join(parts) or "no check ran")
    return 0 if ok else 1
