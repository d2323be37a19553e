"""Peer-connection lifecycle: negotiate an offer into a peer, watch it, close it, drain all.

* ``negotiate``: a checked ``Offer`` -> an aiortc peer connection with its outputs attached
  (the avatar video on the video m-line; the delayed speech on the audio m-line when the
  remote receives audio) -> the answer. A publisher opens a room and a ``LiveSession`` (which
  starts ticking when the peer connects, so an offer nobody connects to costs no pipeline
  time); a viewer subscribes to its room's session. Whatever fails on the way is undone.
* ``watch`` (part of ``negotiate``): a peer that has not connected within
  ``connect_timeout_s``, whose connection fails or closes, that sends no RTCP for
  ``peer_timeout_s`` (vanished), or whose session ended, is closed.
* ``close_peer``: idempotent cleanup of one peer: its tasks, tracks, connection and, for a
  publisher, its session, its room and the room's viewers.
* ``drain``: stop accepting, let every publisher session flush its pipeline into its sinks
  (recorded traces are complete), close every peer.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import uuid
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import clock as rtc_clock
from aiortc.mediastreams import MediaStreamTrack

from streamer.io.aiortc_workarounds import (
    remote_receives,
    sends_opus,
    use_loopback_candidates,
    use_low_latency_receive,
)
from streamer.io.trace import TraceWriter
from streamer.io.webrtc import (
    AvatarVideoTrack,
    SpeechAudioTrack,
    close_quietly,
    make_peer_connection,
    pump_mic,
)
from streamer.server.errors import RequestError
from streamer.server.offers import Offer, OfferError
from streamer.server.rooms import Room
from streamer.server.state import Peer, ServerState
from streamer.session import FrameSink, LiveSession

log = logging.getLogger(__name__)


async def negotiate(state: ServerState, offer: Offer, room: Room[Peer] | None) -> dict[str, Any]:
    """The answer (JSON body) to ``offer``; ``room``: the viewer's room (checked by the
    caller), ``None`` for a publisher."""
    role = offer.role
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
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc raises many types for a bad offer
            raise OfferError(400, _describe_bad_offer(exc)) from None
        if role == "publisher":
            try:
                room = state.rooms.open(offer.room)
            except KeyError:
                raise RequestError(409, f"room {offer.room!r} already has a publisher") from None
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
            raise RequestError(404, f"room {room.id!r} closed while the viewer was joining")
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
    else:
        room.viewers[peer_id] = peer
    state.peers[peer_id] = peer
    _watch(state, peer, pc)
    log.info("%s %s joined room %s", role, peer_id, room.id)
    local = pc.localDescription
    return {
        "sdp": local.sdp,
        "type": local.type,
        "session_id": peer_id,
        "room": room.id,
        "role": role,
        "viewer_url": f"/viewer?room={room.id}",
    }


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
    """Avatar video on the video m-line, the delayed speech on the audio m-line, each where
    the remote receives."""
    for transceiver in pc.getTransceivers():
        if not remote_receives(transceiver):
            continue
        if transceiver.kind == "video":
            sub = peer.session.subscribe(f"{peer.role}-{peer.id}-video")
            track: MediaStreamTrack = AvatarVideoTrack(sub)
        elif transceiver.kind == "audio":
            # Audio costs little to queue; a longer queue avoids silence fills on hiccups.
            sub = peer.session.subscribe(
                f"{peer.role}-{peer.id}-audio", 2 * peer.session.config.queue_frames
            )
            track = SpeechAudioTrack(sub, opus=sends_opus(transceiver))
        else:
            continue
        peer.subscriptions.append(sub)
        transceiver.sender.replaceTrack(track)
        receives_mic = transceiver.kind == "audio" and peer.role == "publisher"
        transceiver.direction = "sendrecv" if receives_mic else "sendonly"


def _watch(state: ServerState, peer: Peer, pc: RTCPeerConnection) -> None:
    def close_later() -> None:
        state.spawn(close_peer(state, peer), f"close-{peer.id}")

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and peer.role == "publisher":
            if not peer.session.started:
                peer.session.start()
        elif pc.connectionState in ("failed", "closed"):
            close_later()

    async def connect_deadline() -> None:
        await asyncio.sleep(state.server.connect_timeout_s)
        if pc.connectionState != "connected":
            log.info("%s %s did not connect in time; closing", peer.role, peer.id)
            close_later()

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
                close_later()
                return

    peer.spawn(connect_deadline(), "connect-deadline")
    peer.spawn(watchdog(), "watchdog")
    if peer.role == "publisher":

        async def session_ended() -> None:
            await peer.session.finished.wait()
            close_later()

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


async def drain(state: ServerState) -> None:
    """Stop accepting, flush every publisher session into its sinks, close every peer."""
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


def add_local_publisher(state: ServerState, session: LiveSession, room_id: str) -> Peer:
    """Publish a session fed from this machine (the kiosk's mic) in room ``room_id``; viewers
    join it like any room. It stays until the server drains."""
    room = state.rooms.open(room_id)
    peer = Peer(id=session.id, role="publisher", room=room, pc=None, session=session)
    room.publisher = peer
    state.peers[peer.id] = peer
    return peer
