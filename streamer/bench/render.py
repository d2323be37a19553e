"""``msadtalker bench render``: speed of the CPU mesh renderer, alone and in the offline
pipeline.

* Renderer alone: ``--frames`` frames of speech-like controls (cosine head motion at the
  paper's amplitudes, a syllable-rate mouth, a blink every ~3 s), each timed on its own after
  a warm-up. Reports frames/s (frames / total time) and p50 / p95 milliseconds per frame.
* Offline pipeline: ``--seconds`` of synthetic speech through the real stages (features ->
  lips -> silence -> motion -> mesh render) into an H.264 MP4 (PyAV, as ``msadtalker
  render`` writes it), frames / wall time. If the motion stages cannot be built in this
  checkout, the figure covers the renderer plus H.264 encoding of its frames only, and
  ``pipeline`` says so.

``--threads N`` (default 1) sets OpenCV's thread count AND pins the process to N CPU cores
(where the OS allows), so "1" really measures one core (x264 included, for the pipeline).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from msadtalker.timing import FPS, SAMPLES_PER_FRAME

log = logging.getLogger(__name__)

DESCRIPTION = "CPU mesh renderer: frames/s and ms per frame, renderer alone and in the pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, choices=(256, 512), default=512)
    parser.add_argument("--threads", type=int, default=1, help="CPU cores / OpenCV threads")
    parser.add_argument("--frames", type=int, default=600, help="frames timed (renderer)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="speech rendered through the pipeline (0 skips it)",
    )
    parser.add_argument("--mode", choices=("crop", "full"), default="crop")
    parser.add_argument(
        "--avatar", type=Path, metavar="IMG", help="portrait (default: the bundled avatar)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from msadtalker.avatar import default_avatar_path, prepare_avatar
    from msadtalker.mesh.renderer import MeshRenderer

    avatar_path = args.avatar or default_avatar_path()
    with single_core(args.threads) as cores:
        avatar = prepare_avatar(avatar_path, args.size)
        renderer = MeshRenderer(avatar, args.size)
        render = (
            renderer.render_full_controls if args.mode == "full" else (renderer.render_controls)
        )
        timings = time_renderer(render, args.frames)
        pipeline = time_pipeline(args, renderer) if args.seconds > 0 else {}
    frame = render(speech_controls(0))
    result: dict[str, Any] = {
        "renderer_fps": round(len(timings) / float(np.sum(timings)), 1),
        "p50_ms": round(float(np.percentile(timings, 50)) * 1000, 3),
        "p95_ms": round(float(np.percentile(timings, 95)) * 1000, 3),
        "pipeline_fps": pipeline.get("fps"),
        "pipeline": pipeline.get("what", "skipped (--seconds 0)"),
        "size": args.size,
        "mode": args.mode,
        "frame_shape": list(frame.shape),
        "frames": len(timings),
        "threads": args.threads,
        "cores_pinned": cores,
        "avatar": str(avatar_path),
        "machine": machine_info(),
    }
    return result


def speech_controls(i: int) -> Any:
    """Deterministic, speech-like controls for frame ``i`` (25 fps)."""
    from msadtalker.mesh.controls import FaceControls

    t = i / FPS
    syllable = max(0.0, math.sin(2 * math.pi * 3.1 * t)) * (0.55 + 0.45 * math.sin(0.7 * t))
    blink_phase = (t % 3.2) / 0.2  # a 200 ms blink every 3.2 s
    blink = math.sin(math.pi * blink_phase) if blink_phase < 1.0 else 0.0
    return FaceControls(
        pitch=10.0 * math.cos(2 * math.pi * 0.9 * t),
        yaw=6.0 * math.cos(2 * math.pi * 1.1 * t + math.pi / 2),
        roll=8.0 * math.cos(2 * math.pi * 1.3 * t + math.pi),
        mouth_open=syllable,
        mouth_wide=0.4 * math.sin(2 * math.pi * 0.8 * t),
        blink=blink,
    )


def time_renderer(render: Any, frames: int, warmup: int = 25) -> np.ndarray:
    for i in range(warmup):
        render(speech_controls(i))
    out = np.empty(frames)
    for i in range(frames):
        controls = speech_controls(i)
        start = time.perf_counter()
        render(controls)
        out[i] = time.perf_counter() - start
    return out


def time_pipeline(args: argparse.Namespace, renderer: Any) -> dict[str, Any]:
    from streamer.bench.signals import onset_speech
    from streamer.io.mp4 import Mp4Writer
    from streamer.stages.render import MeshRenderStage

    stage = MeshRenderStage(renderer, args.mode)
    bursts = max(1, int(args.seconds / 2.0))
    speech = onset_speech(bursts=bursts, seed=0)
    try:
        from streamer.build import build_motion_stages
        from streamer.commands._options import config_from_args

        motion = build_motion_stages(config_from_args(args))
    except ImportError as exc:
        # TODO(pipeline): drop this branch once every motion stage is in place.
        log.warning("motion stages unavailable (%s): timing renderer + encode only", exc)
        return _time_render_encode(stage, len(speech.samples) // SAMPLES_PER_FRAME)

    from streamer.offline import run_offline
    from streamer.pipeline import Pipeline
    from streamer.types import AudioChunk

    chunk = SAMPLES_PER_FRAME * 5
    chunks = [
        AudioChunk(speech.samples[i : i + chunk], i) for i in range(0, len(speech.samples), chunk)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        writer = Mp4Writer(Path(tmp) / "bench.mp4")
        start = time.perf_counter()
        frames = run_offline(Pipeline([*motion, stage]), chunks, [writer], progress=False)
        wall = time.perf_counter() - start
    return {
        "fps": round(frames / wall, 1),
        "what": "features -> lips -> silence -> motion -> mesh render -> H.264 mp4",
    }


def _time_render_encode(stage: Any, frames: int) -> dict[str, Any]:
    from streamer.bench.mouth import rest_motion
    from streamer.io.mp4 import Mp4Writer
    from streamer.types import HeadPose, MotionFrame

    motions = []
    for i in range(frames):
        c = speech_controls(i)
        base = rest_motion(c.mouth_open, index=i)
        pose = HeadPose(c.pitch, c.yaw, c.roll)
        motions.append(
            MotionFrame(
                silence=base.silence,
                pose=pose,
                pose_raw=pose,
                mouth_open=c.mouth_open,
                blink=c.blink,
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        writer = Mp4Writer(Path(tmp) / "bench.mp4")
        start = time.perf_counter()
        for motion in motions:
            for frame in stage.push(motion):
                writer.write(frame)
        writer.close()
        wall = time.perf_counter() - start
    return {
        "fps": round(frames / wall, 1),
        "what": "mesh render -> H.264 mp4 only (pipeline stages unavailable)",
    }


@contextmanager
def single_core(threads: int) -> Iterator[list[int] | None]:
    """OpenCV threads = ``threads`` and, where supported, CPU affinity to that many cores."""
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(max(1, threads))
    previous_affinity: set[int] | None = None
    pinned: list[int] | None = None
    if hasattr(os, "sched_getaffinity"):
        previous_affinity = os.sched_getaffinity(0)
        pinned = sorted(previous_affinity)[: max(1, threads)]
        try:
            os.sched_setaffinity(0, pinned)
        except OSError:
            pinned = None
    try:
        yield pinned
    finally:
        cv2.setNumThreads(previous_threads)
        if previous_affinity is not None and pinned is not None:
            os.sched_setaffinity(0, previous_affinity)


def machine_info() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
