"""Structured logs: one JSON object per line that always parses, and every line about a
session names it, from the session's task and from its threads alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from live_fakes import FakeRenderStage, VirtualMic, fake_stages, speech_like

from streamer.cli import build_parser
from streamer.clock import VirtualClock
from streamer.config import Config, ServerConfig
from streamer.live_render import LiveRender
from streamer.logs import log_context, make_handler
from streamer.session import LiveSession
from streamer.types import MotionFrame, VideoFrame

log = logging.getLogger("tests.logs")
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Everything logged during the test, as the JSON handler writes it, parsed line by line
    (a line that is not one JSON object fails the test)."""
    stream = io.StringIO()
    handler = make_handler("json", stream, worker=None)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def parsed() -> list[dict[str, Any]]:
        out = []
        for line in stream.getvalue().splitlines():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            out.append(entry)
        return out

    try:
        yield parsed
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _mine(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in lines if entry["logger"].startswith(("tests.", "streamer."))]


def test_json_lines_carry_time_level_logger_message_and_the_bound_context(
    json_lines: Lines,
) -> None:
    log.info("before")
    with log_context(session_id="s-1", room="lobby"):
        log.warning("inside %s", "the context")
        with log_context(room="other"):
            log.info('a "quoted"\nmultiline message: ünïcode')
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    log.info("after")
    before, inside, nested, failed, after = _mine(json_lines())
    assert set(before) == {"time", "level", "logger", "message"}
    assert before["time"].endswith("Z") and "T" in before["time"]
    assert (inside["level"], inside["logger"]) == ("WARNING", "tests.logs")
    assert inside["message"] == "inside the context"
    assert (inside["session_id"], inside["room"]) == ("s-1", "lobby")
    assert nested["message"].endswith("ünïcode") and "\n" in nested["message"]
    assert (nested["session_id"], nested["room"]) == ("s-1", "other")
    assert failed["session_id"] == "s-1" and "ValueError: boom" in failed["exception"]
    assert "session_id" not in after and "room" not in after


def test_the_worker_is_on_every_line_of_a_worker_and_text_lines_show_the_context() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream, worker=1)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("plain")
        with log_context(session_id="w1-abc", room="w1-room"):
            log.info("about a session")
    finally:
        log.removeHandler(handler)
    plain, about = stream.getvalue().splitlines()
    assert plain.endswith("INFO tests.logs [worker=1]: plain")
    assert about.endswith("INFO tests.logs [session=w1-abc room=w1-room worker=1]: about a session")


def test_the_cli_takes_a_log_format() -> None:
    parser = build_parser()
    assert parser.parse_args(["serve"]).log_format == "text"
    assert parser.parse_args(["--log-format", "json", "serve"]).log_format == "json"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--log-format", "xml", "serve"])
    assert exited.value.code == 2


class LoggingRenderStage(FakeRenderStage):
    """Logs every picture it makes, from whichever thread renders it; fails at frame
    ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self._fail_at = fail_at

    def push(self, item: MotionFrame) -> list[VideoFrame]:
        if item.index == self._fail_at:
            raise RuntimeError("the renderer broke")
        logging.getLogger("streamer.tests.render").debug("rendered frame %d", item.index)
        return super().push(item)


async def test_a_sessions_task_and_threads_log_with_its_id(json_lines: Lines) -> None:
    """The render runs on the session's thread (inline); the failure is logged by the
    session's task, which was started from a context that knew nothing of the session."""
    config = Config()
    stages = [*fake_stages(config, render=False), LoggingRenderStage(fail_at=12)]
    clock = VirtualClock()
    session = LiveSession(stages, clock, ServerConfig(jitter_ms=20), session_id="sess-42")
    session.start()
    mic = VirtualMic(session, clock, speech_like([(0.1, 1.0)], 1.0))
    await mic.run(0.8)
    await session.finished.wait()  # the pipeline failed at frame 12 and ended the session
    await session.aclose()
    lines = _mine(json_lines())
    rendered = [e for e in lines if e["message"].startswith("rendered frame")]
    assert len(rendered) == 12
    failure = [e for e in lines if "pipeline failed" in e["message"]]
    assert len(failure) == 1 and "RuntimeError: the renderer broke" in failure[0]["exception"]
    assert all(entry.get("session_id") == "sess-42" for entry in rendered + failure), lines


async def test_a_renderer_on_its_own_thread_logs_with_the_sessions_id(
    json_lines: Lines,
) -> None:
    clock = VirtualClock()
    render = LiveRender(LoggingRenderStage(), clock, "r", log_fields={"session_id": "sess-7"})
    try:
        stages = fake_stages(Config(), render=False)
        frames = []
        for stage_output in _motion_frames(stages, 3):
            frames += await render.frames([stage_output], deadline=None)
    finally:
        await render.aclose()
    assert len(frames) == 3
    rendered = [e for e in _mine(json_lines()) if e["message"].startswith("rendered frame")]
    assert len(rendered) == 3 and all(e.get("session_id") == "sess-7" for e in rendered)


def _motion_frames(stages: list[Any], count: int) -> list[MotionFrame]:
    from streamer.pipeline import Pipeline
    from streamer.types import AudioChunk

    audio = speech_like([(0.0, 1.0)], 1.0)
    out: list[MotionFrame] = Pipeline(stages).push(AudioChunk(samples=audio, start=0))
    return out[:count]
