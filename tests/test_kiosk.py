"""The kiosk with a virtual microphone: a PulseAudio null sink fed from a WAV, recorded from
its monitor through sounddevice (ALSA ``pulse`` device), watched through the loopback room."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import soundfile as sf
from live_fakes import FrameWatch, mouth_probe, speech_like, stages_under_test, within

from msadtalker.timing import SAMPLE_RATE
from streamer.commands.kiosk import KIOSK_ROOM, run_kiosk
from streamer.config import Config, ServerConfig
from streamer.io.webrtc_client import LoopbackClient

# Not skipped without PulseAudio: `bash .ci/run` installs it (a test that quietly does not
# run is no test).
pytestmark = pytest.mark.slow
PULSE_TOOLS = ("pulseaudio", "pactl", "paplay")


@pytest.fixture
def virtual_mic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private PulseAudio daemon whose default source is a null sink's monitor.

    PortAudio lists devices once, when sounddevice is imported: that must happen after the
    daemon is up (nothing in this module imports it earlier)."""
    missing = [tool for tool in PULSE_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"PulseAudio tools not found: {', '.join(missing)} (apt install pulseaudio; "
            "bash .ci/run does)",
            pytrace=False,
        )
    runtime = tmp_path / "pulse"
    runtime.mkdir()
    env = {
        "PULSE_RUNTIME_PATH": str(runtime),
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(tmp_path),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PULSE_SERVER", f"unix:{runtime}/native")
    daemon = subprocess.run(
        [
            "pulseaudio",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "--disable-shm=yes",
            "-n",
            "--load=module-native-protocol-unix",
            "--load=module-null-sink sink_name=vmic",
            f"--log-target=file:{tmp_path / 'pulse.log'}",
        ],
        capture_output=True,
        check=False,
    )
    if daemon.returncode != 0:
        log_path = tmp_path / "pulse.log"
        log = log_path.read_text(errors="replace")[-400:] if log_path.exists() else ""
        pytest.fail(f"cannot start PulseAudio: {daemon.stderr.decode()[-200:]} {log}")
    try:
        subprocess.run(["pactl", "set-default-source", "vmic.monitor"], check=True)
        yield "vmic"
    finally:
        subprocess.run(["pulseaudio", "--kill"], check=False)


async def test_kiosk_animates_the_avatar_from_a_virtual_microphone(
    virtual_mic: str, tmp_path: Path
) -> None:
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_like([(0.8, 2.3)], 3.5), SAMPLE_RATE, subtype="PCM_16")
    config = Config(server=ServerConfig(port=0, jitter_ms=40))
    stop = asyncio.Event()
    started = asyncio.Event()
    urls: list[str] = []

    def announce(url: str) -> None:
        urls.append(url)
        started.set()

    stages = stages_under_test(config)
    probe = mouth_probe(stages)
    kiosk = asyncio.create_task(run_kiosk(config, stages, "pulse", announce=announce, stop=stop))
    try:
        # Up, or failed: a kiosk that ends before it announced raises its error here.
        up = asyncio.ensure_future(started.wait())
        try:
            first = asyncio.wait({up, kiosk}, return_when=asyncio.FIRST_COMPLETED)
            await within(first, 10, "kiosk start")
        finally:
            up.cancel()
        if kiosk.done():
            kiosk.result()
        assert urls, "the kiosk ended without announcing its URL"
        async with aiohttp.ClientSession() as http:
            watch = FrameWatch(probe.openness)
            viewer = LoopbackClient(urls[0], role="viewer", room=KIOSK_ROOM, on_video=watch)
            await viewer.connect(http)
            player = await asyncio.create_subprocess_exec(
                "paplay", f"--device={virtual_mic}", str(wav)
            )
            await asyncio.wait_for(player.wait(), 20)
            # The frames made from the end of the clip reach the viewer (mic -> session ->
            # viewer: well under 10 frames).
            await watch.wait_for(watch.count + 10)
            async with http.get(f"{urls[0]}/sessions/{KIOSK_ROOM}") as resp:
                stats = (await resp.json())["session"]
            await viewer.aclose()
        values = [f.value for f in viewer.video]
        assert len(values) >= 60
        assert min(values) < 0.15 and max(values) > 0.4, values
        assert stats["ingest"]["samples_in"] > 3 * SAMPLE_RATE  # the mic delivered audio
    finally:
        stop.set()
        await asyncio.wait_for(kiosk, 20)
