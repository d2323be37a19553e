"""``make_app``: the aiohttp application: routes, middlewares, start-up and shutdown hooks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from streamer.assembly import StageFactory
from streamer.clock import Clock, RealtimeClock
from streamer.config import Config
from streamer.server.access import authenticate_requests
from streamer.server.cluster import Cluster
from streamer.server.connections import handler_args
from streamer.server.errors import json_errors
from streamer.server.forwarding import OFFER_ROUTE, forward_to_owner, worker_header
from streamer.server.handlers import (
    handle_hangup,
    handle_health,
    handle_interrupt,
    handle_metrics,
    handle_offer,
    handle_poster,
    handle_ready,
    handle_stats,
    page,
)
from streamer.server.limits import limit_offers
from streamer.server.metrics import count_answers
from streamer.server.offers import max_body_bytes
from streamer.server.outputs import add_output_routes
from streamer.server.peers import drain
from streamer.server.security import (
    RedactingAccessLogger,
    cors_preflight,
    security_headers,
    static_files,
)
from streamer.server.state import STATE, ServerState
from streamer.server.whep import add_whep_routes
from streamer.server.whip import add_whip_routes
from streamer.server.wish import PROTOCOLS, handle_ice_servers

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def make_app(
    config: Config,
    stage_factory: StageFactory,
    clock_factory: Callable[[], Clock] = RealtimeClock,
    web_dir: Path = WEB_DIR,
    cluster: Cluster | None = None,
) -> web.Application:
    """The aiohttp application; ``stage_factory()`` builds one session's stages. ``cluster``:
    this app is one of several worker processes (``streamer.server.forwarding``)."""
    # Outermost first: the worker stamp is on every answer, errors included; the caller's
    # credential is established before anything is read or relayed (``access``); requests
    # for another worker are relayed before any handler sees them, their failures JSON too.
    # Each client's offer budget is spent before its credential is looked at (``limits``).
    offer_routes = frozenset({OFFER_ROUTE, *PROTOCOLS.values()})  # each spends an offer
    middlewares: list[Middleware] = [
        json_errors,
        limit_offers(offer_routes),
        authenticate_requests(),
    ]
    if cluster is not None:
        middlewares = [
            worker_header(cluster.index),
            json_errors,
            limit_offers(offer_routes, cluster),
            authenticate_requests(cluster),
            forward_to_owner(cluster),
        ]
    if config.server.cors_origins:
        middlewares.insert(0, cors_preflight(config.server.cors_origins))
    state = ServerState(config, stage_factory, clock_factory, cluster)
    # Outermost of all: every answer is counted as the client got it.
    middlewares.insert(0, count_answers(state.metrics, cluster.is_internal if cluster else None))
    # Bodies are JSON-wrapped SDP: anything larger is refused unread.
    app = web.Application(
        middlewares=middlewares,
        client_max_size=max_body_bytes(config.server.max_sdp_bytes),
        handler_args={
            **handler_args(config.server),  # keep-alive timeout, quiet client errors
            "access_log_class": RedactingAccessLogger,  # no ?token= in the log
        },
    )
    app[STATE] = state
    # ``{session_id}`` and the route name ``offer`` are what the forwarding middleware reads.
    app.router.add_get("/", page(web_dir / "index.html"))
    app.router.add_get("/viewer", page(web_dir / "viewer.html"))
    app.router.add_get("/static/{path:.+}", static_files(web_dir))
    app.router.add_post("/offer", handle_offer, name=OFFER_ROUTE)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/avatar.jpg", handle_poster)
    app.router.add_get("/sessions/{session_id}", handle_stats)
    app.router.add_post("/sessions/{session_id}/interrupt", handle_interrupt)
    app.router.add_delete("/sessions/{session_id}", handle_hangup)
    add_output_routes(app)  # /rooms/{room}/outputs[/{output_id}]: RTMP push, recording
    add_whip_routes(app)  # /whip/{room}, /whip/resource/{session_id}
    add_whep_routes(app)  # /whep/{room}, /whep/resource/{session_id}
    app.router.add_get("/ice-servers", handle_ice_servers)
    app.on_response_prepare.append(security_headers(config.server))
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close_forwarder)
    return app


async def _drain(app: web.Application) -> None:
    await drain(app[STATE])


async def _close_forwarder(app: web.Application) -> None:
    forwarder = app[STATE].forwarder
    if forwarder is not None:
        await forwarder.aclose()
