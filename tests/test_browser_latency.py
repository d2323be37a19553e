"""The pages as people use them, in Debian chromium (headless, playwright): the latency bench's
page hook, the returned voice off on the publisher page, endings and retries, and a microphone
that is blocked or silent. Fails rather than skips without chromium, like
``tests/test_server_browser.py`` (``bash .ci/run`` installs it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp.test_utils import TestServer
from live_fakes import stages_under_test
from playwright.async_api import Browser, Page, async_playwright

from msadtalker.errors import ConfigError
from msadtalker.timing import SAMPLE_RATE
from streamer.bench.browser import BrowserRun, chromium_args, chromium_path
from streamer.bench.latency import bench_browser_latency
from streamer.bench.signals import onset_speech
from streamer.config import Config, ServerConfig
from streamer.server.app import make_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return chromium_path()
    except ConfigError as exc:
        pytest.fail(f'{exc}; or deselect the browser tests with -m "not browser"', pytrace=False)


def _config() -> Config:
    return Config(server=ServerConfig(jitter_ms=20))


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer(make_app(_config(), stages_under_test(_config())), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=chromium_args())
        try:
            yield launched
        finally:
            await launched.close()


async def _until(page: Page, expression: str, what: str, timeout_s: float = 20.0) -> Any:
    """Until ``expression`` is truthy in ``page`` (polled: the pages' CSP forbids eval)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (value := await page.evaluate(expression)):
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return value


def _url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def _live_publisher(browser: Browser, url: str) -> Page:
    """The publisher page, live, its microphone the bench's faint noise (``web/bench.js``)."""
    page = await browser.new_page()
    await page.goto(f"{url}/?bench=1")
    await page.evaluate("window.msadtalkerBench.configure({bursts: [[0.1, -0.1]]})")
    await page.click("#start")
    await _until(page, "window.msadtalker.status === 'live'", "the publisher live")
    return page


async def _watching(browser: Browser, url: str, publisher: Page) -> Page:
    """A viewer page of ``publisher``'s room, started."""
    room = await publisher.evaluate("window.msadtalker.room")
    viewer = await browser.new_page()
    await viewer.goto(f"{url}/viewer?room={room}")
    await viewer.click("#start")
    return viewer


async def test_the_bench_reads_every_onset_off_the_frames_both_pages_present(
    server: TestServer, chromium: str
) -> None:
    speech = onset_speech(bursts=4)
    run = BrowserRun(minutes=0.3, threshold=0.0)
    result = await bench_browser_latency(
        stages_under_test(_config()), speech, [], run, url=_url(server)
    )
    for page in ("publisher", "viewer"):
        figures = result[page]
        assert figures["onsets"] >= 6, figures
        # The page's mouth reading finds (nearly) every burst in what it presented.
        assert figures["measured"] >= figures["onsets"] - 2, figures
        assert figures["latency_ms"]["p50"] > 0
        assert [m["minute"] for m in figures["per_minute"]] == [1]
    # The viewer hears the bursts in the voice it receives (the page times them). How far the
    # lips trail the voice is a bench figure (docs/live.md): a loaded machine's receive
    # jitter moves Chromium's audio playout by 100 ms and more for minutes, which a test
    # cannot tell from a sync fault; the sync's inputs are tested in tests/test_webrtc.py
    # (sender reports on the mic clock) and tests/test_session.py (one time line).
    voice = result["viewer"]["voice_latency_ms"]
    assert voice["n"] >= 2 and voice["p50"] > 0, result["viewer"]
    assert result["server"]["frames_out"] > 0


async def test_a_two_second_network_pause_is_named_and_the_mouth_catches_up(
    chromium: str,
) -> None:
    """The server (a ``serve`` child) stopped for 2 s half-way (SIGSTOP): to the page a
    network that carries nothing either way."""
    run = BrowserRun(minutes=0.5, threshold=0.0, viewer=False, pause_s=2.0)
    result = await bench_browser_latency(
        stages_under_test(_config()), onset_speech(bursts=4), [], run
    )
    pause = result["pause"]
    status, notice = pause["pages_said_during"]["publisher"]
    assert "no video from the server" in (notice or ""), pause
    # The session went on, and from 2 s after the pause the mouth follows the mic again
    # without a backlog (a replayed backlog would put the mouth seconds behind); the figure
    # itself, against the floor before the pause, is the bench's (docs/live.md).
    later = [o for o in pause["first_onsets_after"] if o["onset_after_resume_s"] >= 2.0]
    assert later and all(o["latency_ms"] is not None for o in later), pause
    assert max(o["latency_ms"] for o in later) < 500, pause
    assert result["server"]["frames_out"] > 0


async def test_the_publisher_hears_itself_only_when_it_asks(
    server: TestServer, browser: Browser
) -> None:
    page = await _live_publisher(browser, _url(server))
    assert await page.evaluate("document.getElementById('avatar').muted")
    await page.click("#listen")
    assert not await page.evaluate("document.getElementById('avatar').muted")
    assert await page.get_attribute("#listen", "aria-pressed") == "true"
    viewer = await _watching(browser, _url(server), page)
    await _until(viewer, "window.msadtalker.status === 'live'", "the viewer live")
    assert not await viewer.evaluate("document.getElementById('avatar').muted")
    # The word and the bar show one figure.
    await _until(page, "window.msadtalker.server !== null", "the figures")
    word = await page.inner_text("#silence")
    width = float((await page.evaluate("document.getElementById('weight').style.width"))[:-1])
    assert (word == "silent") == (width == 0.0), (word, width)


async def test_the_page_sync_holds_only_the_track_that_must_wait(
    server: TestServer, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(f"{_url(server)}/viewer?room=r")
    steps = await page.evaluate(
        """() => {
            const sync = new window.MsadtalkerAvSync({ leadMs: 25, toleranceMs: 5, window: 1,
                                                       settle: 0 });
            return [45, 30, 5, -20, -3, 15, 60, 60].map((lead) => {
                sync.add(lead);
                return [sync.videoHoldMs, sync.audioHoldMs];
            });
        }"""
    )
    assert steps == [
        [20, 0],  # lips 45 ms ahead: the picture waits 20 ms
        [20, 0],  # inside 25 +- 5: nothing moves
        [0, 0],  # the lips lead by 5 only: the hold is released (no band to ratchet in)
        [0, 20],  # the voice leads by 20 and the picture is not held: the voice waits
        [0, 20],
        [0, 5],  # the lips lead while the voice waits: the voice's hold goes first
        [0, 0],
        [35, 0],  # and only then the picture's
    ]
    # RTP timestamps map to the mic time across their 2**32 wrap.
    mapped = await page.evaluate(
        "window.MsadtalkerAvSync.micTimeMs({rtp: 4294967000, ms: 1000, rate: 90000}, 200)"
    )
    assert mapped == pytest.approx(1000 + 496 / 90)


async def test_the_viewer_page_lines_the_lips_up_with_the_voice_itself(
    server: TestServer, browser: Browser
) -> None:
    publisher = await _live_publisher(browser, _url(server))
    viewer = await _watching(browser, _url(server), publisher)
    reading = "window.msadtalker.avSync && window.msadtalker.avSync.leadMs !== null"
    await _until(viewer, reading, "the viewer page's first lip-sync reading", 30.0)
    sync = await viewer.evaluate("window.msadtalker.avSync")
    # Picture and voice each trail the mic by what a loopback path takes: a wrong clock
    # anchor or rate would read seconds, or a picture shown before it was spoken.
    assert 0 < sync["pictureLagMs"] < 1000 and 0 < sync["voiceLagMs"] < 1000, sync
    assert 0 <= sync["videoHoldMs"] <= 500 and 0 <= sync["audioHoldMs"] <= 500, sync
    # Within a frame of the voice (lips first) once the holds have acted.
    within = "window.msadtalker.avSync.leadMs >= -10 && window.msadtalker.avSync.leadMs <= 40"
    await _until(viewer, within, "the lips within a frame of the voice", 30.0)
    assert "ahead" in await viewer.inner_text("#avsync")
    # The publisher does not hear its voice: nothing to line up, nothing held.
    assert await publisher.inner_text("#avsync") == "voice off"
    assert await publisher.evaluate("window.msadtalker.avSync") is None


async def test_every_page_shows_the_servers_shutdown_and_retries_with_back_off(
    browser: Browser,
) -> None:
    srv = TestServer(make_app(_config(), stages_under_test(_config())), host="127.0.0.1")
    await srv.start_server()
    console: list[str] = []
    try:
        publisher = await browser.new_page()
        publisher.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        await publisher.goto(f"{_url(srv)}/?bench=1")
        await publisher.evaluate("window.msadtalkerBench.configure({bursts: [[0.1, -0.1]]})")
        await publisher.click("#start")
        await _until(publisher, "window.msadtalker.status === 'live'", "the publisher live")
        room = await publisher.evaluate("window.msadtalker.room")
        viewer = await browser.new_page()
        await viewer.goto(f"{_url(srv)}/viewer?room={room}")
        await viewer.click("#start")
        await _until(viewer, "window.msadtalker.framesPresented > 5", "the viewer's frames")
    finally:
        await srv.close()  # drains: the server closes every peer connection
    # Before this, a page stayed "live" until ICE consent expired (~17-30 s).
    for page in (publisher, viewer):
        await _until(page, "window.msadtalker.ended !== null", "the ending shown", 5.0)
        assert "ended" in await page.inner_text("#error")
    # The server does not come back: the attempts wait longer and longer.
    await _until(publisher, "window.msadtalker.retryDelayMs >= 2000", "a second, longer wait")
    assert len(console) < 10, console


async def test_the_page_says_what_is_wrong_with_the_microphone(
    server: TestServer, chromium: str, tmp_path: Path
) -> None:
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
    blocked = [a for a in chromium_args() if a != "--use-fake-ui-for-media-stream"]
    fake_silent = [
        *chromium_args(),
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={silent}",
    ]
    async with async_playwright() as pw:
        for args, expression, expected in (
            (blocked, "window.msadtalker.error", "microphone"),  # blocked, or none here
            (fake_silent, "window.msadtalker.notice", "delivers silence"),
        ):
            browser = await pw.chromium.launch(executable_path=chromium, args=args)
            try:
                page = await browser.new_page()
                await page.goto(f"{_url(server)}/")
                await page.click("#start")
                said = await _until(page, expression, f"the page naming '{expected}'")
                assert expected in said
            finally:
                await browser.close()
