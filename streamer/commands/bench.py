"""``msadtalker bench KIND``: measurements that print figures and write JSON.

Each kind is its own module ``streamer.bench.<kind>`` exposing ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> dict`` (the figures). This command adds the
shared flags (``--json OUT`` and the config flags), prints the figures one per line and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from streamer.commands._options import add_config_flags, writable_path

KINDS = (
    "render",
    "face",
    "latency",
    "sessions",
    "vad",
    "motion",
    "networks",
    "engines",
    "lookahead",
    "fuzz",
    "soak",
    "broadcast",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure speed / latency / quality; prints figures, --json writes them",
        description="Benchmarks. Each prints its figures and, with --json OUT, writes them.",
    )
    kinds = parser.add_subparsers(dest="bench_kind", required=True, metavar="KIND")
    for kind in KINDS:
        module = importlib.import_module(f"streamer.bench.{kind}")
        description = getattr(module, "DESCRIPTION", kind)
        child = kinds.add_parser(kind, help=description, description=description)
        child.add_argument(
            "--json",
            type=writable_path,
            metavar="OUT",
            help="also write the figures to this JSON file",
        )
        add_config_flags(child, live=getattr(module, "LIVE", False))
        module.add_arguments(child)
        child.set_defaults(run=run, bench_module=module)


def run(args: argparse.Namespace) -> int:
    result: dict[str, Any] = args.bench_module.run(args)
    for line in format_figures(result):
        print(line)
    if args.json is not None:
        write_json(args.json, result)
        print(f"-> {args.json}")
    return 0


def format_figures(result: dict[str, Any], prefix: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines.extend(format_figures(value, prefix=f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key}: {value}")
    return lines


def write_json(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps(result, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    tmp.replace(path)
