"""Flags shared by several subcommands, and how they map onto the config tree."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from msadtalker.catalog import CHECKPOINTS_ENV
from streamer.assembly import StageFactory, stage_factory
from streamer.config import Config, file_sets, load_config

log = logging.getLogger(__name__)


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


def existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"directory not found: {value}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not a directory: {value}")
    return path


def add_avatar_flags(parser: argparse.ArgumentParser) -> None:
    """Photo and renderer flags shared by ``render``, ``serve`` and ``kiosk``."""
    parser.add_argument(
        "--avatar",
        type=existing_file,
        metavar="IMG",
        help="portrait photo: jpg/png/webp/gif (default: the bundled avatar)",
    )
    parser.add_argument(
        "--face-index",
        type=non_negative_int,
        metavar="N",
        help="which face when the photo has several (0 = leftmost; default: the largest)",
    )
    parser.add_argument(
        "--size", type=int, choices=(256, 512), help="frame size in crop mode (default 256)"
    )
    parser.add_argument(
        "--mode",
        choices=("crop", "full"),
        help="crop: the face crop; full: the animated face pasted back into "
        "the whole photo (default crop)",
    )
    parser.add_argument(
        "--still",
        action="store_true",
        default=None,
        help="keep the head at its initial pose (mouth and blinks only)",
    )
    parser.add_argument(
        "--renderer",
        choices=("auto", "mesh", "neural"),
        help="mesh: CPU mesh warp; neural: SadTalker networks (needs "
        "checkpoints); auto (default): neural when checkpoints are given",
    )
    parser.add_argument(
        "--checkpoints",
        type=existing_dir,
        metavar="DIR",
        help=f"official SadTalker checkpoints (default: ${CHECKPOINTS_ENV}; none: mesh renderer)",
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "onnxruntime", "tensorrt", "triton"),
        help="neural renderer's inference backend (default torch; triton needs --engine-url)",
    )
    parser.add_argument(
        "--engine-url",
        metavar="HOST:PORT",
        help="triton: the Triton server's gRPC address (models of export --format triton)",
    )


def avatar_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config keys set by :func:`add_avatar_flags` (``None`` = not given)."""
    return {
        "render.size": getattr(args, "size", None),
        "render.mode": getattr(args, "mode", None),
        "render.still": getattr(args, "still", None),
        "render.renderer": getattr(args, "renderer", None),
        "render.engine": getattr(args, "engine", None),
        "render.engine_url": getattr(args, "engine_url", None),
    }


def checkpoints_of(args: argparse.Namespace) -> Path | None:
    """``--checkpoints``, else ``$MSADTALKER_CHECKPOINTS``, else none (mesh renderer)."""
    if getattr(args, "checkpoints", None) is not None:
        return Path(args.checkpoints)
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env).expanduser() if env else None


def stage_factory_from_args(
    config: Config, args: argparse.Namespace, lookahead_ms: int | None = None
) -> StageFactory:
    """Prepare the avatar and renderer the flags ask for (see ``streamer.assembly``).
    ``lookahead_ms``: the stages' lookahead; ``None`` = ``pipeline.lookahead_ms`` (offline),
    live commands pass ``server.lookahead_ms``."""
    avatar, face_index = getattr(args, "avatar", None), getattr(args, "face_index", None)
    return stage_factory(
        config, avatar, checkpoints_of(args), face_index, lookahead_ms=lookahead_ms
    )


def add_config_flags(parser: argparse.ArgumentParser, live: bool = False) -> None:
    """``--config``, ``--seed``, ``--lookahead-ms``; ``live``: the lookahead is the live
    sessions' (``server.lookahead_ms``, default 0) rather than the offline one."""
    lookahead_help = (
        "lookahead of the live sessions (default 0 = causal, lowest latency; 80 = the paper's "
        "centred silence window)"
        if live
        else "lookahead granted to the streaming stages (default 80 = the paper's centred "
        "silence window; 0 = lowest latency)"
    )
    parser.add_argument(
        "--config",
        type=existing_file,
        metavar="FILE",
        help="TOML file mirroring the config tree ([pose], [silence], ...)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="N",
        help="seed of the pose, noise and blinks (default 0)",
    )
    parser.add_argument(
        "--lookahead-ms",
        type=non_negative_int,
        metavar="MS",
        help=lookahead_help,
    )


def add_audio_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--audio",
        type=existing_file,
        required=True,
        metavar="FILE",
        help="speech: wav, mp3, m4a, ogg, flac; any rate, mono or stereo",
    )


def config_from_args(
    args: argparse.Namespace, extra: dict[str, Any] | None = None, live: bool = False
) -> Config:
    """Defaults < ``--config`` < flags.

    One key per lookahead: offline commands read ``pipeline.lookahead_ms``, live ones (``live``:
    serve, kiosk, the live benches) ``server.lookahead_ms``, which ``--lookahead-ms`` then sets;
    neither overwrites the other. A live command's config file that sets only the offline key
    gets a warning naming both (it would otherwise be ignored without a word)."""
    lookahead_key = "server.lookahead_ms" if live else "pipeline.lookahead_ms"
    overrides: dict[str, Any] = {
        "pipeline.seed": getattr(args, "seed", None),
        lookahead_key: getattr(args, "lookahead_ms", None),
    }
    overrides.update(extra or {})
    path = getattr(args, "config", None)
    config = load_config(path, overrides)
    offline_only = (
        path is not None
        and file_sets(path, "pipeline.lookahead_ms")
        and not file_sets(path, "server.lookahead_ms")
    )
    if live and offline_only:
        log.warning(
            "%s sets pipeline.lookahead_ms = %d, the offline lookahead; live sessions use "
            "server.lookahead_ms (now %d): set that one for serve/kiosk",
            path,
            config.pipeline.lookahead_ms,
            config.server.lookahead_ms,
        )
    return config
