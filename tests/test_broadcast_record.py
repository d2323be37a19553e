"""Recording a room to mp4: the file plays, holds every frame up to the stop (duration =
frames / 25), audio within a frame of the video; finalised on stop, on the room's end, and
when ``serve`` drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import av
import pytest
from broadcast_source import HEIGHT, WIDTH, MarkerSource, av_offsets
from live_fakes import eventually, speech_like

from streamer.broadcast.kinds import OutputContext
from streamer.broadcast.record import KIND as RECORD
from streamer.config import BroadcastConfig
from streamer.io.webrtc_client import LoopbackClient

pytestmark = pytest.mark.leakcheck
REPO = Path(__file__).resolve().parents[1]
FRAME_S = 0.04


def only_file(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


def read_recording(path: Path, cut: bool = False) -> dict[str, float | int | tuple[int, int]]:
    """What a player sees: the frames it decodes and where the streams end (``cut``: the
    file may end in a packet cut short, which a player skips, as this does)."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        size = (video.codec_context.width, video.codec_context.height)
        frames, video_end = 0, 0.0
        try:
            for frame in container.decode(video=0):
                frames += 1
                video_end = max(video_end, float(frame.time or 0.0) + FRAME_S)
        except av.error.InvalidDataError:
            if not cut:
                raise
    with av.open(str(path)) as container:
        audio_end = 0.0
        try:
            for sound in container.decode(container.streams.audio[0]):
                duration = sound.samples / sound.sample_rate
                audio_end = max(audio_end, float(sound.time or 0.0) + duration)
        except av.error.InvalidDataError:
            if not cut:
                raise
    return {"frames": frames, "video_end": video_end, "audio_end": audio_end, "size": size}


async def test_a_stopped_recording_plays_every_frame_in_sync(tmp_path: Path) -> None:
    config = BroadcastConfig(record_dir=str(tmp_path))
    source = MarkerSource()
    plan = RECORD.plan({"kind": "record"}, "room", config)
    output = RECORD.start(plan, OutputContext("out-rec", "room", source, config))
    source.start(frames=110)
    await source.finished.wait()  # the last frame published ...
    await output.stop()  # ... and the recording stopped at once
    assert output.state == "finished", output.status()
    path = only_file(tmp_path, "room-*-out-rec.mp4")
    seen = read_recording(path)
    assert seen["size"] == (WIDTH, HEIGHT)
    assert seen["frames"] == 110  # nothing lost up to the last frame
    assert seen["video_end"] == pytest.approx(110 * FRAME_S, abs=FRAME_S)
    assert seen["audio_end"] == pytest.approx(110 * FRAME_S, abs=2 * FRAME_S)
    offsets = av_offsets(path)
    assert len(offsets) >= 3 and max(abs(o) for o in offsets) <= FRAME_S, offsets


async def test_a_recording_ends_with_its_room(tmp_path: Path) -> None:
    config = BroadcastConfig(record_dir=str(tmp_path))
    source = MarkerSource()
    output = RECORD.start(
        RECORD.plan({"kind": "record"}, "r", config), OutputContext("out-2", "r", source, config)
    )
    source.start()
    await source.wait_frames(30)
    await source.end()  # the session ended: no stop() from anyone
    await asyncio.wait_for(output.finished.wait(), 15)
    assert output.state == "finished"
    path = only_file(tmp_path, "r-*.mp4")
    assert read_recording(path)["frames"] == output.counts.frames_encoded >= 30


async def test_a_killed_encoder_leaves_a_file_that_plays_up_to_its_last_second(
    tmp_path: Path,
) -> None:
    """Fragmented MP4: what the encoder wrote before it was SIGKILLed plays."""
    config = BroadcastConfig(record_dir=str(tmp_path))
    source = MarkerSource()
    output = RECORD.start(
        RECORD.plan({"kind": "record"}, "k", config), OutputContext("out-k", "k", source, config)
    )
    source.start()
    await eventually(lambda: output.counts.frames_encoded >= 100, "four seconds recorded", 20)
    pid = output.encoder_pid
    assert pid is not None
    encoded = output.counts.frames_encoded
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: output.state.startswith("error"), "the kill noticed")
    await source.end()
    await output.stop()
    seen = read_recording(only_file(tmp_path, "k-*.mp4"), cut=True)
    assert isinstance(seen["frames"], int) and seen["frames"] >= encoded - 2 * 25, (seen, encoded)


def test_an_unwritable_record_dir_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = BroadcastConfig(record_dir=str(blocker / "sub"))
    source = MarkerSource()
    plan = RECORD.plan({"kind": "record"}, "r", config)
    with pytest.raises(OSError):
        RECORD.start(plan, OutputContext("out-3", "r", source, config))


@pytest.mark.slow
async def test_sigterm_finalises_the_recordings_of_serve(tmp_path: Path) -> None:
    """``msadtalker serve`` with ``[broadcast] record = true`` and a speaking publisher:
    SIGTERM -> the server drains and exits 0, and the room's mp4 plays to its end."""
    record = tmp_path / "rec"
    config = tmp_path / "serve.toml"
    config.write_text(
        f"[server]\ndrain_s = 1.0\njitter_ms = 20\n"
        f'[broadcast]\nrecord = true\nrecord_dir = "{record}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamer.cli",
        "serve",
        "--port",
        "0",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    speaker: LoopbackClient | None = None
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert match is not None, line
        url = match.group(1)
        async with aiohttp.ClientSession() as http:
            speaker = LoopbackClient(url, speech_like([(0.2, 30.0)], 30.0), decode_video=False)
            await speaker.connect(http)
            await eventually(lambda: len(speaker.video) >= 50, "two seconds of video", 30.0)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if speaker is not None:
            await speaker.aclose()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    path = only_file(record, "*.mp4")
    seen = read_recording(path)
    assert isinstance(seen["frames"], int) and seen["frames"] >= 50
    assert seen["video_end"] == pytest.approx(seen["frames"] * FRAME_S, abs=0.5)
    assert seen["audio_end"] == pytest.approx(seen["video_end"], abs=2 * FRAME_S)
