"""``msadtalker bench lookahead``: how far the neural path drifts from offline per lookahead L.

The official code sees the whole clip (ExpNet's mel window reaches +120 ms, MappingNet +-13
frames); the streaming stages see L frames ahead and treat the rest as the end of the clip.
For each L this runs the real stages on the same speech and compares with the whole-clip
computation (``msadtalker.neural.offline``), which equals the stream at L = 13 exactly:

* ``chain``: the whole pipeline at lookahead L (features min(L, 3), lips L, silence
  min(L, 2), keypoints L) -> driving keypoints vs offline (max / p95 / mean |diff| over
  every frame, keypoint and axis; ``*_px``: the same in pixels of the S x S frame, keypoint
  units x S / 2), the lower-lip signal's mean |diff| relative to its nominal speech range,
  the share of frames whose silent/speaking call differs, and the pipeline delay in frames;
* ``mapping_only``: only the keypoint stage at L, fed the offline (L = 13) motion frames:
  the part of the drift that comes from the MappingNet window alone.

Needs checkpoints (``--checkpoints`` or ``$MSADTALKER_CHECKPOINTS``); no generator is run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from msadtalker.timing import SAMPLES_PER_FRAME

DESCRIPTION = "neural path: keypoint drift from offline for mapping lookahead L = 0, 2, 4, 8, 13"
DEFAULT_LOOKAHEADS = "0,2,4,8,13"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", type=Path, metavar="DIR", help="SadTalker checkpoints")
    parser.add_argument(
        "--audio", type=Path, metavar="FILE", help="speech (default: the bundled English sample)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="speech used (from the start)")
    parser.add_argument("--lookaheads", default=DEFAULT_LOOKAHEADS, metavar="LIST")
    parser.add_argument("--avatar", type=Path, metavar="IMG", help="portrait (default: bundled)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from msadtalker.audio import load_audio
    from msadtalker.avatar import default_avatar_path
    from msadtalker.errors import ConfigError
    from streamer.assembly.neural import NeuralAvatar
    from streamer.commands._options import checkpoints_of, config_from_args

    try:
        lookaheads = [int(v) for v in args.lookaheads.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--lookaheads: expected whole numbers, got {args.lookaheads!r}"
        ) from None
    if not lookaheads or min(lookaheads) < 0:
        raise ConfigError("--lookaheads: expected numbers >= 0")
    config = config_from_args(args)
    audio = (
        args.audio or Path(__file__).resolve().parents[2] / "msadtalker/assets/sample_speech_en.wav"
    )
    wav = load_audio(audio)[: int(args.seconds * 16000)]
    shared = NeuralAvatar(
        config, args.avatar or default_avatar_path(), checkpoints_of(args), None, render=False
    )
    reference = _run_chain(shared.motion, config, wav, 13)
    size = config.render.size
    out: dict[str, Any] = {"frames": len(reference.frames), "size": size}
    for lookahead in lookaheads:
        chain = _run_chain(shared.motion, config, wav, lookahead)
        mapping = _keypoint_stage(shared.motion, reference.frames, lookahead)
        out[f"L{lookahead}"] = {
            "lookahead_ms": 40 * lookahead,
            "pipeline_delay_frames": chain.delay,
            "chain": _drift(chain.keypoints, reference.keypoints, size)
            | {
                "lower_lip_mean_rel": round(
                    float(np.mean(np.abs(chain.lower - reference.lower)))
                    / max(shared.motion.nominal_range, 1e-12),
                    5,
                ),
                "silent_flag_mismatch": round(float(np.mean(chain.silent != reference.silent)), 4),
            },
            "mapping_only": _drift(mapping, reference.keypoints, size),
        }
    shared.engines.close()
    return out


class _Chain:
    def __init__(self, frames: list[Any], delay: int) -> None:
        self.frames = frames
        self.delay = delay
        self.keypoints = np.stack([f.kp_driving for f in frames])
        self.lower = np.array([f.lips.lower_lip for f in frames])
        self.silent = np.array([f.silence.silent for f in frames])


def _run_chain(motion: Any, config: Any, wav: np.ndarray, lookahead: int) -> _Chain:
    import dataclasses

    from streamer.assembly import build_motion_stages
    from streamer.pipeline import Pipeline
    from streamer.stages.neural_keypoints import NeuralKeypointStage
    from streamer.stages.neural_lips import NeuralLipStage
    from streamer.types import AudioChunk

    config = dataclasses.replace(
        config, pipeline=dataclasses.replace(config.pipeline, lookahead_ms=40 * lookahead)
    )
    stages = [
        *build_motion_stages(config, lips=NeuralLipStage(motion, lookahead)),
        NeuralKeypointStage(motion, lookahead),
    ]
    pipeline: Pipeline[Any] = Pipeline(stages)
    step = 4 * SAMPLES_PER_FRAME
    chunks = (AudioChunk(wav[s : s + step], s) for s in range(0, len(wav), step))
    return _Chain(list(pipeline.run(chunks)), pipeline.delay_frames)


def _keypoint_stage(motion: Any, frames: list[Any], lookahead: int) -> np.ndarray:
    from streamer.stages.neural_keypoints import NeuralKeypointStage

    stage = NeuralKeypointStage(motion, lookahead)
    out: list[Any] = [f for frame in frames for f in stage.push(frame)] + stage.flush()
    return np.stack([f.kp_driving for f in out])


def _drift(keypoints: np.ndarray, reference: np.ndarray, size: int) -> dict[str, float]:
    diff = np.abs(keypoints.astype(np.float64) - reference)
    px = size / 2.0
    return {
        "kp_max": round(float(diff.max()), 6),
        "kp_p95": round(float(np.percentile(diff, 95)), 6),
        "kp_mean": round(float(diff.mean()), 6),
        "kp_max_px": round(float(diff.max()) * px, 3),
        "kp_mean_px": round(float(diff.mean()) * px, 3),
    }
