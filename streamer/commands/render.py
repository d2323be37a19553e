"""``msadtalker render``: speech + portrait -> mp4 (H.264 25 fps + AAC), optional trace/plot.

The stages come from ``streamer.assembly.stage_factory``, the same call the live server makes per
session; here the source is the audio file, the sinks the mp4/trace/plot writers and there is
no pacer. Every output is written under a temporary name and renamed on success, so a failed
run leaves nothing half-written at ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from streamer.assembly import resolve_renderer
from streamer.commands._options import (
    add_audio_flag,
    add_avatar_flags,
    add_config_flags,
    avatar_overrides,
    checkpoints_of,
    config_from_args,
    stage_factory_from_args,
    writable_path,
)
from streamer.io.audio_source import AudioFileSource
from streamer.io.mp4 import Mp4Writer
from streamer.io.plot import WaveformEnvelope, plot_trace
from streamer.io.trace import TraceWriter, read_trace
from streamer.offline import Sink, run_offline
from streamer.pipeline import Pipeline

log = logging.getLogger(__name__)


def mp4_path(value: str) -> Path:
    path = writable_path(value)
    if path.suffix.lower() != ".mp4":
        raise argparse.ArgumentTypeError(f"--out must name an .mp4 file, got {value}")
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "render",
        help="speech + portrait -> talking-head mp4 (H.264 + AAC)",
        description="Render a talking head from a portrait and speech with the MSadTalker "
        "pipeline (cosine head pose, silence weighter).",
    )
    add_audio_flag(parser)
    parser.add_argument("--out", type=mp4_path, required=True, metavar="OUT.mp4")
    add_avatar_flags(parser)
    parser.add_argument(
        "--trace", type=writable_path, metavar="CSV", help="also write the per-frame motion trace"
    )
    parser.add_argument(
        "--plot",
        type=writable_path,
        metavar="PNG",
        help="also draw waveform, pose, mouth and silence weight",
    )
    add_config_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, avatar_overrides(args))
    source = AudioFileSource(args.audio)  # checks the whole file before anything is opened
    factory = stage_factory_from_args(config, args)
    pipeline: Pipeline = Pipeline(factory())
    log.info(
        "rendering %d frames with the %s renderer",
        source.frame_count,
        resolve_renderer(config, checkpoints_of(args)),
    )
    with tempfile.TemporaryDirectory(prefix="msadtalker-render-") as scratch:
        # The plot is drawn from the trace, so a plot without --trace still needs one.
        trace_path = args.trace or (Path(scratch) / "trace.csv" if args.plot else None)
        envelope = WaveformEnvelope()
        sinks: list[Sink] = [Mp4Writer(args.out)]
        if trace_path is not None:
            sinks += [TraceWriter(trace_path), envelope]
        frames = run_offline(pipeline, source, sinks, total_frames=source.frame_count)
        if args.plot is not None and trace_path is not None:
            plot_trace(read_trace(trace_path), envelope, args.plot, title=args.audio.name)
    print(f"{frames} frames -> {args.out}" + (f", plot {args.plot}" if args.plot else ""))
    return 0
