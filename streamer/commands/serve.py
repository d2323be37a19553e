"""``msadtalker serve``: the live server (microphone in over WebRTC, avatar video + voice out).

``--workers N`` (``server.workers``) > 1: this process supervises N worker processes that
share the port (``streamer.server.supervisor``); each worker is this command with
``--worker I`` (hidden flags), a full server that forwards requests for other workers' ids to
them (``streamer.server.forwarding``). ``--workers 1``, the default, is one process.

This module is the command line only: flags -> config -> ``streamer.server.run``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from msadtalker.errors import ConfigError, InputError
from streamer.commands._options import (
    add_avatar_flags,
    add_config_flags,
    avatar_overrides,
    config_from_args,
    stage_factory_from_args,
)
from streamer.config import Config
from streamer.realtime import StartCheck, check_at_start
from streamer.server.cluster import Cluster, take_hop_secret
from streamer.server.ids import resolve_instance_id
from streamer.server.run import check_exposure, run_async, serve, serve_worker, tell_parent
from streamer.server.supervisor import WorkerStartError, supervise

log = logging.getLogger(__name__)

# Flags a worker does not inherit from the parent's command line (it gets its own).
_PARENT_ONLY = {"help", "host", "port", "workers", "worker", "worker_ports", "worker_fd"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="live server: speak into the browser, the avatar speaks back (WebRTC)",
        description="Serve the publisher page (mic -> avatar), the viewer page and the "
        "WebRTC signalling endpoint.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port, sessions spread over them (default 1; "
        "limits such as server.max_sessions are per worker)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="serve without tokens on an address other than loopback: anyone who can reach "
        "it may publish (server.insecure)",
    )
    parser.add_argument(
        "--instance-id",
        metavar="ID",
        help="this server among several behind a load balancer: every id it makes starts "
        "with it (server.instance_id; 1-32 of a-z 0-9 -; default from the hostname)",
    )
    # A worker process of `serve --workers N` (set by the parent, not for people).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ports", help=argparse.SUPPRESS)
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    add_avatar_flags(parser)
    add_config_flags(parser, live=True)
    parser.set_defaults(run=run, serve_parser=parser)


def run(args: argparse.Namespace) -> int:
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.workers": args.workers,
        "server.insecure": args.insecure,
        "server.instance_id": args.instance_id,
        **avatar_overrides(args),
    }
    config = config_from_args(args, overrides, live=True)
    if args.worker is not None:
        return _run_worker(args, config)
    # Before the avatar is prepared; the warning of a single process comes from ``serve``,
    # that of a supervisor here, once rather than from every worker.
    check_exposure(config, warn=config.server.workers > 1)
    if config.server.workers > 1:
        return _run_parent(args, config)
    stages = stage_factory_from_args(config, args, lookahead_ms=config.server.lookahead_ms)
    check = check_at_start(stages)  # a WARNING when this machine cannot render in real time
    run_async(serve(config, stages, _announce))
    return _exit_code(0, check)


def _exit_code(code: int, check: StartCheck) -> int:
    """``code``, or the process ends here with it: a frame-cost measurement still inside the
    networks (a neural frame on a CPU takes seconds) would abort the interpreter's shutdown
    (``streamer.realtime.StartCheck``). The sessions are closed and written by now."""
    if check.still_measuring:
        log.info("exiting without waiting for the frame-cost measurement still running")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _announce(url: str) -> None:
    print(f"msadtalker live: open {url}/ (viewers: {url}/viewer?room=ID); Ctrl-C stops", flush=True)


def _run_parent(args: argparse.Namespace, config: Config) -> int:
    """The supervisor of ``server.workers`` workers (``streamer.server.supervisor``)."""
    server = config.server
    # Resolved once here: a random default must be the same in every worker.
    args.instance_id = resolve_instance_id(server.instance_id)
    argv = ["-v"] * int(getattr(args, "verbose", 0) or 0) + ["serve", *_worker_flags(args)]
    argv = ["--log-format", args.log_format, *argv]  # the workers log as the parent does
    # The config file may set server.workers without --workers: the workers must be told
    # they are workers, which --worker does; their own count is not used.
    try:
        return run_async(
            supervise(server.workers, server.host, server.port, argv, server.drain_s, _announce)
        )
    except WorkerStartError as exc:
        if exc.user_error:
            raise ConfigError(str(exc)) from None
        sys.stderr.write(f"msadtalker: error: {exc}\n")
        return 1


def _worker_flags(args: argparse.Namespace) -> list[str]:
    """The parent's own ``serve`` flags (avatar, renderer, config, lookahead, ...), as given."""
    flags: list[str] = []
    for action in args.serve_parser._actions:
        if not action.option_strings or action.dest in _PARENT_ONLY:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False:
            continue
        flag = action.option_strings[-1]
        flags += [flag] if action.nargs == 0 else [flag, str(value)]
    return flags


def _run_worker(args: argparse.Namespace, config: Config) -> int:
    """Worker ``--worker I`` of a ``serve --workers N`` parent: a full server on the shared
    port and its own internal port; says on stdout (one JSON line) that it is ready, or why
    it could not start."""
    try:
        ports = tuple(int(p) for p in str(args.worker_ports or "").split(",") if p)
        try:
            cluster = Cluster(args.worker, ports, hop_secret=take_hop_secret())
        except ValueError as exc:
            raise ConfigError(f"--worker {args.worker}: {exc}") from None
        if args.worker_fd is None:
            raise ConfigError("--worker needs --worker-fd (it is set by `serve --workers`)")
        internal = socket.socket(fileno=args.worker_fd)
        stages = stage_factory_from_args(config, args, lookahead_ms=config.server.lookahead_ms)
        check = check_at_start(stages)
        run_async(serve_worker(config, stages, cluster, internal))
    except InputError as exc:
        tell_parent({"error": str(exc), "user_error": True})
        return 2
    return _exit_code(0, check)
