"""``msadtalker bench render``: speed of the CPU mesh renderer, alone and in the offline
pipeline.

* Renderer alone: ``--frames`` frames of speech-like controls (cosine head motion at the
  paper's amplitudes, a syllable-rate mouth, a blink every ~3 s), each timed on its own after
  a warm-up. Reports frames/s (frames / total time) and p50 / p95 milliseconds per frame.
* Offline pipeline: ``--seconds`` of synthetic speech through the real stages (features ->
  lips -> silence -> motion -> mesh render) into an H.264 MP4 (PyAV, as ``msadtalker
  render`` writes it), frames / wall time.

Both are also given per CPU second of this process (``*_cpu_fps``): on a machine shared with
other work the wall-clock figures drop with the load, the CPU-time ones much less (they still
suffer from the caches being shared), so the two together say how loaded the run was.

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
        render = renderer.render_full_controls if args.mode == "full" else renderer.render_controls
        timings, cpu_s = time_renderer(render, args.frames)
        pipeline = time_pipeline(args, renderer) if args.seconds > 0 else {}
    frame = render(speech_controls(0))
    result: dict[str, Any] = {
        "renderer_fps": round(len(timings) / float(np.sum(timings)), 1),
        "renderer_cpu_fps": round(len(timings) / cpu_s, 1),
        "p50_ms": round(float(np.percentile(timings, 50)) * 1000, 3),
        "p95_ms": round(float(np.percentile(timings, 95)) * 1000, 3),
        "pipeline_fps": pipeline.get("fps"),
        "pipeline_cpu_fps": pipeline.get("cpu_fps"),
        "pipeline": pipeline.get("what", "skipped (--seconds 0)"),
        "size": args.size,
        "mode": args.mode,
        "frame_shape": list(frame.shape),
        "frames": len(timings),
        "threads": args.threads,
        "cores_pinned": cores,
        "load_average": _load_average(),
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


def time_renderer(render: Any, frames: int, warmup: int = 25) -> tuple[np.ndarray, float]:
    """Wall seconds of each of ``frames`` renders, and the CPU seconds they took in all."""
    for i in range(warmup):
        render(speech_controls(i))
    controls = [speech_controls(i) for i in range(frames)]
    out = np.empty(frames)
    cpu_start = time.process_time()
    for i, c in enumerate(controls):
        start = time.perf_counter()
        render(c)
        out[i] = time.perf_counter() - start
    return out, time.process_time() - cpu_start


def time_pipeline(args: argparse.Namespace, renderer: Any) -> dict[str, Any]:
    from streamer.assembly import build_motion_stages
    from streamer.bench.signals import onset_speech
    from streamer.commands._options import config_from_args
    from streamer.io.mp4 import Mp4Writer
    from streamer.offline import run_offline
    from streamer.pipeline import Pipeline
    from streamer.stages.render import MeshRenderStage
    from streamer.types import AudioChunk

    # The stages ``msadtalker render`` runs (``streamer.assembly``), around the renderer made
    # above so that avatar preparation stays out of the figure.
    stages = [*build_motion_stages(config_from_args(args)), MeshRenderStage(renderer, args.mode)]
    speech = onset_speech(bursts=max(1, int(args.seconds / 2.0)), seed=0)
    chunk = SAMPLES_PER_FRAME * 5
    chunks = [
        AudioChunk(speech.samples[i : i + chunk], i) for i in range(0, len(speech.samples), chunk)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        writer = Mp4Writer(Path(tmp) / "bench.mp4")
        cpu_start = time.process_time()
        start = time.perf_counter()
        frames = run_offline(Pipeline(stages), chunks, [writer], progress=False)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return {
        "fps": round(frames / wall, 1),
        "cpu_fps": round(frames / cpu, 1),
        "what": "features -> lips -> silence -> motion -> mesh render -> H.264 mp4",
    }


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
