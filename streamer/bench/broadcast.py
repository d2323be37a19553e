"""``msadtalker bench broadcast``: what one room output (RTMP push or recording) costs.

* Encoder alone: ``--frames`` frames of the bundled avatar talking (the mesh renderer's own
  frames, so x264 sees real content) encoded in this process as the encoder process does
  (``FrameEncoder``: H.264 + AAC into FLV, ``[broadcast]`` settings): p50 / p95 ms a frame.
* One output as the server runs it: ``--seconds`` of those frames at 25 fps through a
  fan-out into an ``EncodedOutput`` (a recording into a temporary directory, or an RTMP push
  to ``--url``): the encoder process's CPU time over the wall time (percent of one core), the
  server side's cost a frame (packing, the pipe), frames encoded and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from msadtalker.timing import FPS, SAMPLES_PER_FRAME
from streamer.broadcast.encoder import FrameEncoder
from streamer.broadcast.kinds import OutputContext
from streamer.broadcast.record import KIND as RECORD
from streamer.broadcast.rtmp import KIND as RTMP
from streamer.broadcast.settings import encoder_settings
from streamer.broadcast.targets import redact
from streamer.clock import RealtimeClock
from streamer.commands._options import config_from_args
from streamer.config import BroadcastConfig
from streamer.fanout import FanOut, Subscription
from streamer.types import FeatureFrame, HeadPose, LipFrame, MotionFrame, SilenceFrame, VideoFrame

DESCRIPTION = "one room output (RTMP push / recording): encode ms a frame, CPU of one output"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, choices=(256, 512), default=256)
    parser.add_argument("--frames", type=int, default=250, help="frames timed (encoder alone)")
    parser.add_argument("--seconds", type=float, default=20.0, help="one output, real time")
    parser.add_argument("--url", help="push to this rtmp[s]:// URL instead of recording")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from streamer.bench.render import machine_info

    config = config_from_args(args).broadcast
    pictures = _avatar_frames(args.size, min(args.frames, 250))
    encode = _time_encoder(config, pictures, args.frames)
    output = asyncio.run(_time_output(config, pictures, args.seconds, args.url))
    return {
        "size": args.size,
        "video_kbps": config.video_kbps,
        "preset": config.preset,
        "encoder_threads": config.encoder_threads,
        "encode_p50_ms": encode["p50_ms"],
        "encode_p95_ms": encode["p95_ms"],
        "output": output,
        "machine": machine_info(),
    }


def _avatar_frames(size: int, count: int) -> list[np.ndarray]:
    """``count`` frames of the bundled avatar speaking (looped when more are needed)."""
    from msadtalker.avatar import default_avatar_path, prepare_avatar
    from msadtalker.mesh.renderer import MeshRenderer
    from streamer.bench.render import speech_controls

    renderer = MeshRenderer(prepare_avatar(default_avatar_path(), size), size)
    return [renderer.render_controls(speech_controls(i)) for i in range(count)]


def _audio(index: int) -> np.ndarray:
    t = (index * SAMPLES_PER_FRAME + np.arange(SAMPLES_PER_FRAME)) / 16000.0
    return (0.2 * np.sin(2 * np.pi * 220.0 * t) * (np.sin(2 * np.pi * 3.0 * t) > 0)).astype(
        np.float32
    )


def _time_encoder(
    config: BroadcastConfig, pictures: list[np.ndarray], frames: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        encoder = FrameEncoder(encoder_settings(config, str(Path(tmp) / "bench.flv"), "flv"))
        timings = []
        for index in range(frames):
            started = time.perf_counter()
            encoder.write(index, pictures[index % len(pictures)], _audio(index))
            timings.append(time.perf_counter() - started)
        encoder.close()
    warm = np.array(timings[min(25, len(timings) // 2) :])
    return {
        "p50_ms": round(float(np.percentile(warm, 50)) * 1000, 3),
        "p95_ms": round(float(np.percentile(warm, 95)) * 1000, 3),
    }


def _video_frame(index: int, image: np.ndarray, audio: np.ndarray) -> VideoFrame:
    features = FeatureFrame(index=index, audio=audio, mel=np.zeros((80, 16), np.float32))
    lips = LipFrame(features=features, upper_lip=0.0, lower_lip=0.0, mouth_open=0.0)
    pose = HeadPose(0.0, 0.0, 0.0)
    motion = MotionFrame(
        silence=SilenceFrame(lips=lips, silent=False, weight=1.0),
        pose=pose,
        pose_raw=pose,
        mouth_open=0.0,
        blink=0.0,
    )
    return VideoFrame(motion=motion, image=image)


class _Source:
    def __init__(self) -> None:
        self.fanout: FanOut[VideoFrame] = FanOut(50)
        self.finished = asyncio.Event()

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription:
        return self.fanout.subscribe(name, maxsize)


async def _time_output(
    config: BroadcastConfig, pictures: list[np.ndarray], seconds: float, url: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(config, record_dir=tmp)
        source = _Source()
        kind = RTMP if url else RECORD
        body = {"kind": "rtmp", "url": url} if url else {"kind": "record"}
        plan = kind.plan(body, "bench", config)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_before = time.process_time()
        output = kind.start(plan, OutputContext("out-bench", "bench", source, config))
        clock = RealtimeClock()
        t0 = clock.now()
        frames = round(seconds * FPS)
        for index in range(frames):
            await clock.sleep_until(t0 + (index + 1) / FPS)
            picture = pictures[index % len(pictures)]
            source.fanout.publish(_video_frame(index, picture, _audio(index)))
        wall = clock.now() - t0
        cpu_server = time.process_time() - cpu_before
        source.fanout.end()
        source.finished.set()
        await output.stop()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_child = (children.ru_utime - children_before.ru_utime) + (
            children.ru_stime - children_before.ru_stime
        )
        status = output.status()
    return {
        "target": redact(url) if url else "recording (mp4 in a temporary directory)",
        "seconds": round(wall, 2),
        "encoder_process_cpu_percent": round(100.0 * cpu_child / wall, 1),
        "server_side_ms_per_frame": round(1000.0 * cpu_server / max(1, frames), 3),
        "frames_encoded": status["frames_encoded"],
        "frames_dropped": status["frames_dropped"],
        "state": status["state"],
        "encoder_mean_ms": status["encode_ms"],
    }
