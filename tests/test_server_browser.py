"""The publisher and viewer pages in a real browser (Debian chromium, headless, playwright).

Chromium's fake capture device plays a WAV as the microphone; everything runs on loopback
(the server offers only 127.0.0.1 ICE candidates and the test checks the pair in use). It
passes as it is and inside a network namespace with only ``lo``, e.g.
``unshare -rn sh -c 'ip link set lo up && python -m pytest -m browser'``.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from aioice.ice import get_host_addresses
from live_fakes import eventually, mouth_probe, speech_like, stages_under_test, within
from playwright.async_api import Page, async_playwright

from msadtalker.timing import SAMPLE_RATE
from streamer.bench.mouth import MouthProbe
from streamer.config import AuthConfig, Config, ServerConfig
from streamer.server.app import make_app
from streamer.server.state import STATE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Not skipped when chromium is missing: a browser test that quietly does not run is no test.
# `bash .ci/run` installs it; elsewhere deselect with `-m "not browser"`.
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: install Debian's chromium (bash .ci/run does) "
            'or deselect the browser tests with -m "not browser"',
            pytrace=False,
        )
    return CHROMIUM


def _chromium_args(wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        # Chromium leaves the loopback interface out of WebRTC unless told; with it the test
        # also runs inside a network namespace that has only ``lo``.
        "--allow-loopback-in-peer-connection",
    ]


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    config = Config(server=ServerConfig(jitter_ms=20))
    app = make_app(config, stages_under_test(config))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


async def _openness(page: Page, probe: MouthProbe) -> float | None:
    data = await page.evaluate("window.msadtalker.grab()")
    if not data:
        return None
    png = np.frombuffer(base64.b64decode(data.split(",", 1)[1]), np.uint8)
    bgr = cv2.imdecode(png, cv2.IMREAD_COLOR)
    assert bgr is not None, "the page's frame grab is not a PNG"
    return probe.openness(bgr[..., ::-1])


async def _sample_mouth(page: Page, probe: MouthProbe) -> list[float]:
    """The mouth in every other frame the page presents, until it has been seen both at rest
    and open (and at least 40 times)."""
    samples: list[float] = []
    while len(samples) < 40 or min(samples) >= 0.15 or max(samples) <= 0.5:
        presented = await page.evaluate("window.msadtalker.framesPresented")
        await page.wait_for_function(f"window.msadtalker.framesPresented >= {presented + 2}")
        value = await _openness(page, probe)
        if value is not None:
            samples.append(value)
    return samples


async def test_publisher_page_streams_the_avatar_with_a_moving_mouth(
    server: TestServer, tmp_path: Path, chromium: str
) -> None:
    wav = tmp_path / "speech.wav"
    # Chromium loops the file: 1 s of silence, 1.5 s of speech, repeat.
    sf.write(wav, speech_like([(1.0, 2.5)], 2.5), SAMPLE_RATE, subtype="PCM_16")
    state = server.app[STATE]
    probe = mouth_probe(state.stage_factory)
    url = str(server.make_url("")).rstrip("/")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=_chromium_args(wav))
        try:
            # Playwright's wait_for_function evaluates strings, which the pages' CSP forbids;
            # the pages under their real CSP: test_pages_with_tokens_under_their_policy.
            page = await browser.new_page(bypass_csp=True)
            await page.goto(f"{url}/")
            # Before it connects, the page shows the avatar at rest.
            await page.wait_for_function(
                "document.getElementById('poster').naturalWidth > 0", timeout=20000
            )
            await page.click("#start")
            await page.wait_for_function(
                "window.msadtalker.status === 'live' || window.msadtalker.error",
                timeout=20000,
            )
            assert await page.evaluate("window.msadtalker.error") is None
            # Frames arrive and the mouth both rests and opens with the speech: sampled every
            # other presented frame until it has been seen doing both (a burst comes every
            # 2.5 s), at least 40 samples in all.
            samples = await within(_sample_mouth(page, probe), 20, "mouth open and closed")
            presented = await page.evaluate("window.msadtalker.framesPresented")
            session_id = await page.evaluate("window.msadtalker.sessionId")
            assert presented >= 50
            assert len(samples) >= 40
            assert min(samples) < 0.15 and max(samples) > 0.5, samples
            # The page shows the live figures the server reports, and hears the mic.
            await page.wait_for_function("window.msadtalker.latencyMs !== null", timeout=5000)
            figures = await page.inner_text(".figures")
            assert "ms" in figures and ("silent" in figures or "speaking" in figures)
            await page.wait_for_function(
                "parseFloat(document.getElementById('mic-level').style.width) > 20",
                timeout=5000,
            )
            # Media went over loopback.
            peer = state.peers[session_id]
            assert peer.pc is not None
            ice = peer.pc.getTransceivers()[0].sender.transport.transport
            pairs = list(ice.iceGatherer._connection._nominated.values())
            assert pairs and all(p.local_candidate.host == "127.0.0.1" for p in pairs)
            # The browser's end is an address of this machine too, so packets go through
            # ``lo`` (inside a loopback-only namespace it is 127.0.0.1 itself).
            own = {"127.0.0.1", *get_host_addresses(use_ipv4=True, use_ipv6=True)}
            assert all(p.remote_candidate.host in own for p in pairs)
            assert peer.session.ingest.stats.samples_in > SAMPLE_RATE  # the mic arrived

            # A viewer in a second tab watches the same room.
            room = await page.evaluate("window.msadtalker.room")
            viewer = await browser.new_page(bypass_csp=True)
            await viewer.goto(f"{url}/viewer?room={room}")
            await viewer.click("#start")
            await viewer.wait_for_function("window.msadtalker.framesPresented > 25", timeout=20000)

            # Barge-in from the page's button, and from its key (Esc).
            stats = peer.session.stats
            await page.click("#interrupt")
            await eventually(lambda: stats.interrupts >= 1, "the button's barge-in")
            assert stats.interrupts == 1
            await page.keyboard.press("Escape")
            await eventually(lambda: stats.interrupts >= 2, "the Esc key's barge-in")
            assert stats.interrupts == 2

            # Stop hangs up: the server forgets the session and the room's viewer.
            await page.click("#stop")
            await eventually(lambda: not state.peers, "the hang-up of the page and its viewer")
            assert not len(state.rooms)
        finally:
            await browser.close()


PUBLISHER_TOKEN = "browser-publisher-token-0123"
ROOM_SECRET = "browser-room-token-secret-0123"


async def _until(page: Page, expression: str, what: str, timeout_s: float = 20.0) -> None:
    """Until ``expression`` is true in ``page``: polled with ``evaluate``, which the pages'
    CSP allows (``wait_for_function`` needs ``eval``, which it does not)."""

    async def truthy() -> bool:
        return bool(await page.evaluate(expression))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await truthy():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def test_pages_with_tokens_under_their_policy(tmp_path: Path, chromium: str) -> None:
    """A server with tokens: the page asks for one (401), takes one from ?token= out of the
    address bar, and its watch-only link carries a viewer token, never the publisher's; all
    under the pages' real Content-Security-Policy, which nothing on them violates."""
    auth = AuthConfig(publisher_tokens=(PUBLISHER_TOKEN,), token_secret=ROOM_SECRET)
    config = Config(server=ServerConfig(jitter_ms=20), auth=auth)
    srv = TestServer(make_app(config, stages_under_test(config)), host="127.0.0.1")
    await srv.start_server()
    state = srv.app[STATE]
    url = str(srv.make_url("")).rstrip("/")
    wav = tmp_path / "speech.wav"
    sf.write(wav, speech_like([(0.5, 1.5)], 2.0), SAMPLE_RATE, subtype="PCM_16")
    console: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=_chromium_args(wav))
            try:
                page = await browser.new_page()
                page.on("console", lambda message: console.append(message.text))
                await page.goto(f"{url}/")
                await _until(page, "document.getElementById('poster').naturalWidth > 0", "poster")
                await page.click("#start")
                await _until(page, "window.msadtalker.error !== null", "the page's refusal")
                assert "token" in await page.evaluate("window.msadtalker.error")
                assert await page.is_visible("#token")
                assert not state.peers

                await page.goto(f"{url}/?token={PUBLISHER_TOKEN}")
                assert PUBLISHER_TOKEN not in page.url and "token" not in page.url
                await page.click("#start")
                await _until(page, "window.msadtalker.status === 'live'", "the publisher live")
                assert await page.evaluate("window.msadtalker.error") is None
                assert PUBLISHER_TOKEN not in await page.evaluate(
                    "JSON.stringify(window.msadtalker)"
                )
                link = await page.get_attribute("#viewer-link", "href")
                assert link is not None and "token=mst1." in link and PUBLISHER_TOKEN not in link
                # The figures come back: the page polls its session with its token.
                await _until(page, "window.msadtalker.latencyMs !== null", "the live figures")

                viewer = await browser.new_page()
                viewer.on("console", lambda message: console.append(message.text))
                await viewer.goto(link)
                assert "token" not in viewer.url
                await viewer.click("#start")
                await _until(viewer, "window.msadtalker.framesPresented > 10", "viewer frames")

                await page.click("#stop")  # the hang-up carries the token too
                await eventually(lambda: not state.peers, "the hang-up of the page and its viewer")
            finally:
                await browser.close()
    finally:
        await srv.close()
    assert not [line for line in console if "Content Security Policy" in line], console
