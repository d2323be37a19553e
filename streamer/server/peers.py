"""Peer-connection lifecycle: negotiate an offer into a peer, watch it, close it, drain all.

* ``negotiate``: a checked ``Offer`` -> an aiortc peer connection with its outputs attached
  (the avatar video on the video m-line; the delayed speech on the audio m-line when the
  remote receives audio) -> the answer. A publisher opens a room and a ``LiveSession`` (which
  starts ticking when the peer connects, so an offer nobody connects to costs no pipeline
  time); a viewer subscribes to its room's session. Whatever fails on the way is undone;
  an offer aiortc cannot answer is a 400 (one INFO line), not a failure of ours.
* ``watch`` (part of ``negotiate``): a peer that has not connected within
  ``connect_timeout_s``, whose connection fails or closes, that sends no RTCP and no media for
  ``peer_timeout_s`` (vanished), or whose session ended, is closed; so is a publisher whose
  mic sent nothing while its room had no viewer for ``idle_session_s``, and any peer after
  ``max_session_s``. A vanished peer is told of the close again for a while
  (``close_telling_the_remote``): it most likely missed the first one.
* ``close_peer``: idempotent cleanup of one peer: its tasks, tracks, connection and, for a
  publisher, its session, its room and the room's viewers. The cleanup runs as a task of its
  own: a second caller waits for it, and cancelling a caller does not cut it short (a peer
  connection closed half-way would stay open on the client's side).
* ``drain`` (SIGTERM): stop accepting (``/readyz`` and offers answer 503), give the live
  sessions up to ``server.drain_s`` to finish (a session has finished when its peer hung up
  or its avatar is not speaking: nobody is cut off mid-word), flush every publisher session
  into its sinks (recorded traces are complete), close every peer connection (the client's
  DTLS transport sees the close at once), cancel what is left.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import clock as rtc_clock
from aiortc.mediastreams import MediaStreamTrack

from streamer.fanout import Subscription
from streamer.io.aiortc_workarounds import (
    SYNCED_MAX_PLAYOUT_DELAY_MS,
    close_telling_the_remote,
    content_clock,
    remote_receives,
    sends_opus,
    use_content_clock,
    use_loopback_candidates,
    use_low_latency_receive,
    use_zero_playout_delay,
)
from streamer.io.trace import TraceWriter
from streamer.io.webrtc import (
    AvatarVideoTrack,
    SpeechAudioTrack,
    TrackObserver,
    close_quietly,
    pump_mic,
)
from streamer.logs import bind, context_with
from streamer.server.auth import OPEN
from streamer.server.errors import RequestError
from streamer.server.ice import ice_servers, peer_connection
from streamer.server.offers import Offer, OfferError
from streamer.server.rooms import Room
from streamer.server.state import Peer, ServerState
from streamer.session import FrameSink, LiveSession

log = logging.getLogger(__name__)
# Drain: the time a session's pipeline gets to flush into its recordings even when waiting
# for the sessions to finish took all of ``server.drain_s`` (a few frames of lookahead).
FLUSH_AT_LEAST_S = 1.0
# A peer dropped for silence is told of the close (DTLS close_notify) every second for this
# long, so that it sees the close within a second of coming back from a stall.
VANISHED_CLOSE_LINGER_S = 10.0


async def negotiate(
    state: ServerState,
    offer: Offer,
    room: Room[Peer] | None,
    owner: str = OPEN.subject,
    *,
    client: str = "",
) -> dict[str, Any]:
    """The answer (JSON body) to ``offer``; ``room``: the viewer's room (checked by the
    caller), ``None`` for a publisher; ``owner``: the credential subject the peer is bound to
    (``streamer.server.access``); ``client``: its address (``streamer.server.limits``)."""
    role = offer.role
    pc = peer_connection(ice_servers(state.config, time.time()))
    # 128 random bits: in open mode the id is the only capability to read or hang up.
    peer_id = state.id_prefix + secrets.token_hex(16)
    bind({"session_id": peer_id})  # this request's log lines (its task ends with it)
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
            raise _unusable(exc) from None
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
        peer = Peer(
            id=peer_id, role=role, room=room, pc=pc, session=session, owner=owner, client=client
        )
        _attach_outputs(pc, peer, state.metrics)
        use_loopback_candidates(pc, state.loopback)
        use_low_latency_receive(pc)
        # The picture as soon as it is decoded. A viewer's page lines it up with the voice
        # (sent ahead of it, ``_attach_outputs``): its video may still be held for that.
        synced = role != "publisher"
        use_zero_playout_delay(pc, SYNCED_MAX_PLAYOUT_DELAY_MS if synced else 0)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except OSError:
            raise  # ours: no address or port to gather candidates on
        except Exception as exc:  # what parse_offer let through and aiortc cannot answer
            raise _unusable(exc) from None
        if role == "viewer" and (room.publisher is None or room.publisher.closed):
            raise RequestError(404, f"room {room.id!r} closed while the viewer was joining")
    except BaseException as exc:
        # Offers aiortc could not use, or that failed on our side (not the client's refusals).
        if isinstance(exc, OfferError) or not isinstance(
            exc, RequestError | asyncio.CancelledError
        ):
            state.metrics.errors.labels(kind="negotiation").inc()
        if session is not None and role == "publisher":
            await session.aclose()
        if created_room and room is not None:
            state.rooms.close(room.id)
        await close_quietly(pc)
        raise

    activity = _Activity()
    if role == "publisher":
        room.publisher = peer
        state.broadcasts.open_defaults(room.id, session)  # ``[broadcast]``: push, record
        if mic_tracks:
            peer.spawn(pump_mic(mic_tracks[0], activity.feeding(session.feed)), "mic")
    else:
        room.viewers[peer_id] = peer
    state.peers[peer_id] = peer
    _watch(state, peer, pc, activity)
    bind({"room": room.id})
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
        observer=state.metrics,
    )


def _unusable(exc: Exception) -> OfferError:
    """The 400 for an offer aiortc refused: the client's mistake, one INFO line, no traceback
    (a flood of bad offers must not flood the log)."""
    message = _describe_bad_offer(exc)
    log.info("offer refused: %s (%s)", message, type(exc).__name__)
    return OfferError(400, message)


def _describe_bad_offer(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:160]  # one line, short
    match = re.search(r"remote (audio|video) description send parameters", text)
    if match:
        kind = match.group(1)
        supported = "opus, G722, PCMU, PCMA" if kind == "audio" else "VP8, H264"
        return f"no supported {kind} codec in the offer (supported: {supported})"
    return f"unusable SDP offer: {text or type(exc).__name__}"


def _attach_outputs(pc: RTCPeerConnection, peer: Peer, observer: TrackObserver) -> None:
    """Avatar video on the video m-line, the speech on the audio m-line, each where the remote
    receives; a section the remote only sends on is ``inactive``, unless it is a publisher's
    microphone. The speech leaves as soon as it is in; both senders' reports are on the mic
    clock, so a page that syncs them lines the lips up with the voice
    (``streamer.io.webrtc``)."""
    for transceiver in pc.getTransceivers():
        if not remote_receives(transceiver):
            if not (transceiver.kind == "audio" and peer.role == "publisher"):
                # Media sent to us that nothing reads (a WHIP client's video): not received
                # at all, rather than decoded into a queue nobody empties.
                transceiver.direction = "inactive"
            continue
        session = peer.session
        sub: Subscription[Any]
        if transceiver.kind == "video":
            sub = session.subscribe(f"{peer.role}-{peer.id}-video")
            track: MediaStreamTrack = AvatarVideoTrack(sub, observer, epoch=_epoch(session))
        elif transceiver.kind == "audio":
            # Audio costs little to queue; a longer queue avoids silence fills on hiccups.
            sub = session.subscribe_voice(
                f"{peer.role}-{peer.id}-audio", 4 * session.config.queue_frames
            )
            opus = sends_opus(transceiver)
            track = SpeechAudioTrack(sub, opus=opus, observer=observer, epoch=_epoch(session))
        else:
            continue
        peer.subscriptions.append(sub)
        use_content_clock(transceiver.sender)
        transceiver.sender.replaceTrack(track)
        receives_mic = transceiver.kind == "audio" and peer.role == "publisher"
        transceiver.direction = "sendrecv" if receives_mic else "sendonly"


def media_clocks(peer: Peer) -> dict[str, dict[str, float]]:
    """Per kind the peer is sent: how its RTP timestamps map to the mic time
    (``aiortc_workarounds.content_clock``), for the page's own lip sync (web/avsync.js)."""
    if peer.pc is None:
        return {}
    clocks = {}
    for transceiver in peer.pc.getTransceivers():
        clock = content_clock(transceiver)
        if clock is not None and transceiver.kind is not None:
            clocks[transceiver.kind] = clock
    return clocks


