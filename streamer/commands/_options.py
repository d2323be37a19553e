"""Flags shared by several subcommands, and how they map onto the config tree."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streamer.config import Config, load_config


def existing_file(value: str) -> Path:
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not a file: {value}")
    return path


def non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {number}")
    return number


def writable_path(value: str) -> Path:
    path = Path(value)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory does not exist: {parent}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"is a directory: {value}")
    return path


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=existing_file, metavar="FILE",
                        help="TOML file mirroring the config tree ([pose], [silence], ...)")
    parser.add_argument("--seed", type=non_negative_int, metavar="N",
                        help="seed of the pose, noise and blinks (default 0)")
    parser.add_argument("--lookahead-ms", type=non_negative_int, metavar="MS",
                        help="lookahead granted to the streaming stages (default 80 = the "
                             "paper's centred silence window; 0 = lowest latency)")


def add_audio_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--audio", type=existing_file, required=True, metavar="FILE",
                        help="speech: wav, mp3, m4a, ogg, flac; any rate, mono or stereo")


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    overrides: dict[str, Any] = {
        "pipeline.seed": getattr(args, "seed", None),
        "pipeline.lookahead_ms": getattr(args, "lookahead_ms", None),
    }
    overrides.update(extra or {})
    return load_config(getattr(args, "config", None), overrides)
