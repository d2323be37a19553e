"""The ``msadtalker`` command.

Each subcommand lives in ``streamer.commands.<name>`` and exposes ``add_parser(subparsers)``
and ``run(args) -> int``. User errors (``InputError``) become one line on stderr and exit
code 2; argparse reports bad flags the same way. Logging (``-v``, ``--log-format``) is set up
here, for every command (``streamer.logs``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from msadtalker.errors import InputError
from streamer.logs import LOG_FORMATS, configure_logging

COMMANDS = ("motion", "render", "serve", "kiosk", "token", "bench", "check_parity", "export")


class OneLineErrorParser(argparse.ArgumentParser):
    """Flag errors as one line (``msadtalker render: error: ...``), exit 2, like user errors
    found later; the usage text stays behind ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="msadtalker",
        description="MSadTalker: one portrait + speech -> a talking head, offline or live.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="log lines as text (default) or one JSON object per line (for log shippers)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"streamer.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    # A worker of `serve --workers N` says which one it is on every line.
    configure_logging(level, args.log_format, worker=getattr(args, "worker", None))
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        sys.stderr.write(f"msadtalker: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
