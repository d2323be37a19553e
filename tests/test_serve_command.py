"""``msadtalker serve`` as a command: a user's mistake is one line and exit code 2; the live
sessions' lookahead is ``server.lookahead_ms`` and nothing else."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from streamer.assembly import StageFactory, build_motion_stages
from streamer.cli import build_parser, main
from streamer.commands._options import config_from_args
from streamer.config import Config
from streamer.pipeline import Pipeline


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "workers"])
def test_a_port_in_use_is_one_clear_line(
    busy_port: int, workers: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *workers, "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err.strip()
    where = f"127.0.0.1:{busy_port}"
    assert err == f"msadtalker: error: cannot listen on {where}: Address already in use"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "port"),
        (["--avatar", "/no/such/photo.jpg"], "not found"),
        (["--lookahead-ms", "-5"], ">= 0"),
    ],
)
def test_bad_flags_are_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["serve", *argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


# ------------------------------------------------------------------ one key per lookahead


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "live.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _serve_config(*argv: str) -> Config:
    return config_from_args(build_parser().parse_args(["serve", *argv]), live=True)


def test_serve_reads_the_live_lookahead_and_overwrites_neither_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    both = _toml(tmp_path, "[pipeline]\nlookahead_ms = 40\n[server]\nlookahead_ms = 120\n")
    config = _serve_config("--config", str(both))
    assert (config.pipeline.lookahead_ms, config.server.lookahead_ms) == (40, 120)
    config = _serve_config("--config", str(both), "--lookahead-ms", "80")
    assert (config.pipeline.lookahead_ms, config.server.lookahead_ms) == (40, 80)
    config = config_from_args(
        build_parser().parse_args(
            [
                "render",
                "--audio",
                str(both),
                "--out",
                str(tmp_path / "o.mp4"),
                "--lookahead-ms",
                "0",
            ]
        )
    )
    assert (config.pipeline.lookahead_ms, config.server.lookahead_ms) == (0, 0)
    assert not caplog.records  # the file set both keys: nothing to say


def test_a_live_config_with_only_the_offline_lookahead_is_told_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    offline = _toml(tmp_path, "[pipeline]\nlookahead_ms = 40\n")
    with caplog.at_level(logging.WARNING):
        config = _serve_config("--config", str(offline))
    assert (config.pipeline.lookahead_ms, config.server.lookahead_ms) == (40, 0)
    (record,) = caplog.records
    message = record.getMessage()
    assert "pipeline.lookahead_ms = 40" in message and "server.lookahead_ms (now 0)" in message


def test_serve_builds_its_stages_with_the_live_lookahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` hands the stage builder ``server.lookahead_ms`` explicitly while
    ``pipeline.lookahead_ms`` stays the offline commands'; the builder honours it."""
    import streamer.commands._options as options
    import streamer.commands.serve as serve_command

    asked: list[tuple[Config, int | None]] = []

    def fake_factory(config: Config, *_: Any, lookahead_ms: int | None = None) -> StageFactory:
        asked.append((config, lookahead_ms))
        return lambda: build_motion_stages(config, lookahead_ms=lookahead_ms)

    async def fake_serve(config: Config, stages: StageFactory, *_: Any) -> None:
        built.append(list(stages()))

    built: list[Sequence[Any]] = []
    monkeypatch.setattr(options, "stage_factory", fake_factory)
    monkeypatch.setattr(serve_command, "serve", fake_serve)
    config = _toml(tmp_path, "[pipeline]\nlookahead_ms = 80\n[server]\nport = 0\n")
    assert main(["serve", "--config", str(config)]) == 0
    ((seen, lookahead),) = asked
    assert (seen.pipeline.lookahead_ms, seen.server.lookahead_ms, lookahead) == (80, 0, 0)
    (stages,) = built
    assert Pipeline(stages).delay_frames == 0  # causal feature windows and silence
    offline = build_motion_stages(seen)  # no lookahead given: the offline key, 80 ms
    assert Pipeline(offline).delay_frames == 3
