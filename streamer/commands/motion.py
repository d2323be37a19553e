"""``msadtalker motion``: run the pipeline up to motion (no video) and write the trace.

The lip source is the default articulator, or with ``--checkpoints`` (or
``$MSADTALKER_CHECKPOINTS``) SadTalker's ExpNet + MappingNet lip keypoints of the neural path
(``streamer.assembly.neural``; no generator is loaded). The trace has the same columns either way.
"""

from __future__ import annotations

import argparse
import logging

from streamer.assembly import build_motion_stages, neural_module, resolve_renderer
from streamer.commands._options import (
    add_audio_flag,
    add_config_flags,
    checkpoints_of,
    config_from_args,
    existing_dir,
    existing_file,
    non_negative_int,
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
    parser.add_argument(
        "--plot",
        type=writable_path,
        metavar="OUT.png",
        help="also draw waveform, pose, mouth and silence weight",
    )
    parser.add_argument(
        "--checkpoints",
        type=existing_dir,
        metavar="DIR",
        help="official SadTalker checkpoints: lips from ExpNet + MappingNet keypoints "
        "(default: $MSADTALKER_CHECKPOINTS; without: the audio articulator)",
    )
    parser.add_argument(
        "--avatar",
        type=existing_file,
        metavar="IMG",
        help="portrait photo for the neural lip source (default: the bundled avatar)",
    )
    parser.add_argument(
        "--face-index",
        type=non_negative_int,
        metavar="N",
        help="which face when the photo has several (default: the largest)",
    )
    add_config_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    source = AudioFileSource(args.audio)
    checkpoints = checkpoints_of(args)
    if resolve_renderer(config, checkpoints) == "neural":
        from msadtalker.avatar import default_avatar_path

        photo = args.avatar or default_avatar_path()
        factory = neural_module().neural_motion_factory(config, photo, checkpoints, args.face_index)
        stages = factory()
    else:
        stages = build_motion_stages(config)
    pipeline: Pipeline = Pipeline(stages)
    trace = TraceWriter(args.trace)
    envelope = WaveformEnvelope()
    frames = run_offline(pipeline, source, [trace, envelope], total_frames=source.frame_count)
    if args.plot is not None:
        plot_trace(read_trace(args.trace), envelope, args.plot, title=args.audio.name)
    print(f"{frames} frames -> {args.trace}" + (f", plot {args.plot}" if args.plot else ""))
    return 0
