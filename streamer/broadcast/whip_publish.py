"""Output kind ``whip``: publish a room to a WebRTC media server over WHIP (RFC 9725), so that
its viewers watch there (an SFU: Janus, LiveKit, mediasoup, Cloudflare) instead of costing
this process an encoder each (docs/broadcast.md, "SFU fan-out").

``{"kind": "whip", "url": "https://sfu.example/whip/endpoint/abc", "token": "..."}``: this
server is the WHIP *client*. It offers avatar video + the synced voice (send only), ``POST``s
the SDP to ``url`` with ``Authorization: Bearer <token>``, takes the ``201`` answer and
``Location``, and ``DELETE``s that resource when the room ends or the output is stopped. The
tracks read bounded drop-oldest subscriptions of the room's session (the same tracks a viewer
gets), so a slow SFU costs this output frames, never a tick of the session.

Life: ``connecting`` -> ``live`` (ICE and DTLS up) -> ``finished``; a refusal, a far end that
does not answer within ``connect_timeout_s``, or a peer connection that fails is
``error: <why>`` until the next attempt (the ``[broadcast]`` back-off, as RTMP's), and after
``reconnect_attempts`` failures in a row, for good; an answer that another attempt would get
again (401, 403, 404, ...: a wrong token or URL) ends it at once.

aiortc does not trickle: the offer carries every candidate, and the answer's ``Link`` ICE
servers come too late to be used (give the SFU an address this server reaches, or TURN on
the SFU's side).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from streamer.broadcast.kinds import OutputContext, OutputPlan
from streamer.broadcast.output import Backoff
from streamer.broadcast.targets import MAX_URL_CHARS, REDACTED, OutputTargetError
from streamer.config import BroadcastConfig
from streamer.fanout import Subscription
from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import (
    AvatarVideoTrack,
    FrameVoice,
    SpeechAudioTrack,
    close_quietly,
    make_peer_connection,
)
from streamer.logs import context_with

log = logging.getLogger(__name__)
SDP = "application/sdp"
MAX_TOKEN_CHARS = 4096
DELETE_TIMEOUT_S = 3.0  # the resource's DELETE at the end: best effort, bounded
VIDEO_QUEUE_FRAMES = 4  # what a viewer's track holds (``server.queue_frames``' default)
# Answers that another attempt would get again (a wrong token or URL): no retry.
FINAL_STATUSES = frozenset({400, 401, 403, 404, 405, 406, 415})


class WhipRefused(Exception):
    """The WHIP endpoint did not accept the offer; the message says what it answered;
    ``final``: retrying cannot help."""

    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True)
class WhipPlan(OutputPlan):
    """A checked ``whip`` request: ``target`` the endpoint URL, ``token`` its bearer token
    (a secret: never shown)."""

    token: str = field(default="", repr=False)


def check_whip_url(url: object) -> str:
    """``url`` when it is a usable ``http(s)://`` WHIP endpoint, else ``OutputTargetError``."""
    if not isinstance(url, str) or not url:
        raise OutputTargetError("url: the WHIP endpoint's http:// or https:// URL is required")
    if len(url) > MAX_URL_CHARS or not url.isprintable() or " " in url:
        raise OutputTargetError("url: not a usable URL (length, spaces or control characters)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port out of range raises here
    except ValueError:
        raise OutputTargetError("url: not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise OutputTargetError(f"url: must be http(s)://host/..., got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise OutputTargetError("url: no host")
    if parts.username or parts.password:
        raise OutputTargetError("url: credentials go in `token`, not in the URL")
    return url


def shown_url(url: str) -> str:
    """The endpoint as it may be shown: scheme and host. Its path and query may hold a key
    (Cloudflare's WHIP URLs start their path with the live input's key)."""
    parts = urlsplit(url)
    hidden = f"/{REDACTED}" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{hidden}"


class WhipKind:
    name = "whip"

    def plan(self, body: Mapping[str, Any], room: str, config: BroadcastConfig) -> WhipPlan:
        url = check_whip_url(body.get("url"))
        token = body.get("token", "")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isprintable():
            raise OutputTargetError("token: must be a printable string (the bearer token)")
        return WhipPlan(kind=self.name, target=url, shown=shown_url(url), token=token)

    def start(self, plan: OutputPlan, context: OutputContext) -> WhipOutput:
        token = plan.token if isinstance(plan, WhipPlan) else ""
        output = WhipOutput(context, plan.target, plan.shown, token)
        output.start()
        return output


KIND = WhipKind()


@dataclass
class _Link:
    """One attempt: the peer connection, its subscriptions and the resource it created."""

    pc: RTCPeerConnection
    subscriptions: list[Subscription]
    video: AvatarVideoTrack
    resource: str = ""
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)


class WhipOutput:
    """A room published over WHIP (see the module docstring)."""

    kind = "whip"

    def __init__(self, context: OutputContext, url: str, shown: str, token: str) -> None:
        self.id = context.output_id
        self.room = context.room
        self._session = context.session
        self._config = context.config
        self._url = url
        self._shown = shown
        self._token = token
        self._backoff = Backoff.of(context.config)
        self._rng = random.Random()
        self.state = "connecting"
        self.last_error = ""
        self.reconnects = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self._stopping = asyncio.Event()
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def start(self) -> None:
        context = context_with(room=self.room)  # its log lines name the room
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"output-{self.id}", context=context)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    def status(self) -> dict[str, Any]:
        sent, dropped = self.frames_sent, self.frames_dropped
        if self._link is not None:  # the attempt under way
            sent += self._link.video.sent
            dropped += sum(s.dropped for s in self._link.subscriptions)
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "room": self.room,
            "target": self._shown,
            "state": self.state,
            "frames_encoded": sent,  # handed to aiortc's encoder
            "frames_dropped": dropped,
            "dropped": {"queue_full": dropped},
            "reconnects": self.reconnects,
        }
        if self.last_error:
            body["last_error"] = self.last_error
        return body

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._over():
                link = self._link = self._open_link()
                final = False
                try:
                    await self._publish(link)
                    if not self._over():
                        failures = 0
                        self.state = "live"
                        log.info("room %s published over WHIP to %s", self.room, self._shown)
                        await self._until_over_or_failed(link)
                except (WhipRefused, aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.last_error = str(exc) or type(exc).__name__
                    log.warning("WHIP output %s: %s", self.id, self.last_error)
                    final = isinstance(exc, WhipRefused) and exc.final
                finally:
                    await self._close_link(link)
                if self._over():
                    break
                failures += 1
                if final or failures > self._backoff.attempts:
                    self.state = f"error: {self.last_error} (gave up)"
                    return
                self.state = f"error: {self.last_error or 'the connection failed'}"
                self.reconnects += 1
                await self._wait_over(self._backoff.delay(failures, self._rng))
            self.state = "finished"
        except Exception as exc:  # aiortc raises many types: this output ends, the room goes on
            log.exception("WHIP output %s failed", self.id)
            self.last_error = f"internal error: {type(exc).__name__}"
            self.state = f"error: {self.last_error}"
        finally:
            self.finished.set()

    def _over(self) -> bool:
        return self._stopping.is_set() or self._session.finished.is_set()

    async def _wait_over(self, timeout_s: float) -> None:
        """Until the output should end, at most ``timeout_s``."""
        await _first(self._stopping, self._session.finished, timeout_s=timeout_s)

    def _open_link(self) -> _Link:
        pc = make_peer_connection()
        video_sub = self._session.subscribe(f"output-{self.id}-video", VIDEO_QUEUE_FRAMES)
        audio_sub = self._session.subscribe(f"output-{self.id}-audio", 2 * VIDEO_QUEUE_FRAMES)
        video = AvatarVideoTrack(video_sub)
        pc.addTransceiver(video, direction="sendonly")
        # An SFU may rewrite timestamps and sender reports: the voice goes with its picture.
        pc.addTransceiver(SpeechAudioTrack(FrameVoice(audio_sub)), direction="sendonly")
        link = _Link(pc, [video_sub, audio_sub], video)
        if _is_loopback(self._url):
            # An SFU on this machine (aioice gathers no 127.0.0.1 by itself).
            use_loopback_candidates(pc, "add")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                link.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                link.failed.set()

        return link

    async def _publish(self, link: _Link) -> None:
        """Offer, POST it, take the answer; returns once the peer connection is up (or the
        output is to end)."""
        timeout_s = self._config.connect_timeout_s
        async with asyncio.timeout(timeout_s):
            await link.pc.setLocalDescription(await link.pc.createOffer())
            headers = {"Content-Type": SDP}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    self._url,
                    data=link.pc.localDescription.sdp.encode(),
                    headers=headers,
                    allow_redirects=False,
                ) as resp,
            ):
                body = await resp.read()
                if resp.status != 201:
                    raise WhipRefused(
                        f"the WHIP endpoint answered {resp.status}: {_gist(body)}",
                        final=resp.status in FINAL_STATUSES,
                    )
                location = resp.headers.get("Location")
                if not location:
                    raise WhipRefused("the WHIP endpoint's 201 has no Location")
                if resp.content_type != SDP:
                    raise WhipRefused(f"the WHIP answer is {resp.content_type}, not {SDP}")
                link.resource = urljoin(self._url, location)
            answer = RTCSessionDescription(sdp=body.decode("utf-8", "replace"), type="answer")
            try:
                await link.pc.setRemoteDescription(answer)
            except Exception as exc:  # aiortc raises many types for an unusable answer
                raise WhipRefused(f"the WHIP answer is unusable: {exc}") from None
            await _first(link.connected, link.failed, self._stopping, self._session.finished)
        if not link.connected.is_set() and not self._over():
            raise WhipRefused("the peer connection to the WHIP endpoint failed")

    async def _until_over_or_failed(self, link: _Link) -> None:
        await _first(self._stopping, self._session.finished, link.failed)
        if link.failed.is_set() and not self._over():
            self.last_error = "the peer connection to the WHIP endpoint failed"

    async def _close_link(self, link: _Link) -> None:
        self._link = None
        self.frames_sent += link.video.sent
        self.frames_dropped += sum(s.dropped for s in link.subscriptions)
        if link.resource:
            await self._delete(link.resource)
        await close_quietly(link.pc)
        for sub in link.subscriptions:
            sub.close()

    async def _delete(self, resource: str) -> None:
        """End the session at the far end (RFC 9725 §4.1: DELETE the resource)."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        timeout = aiohttp.ClientTimeout(total=DELETE_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.delete(resource, headers=headers, allow_redirects=False) as resp,
            ):
                if resp.status >= 400:
                    log.info("WHIP output %s: DELETE answered %d", self.id, resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("WHIP output %s: DELETE failed: %r", self.id, exc)


async def _first(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    """Until one of ``events`` is set (or ``timeout_s`` passed)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gist(body: bytes) -> str:
    """The start of an error body, printable, for a message."""
    text = body[:200].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip() or "(no body)"
