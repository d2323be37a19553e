"""The live server: aiohttp signalling + aiortc media around ``LiveSession``.

Routes::

    GET  /                          publisher page (mic -> avatar)      web/index.html
    GET  /viewer?room=ID            watch-only page                     web/viewer.html
    GET  /static/...                page assets                         web/
    POST /offer                     {"sdp", "type": "offer", "role"?, "room"?} -> answer JSON
    GET  /sessions/{id}             live figures of a session (JSON)
    POST /sessions/{id}/interrupt   barge-in: buffered audio cleared, avatar to rest
    DELETE /sessions/{id}           hang up
    GET  /healthz                   200 while sessions are accepted, 503 when draining or full
    GET  /avatar.jpg                the avatar at rest (the pages show it before they connect)

A publisher offer carries the mic (audio, sendrecv or sendonly) and receives the avatar video
(and, with sendrecv audio, the delayed speech). It opens a room (``room`` names it, otherwise a
random id). A viewer offer (``"role": "viewer"``, ``room`` required) only receives. Every error
is a 4xx/5xx with a JSON body ``{"error": ..., "status": ...}``.

Limits (``ServerConfig``): ``max_sessions`` peer connections in all (offers being negotiated
included), ``max_viewers_per_room``, ``max_sdp_bytes``. A peer that has not connected within
``connect_timeout_s`` is closed; a peer whose connection fails or closes is cleaned up (its
tasks, tracks, session and, for a publisher, its room and viewers).

Shutdown (``drain``): stop accepting (``/healthz`` 503, offers 503), let every publisher
session flush its pipeline into its sinks (recorded traces are complete), close every peer
connection. All state hangs off the app (``web.AppKey``); nothing is module-global.

One of several workers (``cluster``, ``msadtalker serve --workers N``): session and room ids
carry the worker's prefix, publishers without a room go to the least loaded worker, and a
request for an id another worker owns is forwarded to it (``streamer.cluster``). The limits
are this worker's; ``/healthz`` answers for this worker alone.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import clock as rtc_clock
from aiortc.mediastreams import MediaStreamTrack

from msadtalker.timing import SAMPLES_PER_FRAME
from streamer.build import StageFactory
from streamer.clock import Clock, RealtimeClock
from streamer.cluster import WORKER_HEADER, Cluster, Forwarder, OwnerUnreachable
from streamer.config import Config
from streamer.fanout import Subscription
from streamer.io.trace import TraceWriter
from streamer.io.webrtc import (
    AvatarVideoTrack,
    SpeechAudioTrack,
    close_quietly,
    make_peer_connection,
    pump_mic,
    resolve_loopback_mode,
    use_loopback_candidates,
    use_low_latency_receive,
)
from streamer.pipeline import Pipeline
from streamer.rooms import ROOM_ID, Room, RoomRegistry
from streamer.session import FrameSink, LiveSession
from streamer.types import AudioChunk, VideoFrame

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
Role = Literal["publisher", "viewer"]
POSTER_FRAMES = 5  # frames of silence rendered for the poster (after the pipeline's lookahead)

_SENDING = {"sendrecv", "sendonly"}
_DIRECTIONS = {"sendrecv", "sendonly", "recvonly", "inactive"}


class OfferError(Exception):
    """A request the client must fix; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _keep(tasks: set[asyncio.Task[Any]], coro: Awaitable[Any], name: str) -> None:
    """Start ``coro`` as a task held in ``tasks`` until it is done (so it can be cancelled)."""
    task: asyncio.Task[Any] = asyncio.ensure_future(coro)
    task.set_name(name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


@dataclass
class Peer:
    """One peer connection: a publisher (owns the room's session) or a viewer. A local
    publisher (the kiosk's microphone) has no peer connection."""

    id: str
    role: Role
    room: Room[Peer]
    pc: RTCPeerConnection | None
    session: LiveSession
    subscriptions: list[Subscription] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        _keep(self.tasks, coro, f"{name}-{self.id}")


class ServerState:
    """Everything the running server holds; one per app."""

    def __init__(
        self,
        config: Config,
        stage_factory: StageFactory,
        clock_factory: Callable[[], Clock],
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config
        self.server = config.server
        self.stage_factory = stage_factory
        self.clock_factory = clock_factory
        self.cluster = cluster
        self.forwarder = (
            Forwarder(cluster, offer_timeout_s=config.server.connect_timeout_s)
            if cluster is not None
            else None
        )
        self.id_prefix = cluster.prefix if cluster is not None else ""
        self.peers: dict[str, Peer] = {}
        self.rooms: RoomRegistry[Peer] = RoomRegistry(self.id_prefix)
        self.negotiating = 0
        self.placing = 0  # offers whose worker is being chosen (``cluster``), counted as load
        self.draining = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.loopback = resolve_loopback_mode(self.server.ice_loopback, self.server.host)
        self.poster: asyncio.Future[bytes] | None = None  # JPEG of the avatar at rest

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        _keep(self.tasks, coro, name)

    @property
    def load(self) -> int:
        return len(self.peers) + self.negotiating + self.placing


STATE = web.AppKey("state", ServerState)


# ---------------------------------------------------------------------------- app


def make_app(
    config: Config,
    stage_factory: StageFactory,
    clock_factory: Callable[[], Clock] = RealtimeClock,
    web_dir: Path = WEB_DIR,
    cluster: Cluster | None = None,
) -> web.Application:
    """The aiohttp application; ``stage_factory()`` builds one session's stages. ``cluster``:
    this app is one of several worker processes (see ``streamer.cluster``)."""
    middlewares: list[Any] = [_json_errors]
    if cluster is not None:
        middlewares.insert(0, _worker_header(cluster.index))
    # Bodies are JSON-wrapped SDP: allow for escaping overhead, reject the rest unread.
    app = web.Application(
        middlewares=middlewares, client_max_size=2 * config.server.max_sdp_bytes + 4096
    )
    app[STATE] = ServerState(config, stage_factory, clock_factory, cluster)
    app.router.add_get("/", _page(web_dir / "index.html"))
    app.router.add_get("/viewer", _page(web_dir / "viewer.html"))
    if web_dir.is_dir():
        app.router.add_static("/static", web_dir)
    app.router.add_post("/offer", handle_offer)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/avatar.jpg", handle_poster)
    app.router.add_get("/sessions/{id}", handle_stats)
    app.router.add_post("/sessions/{id}/interrupt", handle_interrupt)
    app.router.add_delete("/sessions/{id}", handle_hangup)
    app.on_shutdown.append(_on_shutdown)
    if cluster is not None:
        app.on_cleanup.append(_close_forwarder)
    return app


async def _on_shutdown(app: web.Application) -> None:
    await drain(app)


async def _close_forwarder(app: web.Application) -> None:
    forwarder = app[STATE].forwarder
    if forwarder is not None:
        await forwarder.aclose()


def _worker_header(index: int) -> Any:
    """Every answer says which worker received the request (tests, debugging, a proxy's logs)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        response.headers[WORKER_HEADER] = str(index)
        return response

    return middleware


async def drain(app: web.Application) -> None:
    """Stop accepting, flush every publisher session into its sinks, close every peer."""
    state = app[STATE]
    if state.draining and not state.peers:
        return
    state.draining = True
    timeout = state.server.drain_timeout_s
    publishers = [p for p in state.peers.values() if p.role == "publisher"]
    await asyncio.gather(*(p.session.drain(timeout) for p in publishers), return_exceptions=True)
    await asyncio.gather(*(close_peer(state, p) for p in list(state.peers.values())))
    tasks = list(state.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except OfferError as exc:
        return _error(exc.status, str(exc))
    except OwnerUnreachable as exc:
        return _error(503, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason
        if exc.status == 413:
            reason = "request body too large"
        return _error(exc.status, reason, headers=exc.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client went away: there is no one to answer
    except Exception:
        # A bug, not the client's fault: still a JSON answer, and the details in the log.
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal server error")


def _error(status: int, message: str, headers: Any = None) -> web.Response:
    extra = {k: v for k, v in (headers or {}).items() if k.lower() in ("retry-after", "allow")}
    return web.json_response(
        {"error": message, "status": status}, status=status, headers=extra or None
    )


def _page(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    installed = path.is_file()  # checked once, at start-up

    async def handler(request: web.Request) -> web.StreamResponse:
        if not installed:
            raise web.HTTPNotFound(reason=f"page {path.name} is not installed")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    return handler


# ---------------------------------------------------------------------------- handlers


async def handle_health(request: web.Request) -> web.Response:
    """200 while a new session would be accepted; 503 when draining or full."""
    state = request.app[STATE]
    full = state.load >= state.server.max_sessions
    status = "draining" if state.draining else "full" if full else "ok"
    body: dict[str, Any] = {
        "status": status,
        "sessions": len(state.peers),
        "rooms": len(state.rooms),
        "capacity": state.server.max_sessions,
    }
    if state.cluster is not None:
        # This worker's alone (a load balancer sees N independent processes on one port).
        body.update(worker=state.cluster.index, workers=len(state.cluster), load=state.load)
    return web.json_response(body, status=200 if status == "ok" else 503)


async def handle_poster(request: web.Request) -> web.Response:
    """The avatar at rest as a JPEG, rendered once (off the event loop) on first request."""
    state = request.app[STATE]
    if state.poster is None:
        loop = asyncio.get_running_loop()
        state.poster = loop.run_in_executor(None, _render_poster, state.stage_factory)
    try:
        jpeg = await asyncio.shield(state.poster)
    except Exception:
        log.exception("rendering the avatar poster failed")
        raise OfferError(404, "the avatar picture is not available") from None
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})


def _render_poster(stage_factory: StageFactory) -> bytes:
    """The avatar at rest, made by the pipeline itself (so for any renderer): a few frames of
    silence through a fresh stage list, the one with the eyes most open."""
    pipeline: Pipeline[Any] = Pipeline(list(stage_factory()))
    silence = np.zeros((pipeline.delay_frames + POSTER_FRAMES) * SAMPLES_PER_FRAME, np.float32)
    frames = [f for f in pipeline.push(AudioChunk(silence, 0)) if isinstance(f, VideoFrame)]
    if not frames:
        raise ValueError("the stages make no pictures")
    rest = min(frames, key=lambda f: f.motion.blink)
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rest.image[..., ::-1]))
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg)


async def handle_offer(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        raise OfferError(503, "server is shutting down")
    offer = await _read_offer(request, state.server.max_sdp_bytes)
    role: Role = offer["role"]
    if state.cluster is not None and not state.cluster.is_internal(request):
        assert state.forwarder is not None
        state.placing += 1
        try:
            owner, what = await _offer_owner(state, state.cluster, offer)
        finally:
            state.placing -= 1
        if owner != state.cluster.index:
            state.forwarder.reserve(owner)  # before any await: the next placement sees it
            try:
                return await state.forwarder.relay(request, owner, what)
            finally:
                state.forwarder.release(owner)
    if state.load >= state.server.max_sessions:
        return _error(
            429, "server is at its session limit; try again later", headers={"Retry-After": "5"}
        )
    room: Room[Peer] | None = None
    if role == "viewer":
        room = state.rooms.get(offer["room"])
        if room is None or room.publisher is None:
            raise OfferError(404, f"no room {offer['room']!r} with a publisher")
        if len(room.viewers) >= state.server.max_viewers_per_room:
            return _error(429, "room is at its viewer limit", headers={"Retry-After": "5"})
    state.negotiating += 1
    try:
        return await _negotiate(state, offer, role, room)
    finally:
        state.negotiating -= 1


async def _offer_owner(
    state: ServerState, cluster: Cluster, offer: dict[str, Any]
) -> tuple[int, str]:
    """The worker an offer belongs to: a named room's owner, else the least loaded worker."""
    if offer["room"] is not None:
        return cluster.owner_of_room(offer["room"]), f"room {offer['room']!r}"
    assert state.forwarder is not None

    def own_load() -> int | None:
        load = state.load - 1  # without this offer (counted in ``placing`` meanwhile)
        return load if load < state.server.max_sessions else None

    owner = await state.forwarder.least_loaded(own_load)
    return owner, "the new session"


async def _read_offer(request: web.Request, max_sdp: int) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > 2 * max_sdp + 4096:
        raise OfferError(413, "request body too large")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OfferError(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise OfferError(400, "body must be a JSON object")
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer":
        raise OfferError(400, 'field "type" must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError(400, 'field "sdp" must be a non-empty string')
    if len(sdp.encode("utf-8", "replace")) > max_sdp:
        raise OfferError(413, f"SDP larger than {max_sdp} bytes")
    role = body.get("role", "publisher")
    if role not in ("publisher", "viewer"):
        raise OfferError(400, 'field "role" must be "publisher" or "viewer"')
    room = body.get("room")
    if room is not None and (not isinstance(room, str) or not ROOM_ID.match(room)):
        raise OfferError(400, 'field "room" must be 1-64 characters of A-Z a-z 0-9 _ -')
    if role == "viewer" and room is None:
        raise OfferError(400, 'a viewer offer needs a "room"')
    media = _media_sections(sdp)
    if role == "publisher":
        if not any(kind == "audio" and d in _SENDING for kind, d in media):
            raise OfferError(400, "offer has no microphone: an audio track that sends is needed")
    if not any(kind == "video" and d in ("sendrecv", "recvonly") for kind, d in media):
        raise OfferError(400, "offer does not receive video (add a recvonly video transceiver)")
    return {"sdp": sdp, "role": role, "room": room}


def _media_sections(sdp: str) -> list[tuple[str, str]]:
    """(kind, direction) of each m= section; a malformed SDP is a 400."""
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise OfferError(400, "malformed SDP: it must start with v=0")
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise OfferError(400, f"malformed SDP line: {line[:40]!r}")
    sections: list[tuple[str, str]] = []
    session_dir = "sendrecv"
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                raise OfferError(400, f"malformed SDP media line: {line[:60]!r}")
            sections.append((parts[0], session_dir))
        elif line.startswith("a=") and line[2:] in _DIRECTIONS:
            if sections:
                sections[-1] = (sections[-1][0], line[2:])
            else:
                session_dir = line[2:]
    if not sections:
        raise OfferError(400, "SDP has no media sections")
    return sections


async def _negotiate(
    state: ServerState, offer: dict[str, Any], role: Role, room: Room[Peer] | None
) -> web.Response:
    pc = make_peer_connection(state.server.stun_url)
    peer_id = state.id_prefix + uuid.uuid4().hex[:12]
    mic_tracks: list[MediaStreamTrack] = []

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            mic_tracks.append(track)

    created_room = False
    session: LiveSession | None = None
    try:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        except Exception as exc:  # aiortc raises many types for a bad offer
            raise OfferError(400, _describe_bad_offer(exc)) from None
        if role == "publisher":
            try:
                room = state.rooms.open(offer["room"])
            except KeyError:
                raise OfferError(409, f"room {offer['room']!r} already has a publisher") from None
            created_room = True
            session = _new_session(state, peer_id)
        else:
            assert room is not None and room.publisher is not None
            session = room.publisher.session
        peer = Peer(id=peer_id, role=role, room=room, pc=pc, session=session)
        _attach_outputs(pc, peer)
        use_loopback_candidates(pc, state.loopback)
        use_low_latency_receive(pc)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        if role == "viewer" and (room.publisher is None or room.publisher.closed):
            raise OfferError(404, f"room {room.id!r} closed while the viewer was joining")
    except BaseException:
        if session is not None and role == "publisher":
            await session.aclose()
        if created_room and room is not None:
            state.rooms.close(room.id)
        await close_quietly(pc)
        raise

    if role == "publisher":
        room.publisher = peer
        if mic_tracks:
            peer.spawn(pump_mic(mic_tracks[0], session.feed), "mic")
        # The session starts ticking when the peer connects (see _watch): an offer nobody
        # connects to costs no pipeline time while it waits for its connect deadline.
    else:
        room.viewers[peer_id] = peer
    state.peers[peer_id] = peer
    _watch(state, peer, pc)
    log.info("%s %s joined room %s", role, peer_id, room.id)
    local = pc.localDescription
    return web.json_response(
        {
            "sdp": local.sdp,
            "type": local.type,
            "session_id": peer_id,
            "room": room.id,
            "role": role,
            "viewer_url": f"/viewer?room={room.id}",
        }
    )


def _new_session(state: ServerState, peer_id: str) -> LiveSession:
    sinks: list[FrameSink] = []
    if state.server.record_dir:
        directory = Path(state.server.record_dir)
        directory.mkdir(parents=True, exist_ok=True)
        sinks.append(TraceWriter(directory / f"{peer_id}.csv"))
    return LiveSession(
        state.stage_factory(),
        state.clock_factory(),
        state.server,
        session_id=peer_id,
        sinks=sinks,
    )


def _describe_bad_offer(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"remote (audio|video) description send parameters", text)
    if match:
        kind = match.group(1)
        supported = "opus, G722, PCMU, PCMA" if kind == "audio" else "VP8, H264"
        return f"no supported {kind} codec in the offer (supported: {supported})"
    return f"unusable SDP offer: {text or type(exc).__name__}"


def _attach_outputs(pc: RTCPeerConnection, peer: Peer) -> None:
    """Avatar video on the video m-line, the delayed speech on the audio m-line when the
    remote receives audio (``_offerDirection`` is the offer's direction seen from here)."""
    for transceiver in pc.getTransceivers():
        remote_receives = getattr(transceiver, "_offerDirection", None) in ("sendrecv", "sendonly")
        if not remote_receives:
            continue
        if transceiver.kind == "video":
            sub = peer.session.subscribe(f"{peer.role}-{peer.id}-video")
            track: MediaStreamTrack = AvatarVideoTrack(sub)
        elif transceiver.kind == "audio":
            # Audio costs little to queue; a longer queue avoids silence fills on hiccups.
            sub = peer.session.subscribe(
                f"{peer.role}-{peer.id}-audio", 2 * peer.session.config.queue_frames
            )
            track = SpeechAudioTrack(sub, opus=_sends_opus(transceiver))
        else:
            continue
        peer.subscriptions.append(sub)
        transceiver.sender.replaceTrack(track)
        receives_mic = transceiver.kind == "audio" and peer.role == "publisher"
        transceiver.direction = "sendrecv" if receives_mic else "sendonly"


def _sends_opus(transceiver: Any) -> bool:
    """Whether the negotiated send codec (aiortc's first common codec) is Opus."""
    codecs = getattr(transceiver, "_codecs", None) or []
    return bool(codecs) and str(codecs[0].mimeType).lower() == "audio/opus"


def _watch(state: ServerState, peer: Peer, pc: RTCPeerConnection) -> None:
    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and peer.role == "publisher":
            if not peer.session.started:
                peer.session.start()
        elif pc.connectionState in ("failed", "closed"):
            state.spawn(close_peer(state, peer), f"close-{peer.id}")

    async def connect_deadline() -> None:
        await asyncio.sleep(state.server.connect_timeout_s)
        if pc.connectionState != "connected":
            log.info("%s %s did not connect in time; closing", peer.role, peer.id)
            state.spawn(close_peer(state, peer), f"close-{peer.id}")

    async def watchdog() -> None:
        timeout = state.server.peer_timeout_s
        connected_at: datetime.datetime | None = None
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            if pc.connectionState != "connected":
                continue
            now = rtc_clock.current_datetime()
            connected_at = connected_at or now
            heard = connected_at
            for sender in pc.getSenders():
                for stat in (await sender.getStats()).values():
                    if stat.type == "remote-inbound-rtp" and stat.timestamp > heard:
                        heard = stat.timestamp
            if (now - heard).total_seconds() > timeout:
                log.info("%s %s sent nothing for %.0f s; closing", peer.role, peer.id, timeout)
                state.spawn(close_peer(state, peer), f"close-{peer.id}")
                return

    peer.spawn(connect_deadline(), "connect-deadline")
    peer.spawn(watchdog(), "watchdog")
    if peer.role == "publisher":

        async def session_ended() -> None:
            await peer.session.finished.wait()
            state.spawn(close_peer(state, peer), f"close-{peer.id}")

        peer.spawn(session_ended(), "session-end")


async def close_peer(state: ServerState, peer: Peer) -> None:
    """Idempotent cleanup of one peer (and, for a publisher, its room)."""
    if peer.closed:
        return
    peer.closed = True
    state.peers.pop(peer.id, None)
    current = asyncio.current_task()
    tasks = [t for t in peer.tasks if t is not current]
    for task in tasks:
        task.cancel()
    for sub in peer.subscriptions:
        sub.close()
    if peer.pc is not None:
        await close_quietly(peer.pc)
    await asyncio.gather(*tasks, return_exceptions=True)
    room = peer.room
    if peer.role == "viewer":
        room.viewers.pop(peer.id, None)
    else:
        await peer.session.aclose()
        if room.publisher is peer:
            room.publisher = None
            state.rooms.close(room.id)
        viewers = list(room.viewers.values())
        await asyncio.gather(*(close_peer(state, v) for v in viewers))
    log.info("%s %s left room %s", peer.role, peer.id, room.id)


def add_local_publisher(app: web.Application, session: LiveSession, room_id: str) -> Peer:
    """Publish a session fed from this machine (the kiosk's mic) in room ``room_id``; viewers
    join it like any room. It stays until the app drains."""
    state = app[STATE]
    room = state.rooms.open(room_id)
    peer = Peer(id=session.id, role="publisher", room=room, pc=None, session=session)
    room.publisher = peer
    state.peers[peer.id] = peer
    return peer


async def _elsewhere(request: web.Request) -> web.Response | None:
    """The owner's answer when the session in the path belongs to another worker, else None."""
    state = request.app[STATE]
    cluster = state.cluster
    if cluster is None or cluster.is_internal(request):
        return None
    session_id = request.match_info["id"]
    owner = cluster.owner_of_session(session_id)
    if owner == cluster.index:
        return None
    assert state.forwarder is not None
    return await state.forwarder.relay(request, owner, f"session {session_id!r}")


def _peer(request: web.Request) -> Peer:
    state = request.app[STATE]
    peer = state.peers.get(request.match_info["id"])
    if peer is None:
        raise OfferError(404, f"no session {request.match_info['id']!r}")
    return peer


async def handle_stats(request: web.Request) -> web.Response:
    if (forwarded := await _elsewhere(request)) is not None:
        return forwarded
    peer = _peer(request)
    body: dict[str, Any] = {
        "session_id": peer.id,
        "role": peer.role,
        "room": peer.room.id,
        "viewers": len(peer.room.viewers),
        "connection": peer.pc.connectionState if peer.pc is not None else "local",
        "session": peer.session.snapshot(),
        "tracks": [
            {"name": s.name, "queued": len(s), "delivered": s.delivered, "dropped": s.dropped}
            for s in peer.subscriptions
        ],
    }
    return web.json_response(body)


async def handle_interrupt(request: web.Request) -> web.Response:
    if (forwarded := await _elsewhere(request)) is not None:
        return forwarded
    peer = _peer(request)
    if peer.role != "publisher":
        raise OfferError(403, "only the room's publisher can interrupt")
    frame = peer.session.interrupt()
    return web.json_response({"interrupted": True, "session_id": peer.id, "from_tick": frame})


async def handle_hangup(request: web.Request) -> web.Response:
    if (forwarded := await _elsewhere(request)) is not None:
        return forwarded
    peer = _peer(request)
    await close_peer(request.app[STATE], peer)
    return web.json_response({"closed": True, "session_id": peer.id})