def _epoch(session: LiveSession) -> Callable[[], float | None]:
    return lambda: session.epoch_s


MicFeed = Callable[[np.ndarray, bool], None]  # ``LiveSession.feed``


class _Activity:
    """When a publisher was last in use: its mic sent audio (silence too), or its room had a
    viewer (``server.idle_session_s``)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def feeding(self, feed: MicFeed) -> MicFeed:
        def fed(samples: np.ndarray, discontinuity: bool) -> None:
            self.last = time.monotonic()
            feed(samples, discontinuity)

        return fed


def _watch(state: ServerState, peer: Peer, pc: RTCPeerConnection, activity: _Activity) -> None:
    def close_later(reason: str) -> None:
        reason = "drain" if state.draining else reason
        state.spawn(close_peer(state, peer, reason), f"close-{peer.id}")

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            peer.connected = True  # no longer one of its client's pending offers
        if pc.connectionState == "connected" and peer.role == "publisher":
            if not peer.session.started:
                peer.session.start()
        elif pc.connectionState in ("failed", "closed"):
            close_later(f"connection_{pc.connectionState}")

    async def connect_deadline() -> None:
        await asyncio.sleep(state.server.connect_timeout_s)
        if pc.connectionState != "connected":
            log.info("%s %s did not connect in time; closing", peer.role, peer.id)
            close_later("connect_timeout")

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
            # A peer that only sends (a WHIP client) gets nothing to report on: its media is
            # what is heard of it (the last RTP packet of each source).
            for receiver in pc.getReceivers():
                for source in receiver.getSynchronizationSources():
                    heard = max(heard, source.timestamp)
            if (now - heard).total_seconds() > timeout:
                log.info("%s %s sent nothing for %.0f s; closing", peer.role, peer.id, timeout)
                close_later("vanished")
                return

    async def idle_deadline() -> None:
        limit = state.server.idle_session_s
        while True:
            now = time.monotonic()
            if peer.room.viewers:
                activity.last = now
            remaining = activity.last + limit - now
            if remaining <= 0:
                log.info("publisher %s: no audio and no viewer for %.0f s; closing", peer.id, limit)
                close_later("idle")
                return
            await asyncio.sleep(min(remaining, limit / 4, 1.0))

    async def length_deadline() -> None:
        await asyncio.sleep(state.server.max_session_s)
        log.info("%s %s reached max_session_s; closing", peer.role, peer.id)
        close_later("max_length")

    peer.spawn(connect_deadline(), "connect-deadline")
    peer.spawn(watchdog(), "watchdog")
    if peer.role == "publisher" and state.server.idle_session_s > 0:
        peer.spawn(idle_deadline(), "idle-deadline")
    if state.server.max_session_s > 0:
        peer.spawn(length_deadline(), "length-deadline")
    if peer.role == "publisher":

        async def session_ended() -> None:
            await peer.session.finished.wait()
            # A failed pipeline is told apart: counted, and its owner is told (410, endings).
            close_later("error" if peer.session.ended == "error" else "session_ended")

        peer.spawn(session_ended(), "session-end")


async def close_peer(
    state: ServerState, peer: Peer, reason: str = "hangup", cause: str | None = None
) -> None:
    """Idempotent cleanup of one peer (and, for a publisher, its room); returns once it is
    done, whoever started it. ``reason``: why (``msadtalker_peers_closed_total``, and what
    its owner is told: ``streamer.server.endings``); ``cause``: why its room closed."""
    if peer.closing is None:
        peer.closed = True
        state.peers.pop(peer.id, None)
        state.metrics.peers_closed.labels(role=peer.role, reason=reason).inc()
        state.endings.record(peer.id, peer.owner, reason, cause)
        context = context_with(session_id=peer.id, room=peer.room.id)
        closing = asyncio.get_running_loop().create_task(
            _close(state, peer, reason), name=f"closing-{peer.id}", context=context
        )
        peer.closing = closing
        state.closing.add(closing)
        closing.add_done_callback(state.closing.discard)
    await asyncio.shield(peer.closing)


async def _close(state: ServerState, peer: Peer, reason: str) -> None:
    current = asyncio.current_task()
    tasks = [t for t in peer.tasks if t is not current]
    for task in tasks:
        task.cancel()
    for sub in peer.subscriptions:
        sub.close()
    if peer.pc is not None and reason == "vanished":
        # It may be stalled and miss the one DTLS close: tell it again for a while, in the
        # background (the rest of the cleanup does not wait for it; drain cancels it).
        linger = close_telling_the_remote(peer.pc, VANISHED_CLOSE_LINGER_S)
        state.spawn(linger, f"closing-connection-{peer.id}")
    elif peer.pc is not None:
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
        closing = (close_peer(state, v, "room_closed", reason) for v in viewers)
        await asyncio.gather(*closing)
    log.info("%s %s left room %s", peer.role, peer.id, room.id)


async def drain(state: ServerState) -> None:
    """Stop accepting, let the sessions finish (up to ``server.drain_s``), flush every
    publisher session into its sinks, close every peer (see the module docstring)."""
    if state.draining and not state.peers and not state.closing:
        return
    state.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.server.drain_s
    publishers = [p for p in state.peers.values() if p.role == "publisher"]
    if publishers:
        log.info(
            "draining: %d sessions get up to %.1f s to finish",
            len(publishers),
            state.server.drain_s,
        )
        finishing = asyncio.gather(*(_finished(p) for p in publishers))
        try:
            await asyncio.wait_for(finishing, state.server.drain_s)
        except TimeoutError:
            log.info("draining: sessions still speaking after %.1f s are cut", state.server.drain_s)
    flush_s = max(deadline - loop.time(), FLUSH_AT_LEAST_S)
    publishers = [p for p in state.peers.values() if p.role == "publisher"]
    await asyncio.gather(*(p.session.drain(flush_s) for p in publishers), return_exceptions=True)
    await asyncio.gather(*(close_peer(state, p, "drain") for p in list(state.peers.values())))
    await asyncio.gather(*list(state.closing), return_exceptions=True)  # started elsewhere
    await state.broadcasts.aclose()  # their sessions ended: recordings get their trailer
    tasks = list(state.tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _finished(peer: Peer) -> None:
    """Until the publisher has left or its avatar is not speaking: a silence weight of 0,
    i.e. still lips over the whole silence window (eq. 5: 5 frames), checked every tick."""
    session = peer.session
    while not (peer.closed or session.finished.is_set() or session.stats.silence_weight <= 0.0):
        await session.wait_ticks(session.stats.ticks + 1)


def add_local_publisher(state: ServerState, session: LiveSession, room_id: str) -> Peer:
    """Publish a session fed from this machine (the kiosk's mic) in room ``room_id``; viewers
    join it like any room. It stays until the server drains."""
    state.metrics.opened(session)  # counted with the others (its own observer is not ours)
    room = state.rooms.open(room_id)
    peer = Peer(id=session.id, role="publisher", room=room, pc=None, session=session)
    room.publisher = peer
    state.peers[peer.id] = peer
    state.broadcasts.open_defaults(room.id, session)
    return peer
