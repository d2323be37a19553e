"""``msadtalker motion``: run the pipeline up to motion (no video) and write the trace."""

from __future__ import annotations

import argparse
import logging

from streamer.build import build_motion_stages
from streamer.commands._options import (
    add_audio_flag,
    add_config_flags,
    config_from_args,
    writable_path,
)
from streamer.io.audio_source import AudioFileSource
from streamer.io.plot import WaveformEnvelope, plot_trace
from streamer.io.trace import TraceWriter, read_trace
from streamer.offline import run_offline
from streamer.pipeline import Pipeline

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "motion",
        help="audio -> head pose, lip signal and silence weight trace (CSV, optional plot)",
        description="Run the MSadTalker pipeline up to motion and write the per-frame trace.",
    )
    add_audio_flag(parser)
    parser.add_argument("--trace", type=writable_path, required=True, metavar="OUT.csv")
    parser.add_argument("--plot", type=writable_path, metavar="OUT.png",
                        help="also draw waveform, pose, mouth and silence weight")
    add_config_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    source = AudioFileSource(args.audio)
    pipeline: Pipeline = Pipeline(build_motion_stages(config))
    trace = TraceWriter(args.trace)
    envelope = WaveformEnvelope()
    frames = run_offline(pipeline, source, [trace, envelope], total_frames=source.frame_count)
    if args.plot is not None:
        plot_trace(read_trace(args.trace), envelope, args.plot, title=args.audio.name)
    print(f"{frames} frames -> {args.trace}" + (f", plot {args.plot}" if args.plot else ""))
    return 0
