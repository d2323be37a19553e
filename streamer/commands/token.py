"""``msadtalker token``: mint a signed room token (one role, one room, an expiry).

An app hands such a token to one user so that they may publish into, or watch, one room for a
while, and the server keeps no list of them: it checks the signature (HMAC-SHA256 with
``auth.token_secret`` or ``$MSADTALKER_TOKEN_SECRET``, ``streamer.server.auth``). The token is
the only thing printed on stdout, so that scripts can take it as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from msadtalker.errors import ConfigError
from streamer.commands._options import existing_file
from streamer.config import TOKEN_SECRET_ENV, load_config
from streamer.server.auth import ROLES, Role, mint_room_token
from streamer.server.rooms import ROOM_ID

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_TTL_S = 366 * 86400.0  # a longer-lived token is a static token: configure one instead


def duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` -> seconds (an ``argparse`` type)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 1h or 2d")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"{text!r}: a token lives more than 0 s and <= 366 d")
    return seconds


def room_name(text: str) -> str:
    if not ROOM_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not 1-64 characters of A-Z a-z 0-9 _ -")
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "token",
        help="mint a signed room token: one role in one room until it expires",
        description="Print a room token for `serve` (signed with auth.token_secret or "
        f"${TOKEN_SECRET_ENV}): publisher (may publish into and watch the room) or viewer.",
    )
    parser.add_argument("--role", choices=ROLES, required=True)
    parser.add_argument("--room", type=room_name, required=True, metavar="NAME")
    parser.add_argument(
        "--ttl",
        type=duration_s,
        default=3600.0,
        metavar="DURATION",
        help="how long it is valid: 90s, 15m, 1h (default), 2d",
    )
    parser.add_argument(
        "--config", type=existing_file, metavar="FILE", help="TOML file with [auth] token_secret"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    secret = load_config(args.config).auth.token_secret
    if not secret:
        raise ConfigError(
            f"no token secret: set {TOKEN_SECRET_ENV} or auth.token_secret in --config FILE "
            "(the same one `serve` uses)"
        )
    role: Role = args.role
    sys.stdout.write(mint_room_token(secret, role, args.room, args.ttl, time.time()) + "\n")
    return 0
