"""``msadtalker serve`` as a command: a user's mistake is one line and exit code 2."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from streamer.cli import main


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
