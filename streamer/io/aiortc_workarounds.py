"""Every reach into aiortc / aioice internals, in one place (both pinned ``<2`` / ``<1``).

Each function says what it works around; each checks that what it reads or replaces is there
and, when it is not (a new aiortc), logs a warning and keeps aiortc's own behaviour, so a
version bump degrades latency or efficiency, never correctness. ``tests/test_webrtc.py``
checks that all of them still find their targets.

* ``use_loopback_candidates``: aioice gathers host candidates from the interfaces' addresses
  but skips 127.0.0.1, so a browser and a server on one machine (or anything inside a network
  namespace with only ``lo``) never connect. This makes a peer connection gather 127.0.0.1
  too ("add") or only ("only"); see ``ServerConfig.ice_loopback``.
* ``use_low_latency_receive``: aiortc's receive jitter buffer holds 4 audio packets (80 ms)
  before it releases one, and completes a video frame only when the next frame's first packet
  arrives (+40 ms). Opus packets are whole frames and video frames end at the RTP marker bit,
  so each can be released as soon as it is complete (``ImmediateAudioBuffer``,
  ``MarkerVideoBuffer``); loss then shows as a pts gap, which the ingest fills with silence.
* ``remote_receives``: the direction the remote offered for a transceiver (aiortc keeps it
  as ``_offerDirection``, there is no public accessor before the answer is made), i.e.
  whether the remote wants our avatar video / speech on that m-line.
* ``sends_opus``: whether the negotiated send codec (aiortc's first common codec,
  ``_codecs``) is Opus, so the speech track may hand aiortc ready Opus packets.
* ``use_zero_playout_delay``: Chromium smooths received video through a render buffer (its
  jitter estimate, 20-60 ms here) unless the sender asks for none with the ``playout-delay``
  RTP header extension (min 0: show each frame as soon as it is decoded). aiortc neither
  answers that extension nor writes it; this adds it to the answer of a video section whose
  offer has it, and makes the sender write it on every packet. The maximum caps any delay,
  the one A/V sync would add too (Chromium clamps the sync's minimum to it), so a receiver
  that syncs the video to audio it plays (a viewer) gets min 0, max 500 ms: frames as soon as
  decoded while the voice is ahead of them, held when the voice's buffer is longer; and a
  receiver that does not sync (the publisher page) min = max = 0.
* ``use_content_clock``: aiortc's RTCP sender reports pair the last RTP timestamp sent with
  the time it was SENT. A receiver that syncs audio and video (Chromium, for tracks of one
  stream) lines them up by those reports, so two tracks of one moment must be sent at the
  same time: our voice would have to wait for its picture, and then the picture waits for
  the voice's audio buffer in the browser. This makes a sender's reports pair the timestamp
  with the time its track says the media stands for (``track.content_time_s``, the mic
  time), so the voice can leave as soon as it is in and the browser still lines the lips up
  with it.
* ``close_telling_the_remote``: aiortc's ``close`` sends the DTLS close_notify once. A remote
  dropped because it went silent (a stalled network or process) has most likely lost that
  one datagram (its receive buffer overflowed, or the path was down), and then shows
  "connected" until its ICE consent expires (~30 s). This sends the close_notify again,
  every second for a while, so the remote sees the close within a second of coming back.
* ``PeerConnection``: aiortc starts its connect step as a task nobody awaits; a peer closed
  while that step is between two transports (a client that hangs up right after the answer)
  makes it raise "RTCIceTransport is closed", which asyncio then logs as an ERROR ("Task
  exception was never retrieved"). A closed connection has nothing left to connect: this
  subclass lets that step end quietly then, and still raises anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.exceptions import InvalidStateError
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    RtpPacket,
    pack_header_extensions,
    unpack_header_extensions,
)
from aiortc.sdp import SessionDescription
from aiortc.utils import uint16_gt
from OpenSSL import SSL

log = logging.getLogger(__name__)

LoopbackMode = Literal["only", "add", "off"]
_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver's private jitter buffer
_SENDING = ("sendrecv", "sendonly")


# ---------------------------------------------------------------- loopback ICE candidates


def resolve_loopback_mode(setting: str, host: str) -> LoopbackMode:
    """``ServerConfig.ice_loopback`` for a server bound to ``host`` ("auto": "only" on a
    loopback address, else "off")."""
    if setting == "auto":
        loopback_hosts = {"127.0.0.1", "localhost", "::1"}
        return "only" if host in loopback_hosts or host.startswith("127.") else "off"
    if setting not in ("only", "add", "off"):
        raise ValueError(f"unknown ice_loopback mode {setting!r}")
    return setting  # type: ignore[return-value]


def use_loopback_candidates(pc: RTCPeerConnection, mode: LoopbackMode) -> None:
    """Make every ICE transport of ``pc`` gather 127.0.0.1 (see the module docstring).

    Call after the transceivers exist (answerer: after ``setRemoteDescription``; offerer:
    after ``addTrack``/``addTransceiver``) and before ``setLocalDescription`` gathers.
    """
    if mode == "off":
        return
    for transceiver in pc.getTransceivers():
        dtls = getattr(transceiver.sender, "transport", None)
        gatherer = getattr(getattr(dtls, "transport", None), "iceGatherer", None)
        if gatherer is None:
            continue  # a section aiortc did not give a transport: nothing to gather for it
        connection = getattr(gatherer, "_connection", None)
        needed = ("_local_candidates_start", "_local_candidates", "_components")
        if connection is None or not all(hasattr(connection, a) for a in needed):
            log.warning("aioice internals changed: loopback ICE candidates not added")
            return
        if getattr(connection, "_loopback_mode", None) is not None:
            continue
        connection._loopback_mode = mode
        connection.gather_candidates = _loopback_gatherer(connection, mode)


def _loopback_gatherer(connection: Any, mode: LoopbackMode) -> Callable[[], Awaitable[None]]:
    from aioice.ice import get_host_addresses

    async def gather_candidates() -> None:
        # aioice's own gather_candidates, with 127.0.0.1 in (or as) the address list.
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        addresses: list[str] = []
        if mode == "add":
            addresses = get_host_addresses(
                use_ipv4=connection._use_ipv4, use_ipv6=connection._use_ipv6
            )
        addresses.append("127.0.0.1")
        for component in sorted(connection._components):
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=addresses
            )
        connection._local_candidates_end = True

    return gather_candidates


# ---------------------------------------------------------------- low-latency receive


class ImmediateAudioBuffer(JitterBuffer):
    """Releases every Opus packet at once (each is a whole frame); drops late duplicates."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last_seq: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last_seq is not None and not uint16_gt(packet.sequence_number, self._last_seq):
            return False, None
        self._last_seq = packet.sequence_number
        # ``_data``: the depayloaded payload aiortc's receiver sets on the packet.
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


class MarkerVideoBuffer(JitterBuffer):
    """aiortc's video buffer, but a frame is complete at its marker bit (as browsers do)."""

    def __init__(self) -> None:
        super().__init__(capacity=512, is_video=True)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets: list[RtpPacket] = []
        timestamp = None
        origin = self._origin
        if origin is None:
            return None
        for count in range(self._capacity):
            packet = self._packets[(origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                return self._take(packets, timestamp, count)
            packets.append(packet)
            if packet.marker:
                return self._take(packets, timestamp, count + 1)
        return None

    def _take(self, packets: list[RtpPacket], timestamp: int, count: int) -> JitterFrame:
        frame = JitterFrame(
            data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
            timestamp=timestamp,
        )
        self.remove(count)
        return frame


def use_low_latency_receive(pc: RTCPeerConnection) -> None:
    """Swap aiortc's receive jitter buffers for the low-latency ones (module docstring).

    Call after the transceivers exist and before media flows.
    """
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if not isinstance(getattr(receiver, _RECEIVER_BUFFER, None), JitterBuffer):
            log.warning("aiortc internals changed: default receive jitter buffer kept")
            return
        buffer = ImmediateAudioBuffer() if transceiver.kind == "audio" else MarkerVideoBuffer()
        setattr(receiver, _RECEIVER_BUFFER, buffer)


# ---------------------------------------------------------------- zero playout delay

PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
PLAYOUT_DELAY_UNIT_MS = 10
# Chromium's low-latency rendering holds for min 0 and max up to 500 ms.
SYNCED_MAX_PLAYOUT_DELAY_MS = 500


def playout_delay_value(max_ms: int) -> bytes:
    """The extension's 3 bytes: 12-bit min (0), 12-bit max, in 10 ms units."""
    units = min(max_ms // PLAYOUT_DELAY_UNIT_MS, 0xFFF)
    return bytes((0, units >> 8, units & 0xFF))


ZERO_PLAYOUT_DELAY = playout_delay_value(0)
_SENDER_EXTENSIONS = "_RTCRtpSender__rtp_header_extensions_map"


class PlayoutDelayExtensionsMap(HeaderExtensionsMap):
    """aiortc's header extensions, plus ``playout-delay`` (min 0, max ``max_ms``) on every
    packet."""

    def __init__(self, extension_id: int, max_ms: int = 0) -> None:
        super().__init__()
        self.playout_delay_id = extension_id
        self.playout_delay = playout_delay_value(max_ms)

    def set(self, values: HeaderExtensions) -> tuple[int, bytes]:
        profile, value = super().set(values)
        extensions = list(unpack_header_extensions(profile, value)) if value else []
        extensions.append((self.playout_delay_id, self.playout_delay))
        return pack_header_extensions(extensions)


def offered_extension_ids(sdp: str, uri: str) -> dict[str, int]:
    """Per media section id (``mid``): the id the offer gives header extension ``uri``."""
    ids: dict[str, int] = {}
    for media in SessionDescription.parse(sdp).media:
        for extension in media.rtp.headerExtensions:
            if extension.uri == uri and media.rtp.muxId:
                ids[media.rtp.muxId] = extension.id
    return ids


def use_zero_playout_delay(pc: RTCPeerConnection, max_ms: int = 0) -> bool:
    """Ask the remote to show our video without a render buffer, holding it at most
    ``max_ms`` (module docstring). Call after ``setRemoteDescription`` (the offer) and before
    ``createAnswer``. Returns whether a video section got it (the offer must have the
    extension)."""
    remote = pc.remoteDescription
    if remote is None:
        return False
    ids = offered_extension_ids(remote.sdp, PLAYOUT_DELAY_URI)
    used = False
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "video" or transceiver.mid not in ids:
            continue
        sender = transceiver.sender
        extensions = getattr(transceiver, "_headerExtensions", None)
        if not isinstance(extensions, list) or not isinstance(
            getattr(sender, _SENDER_EXTENSIONS, None), HeaderExtensionsMap
        ):
            log.warning("aiortc internals changed: the video keeps the browser's render buffer")
            return False
        extension_id = ids[transceiver.mid]
        if all(e.uri != PLAYOUT_DELAY_URI for e in extensions):
            extensions.append(
                RTCRtpHeaderExtensionParameters(id=extension_id, uri=PLAYOUT_DELAY_URI)
            )
        setattr(sender, _SENDER_EXTENSIONS, PlayoutDelayExtensionsMap(extension_id, max_ms))
        used = True
    return used


# ---------------------------------------------------------------- content-time sender reports

NTP_UNIX_OFFSET_S = 2_208_988_800  # 1900-01-01 to 1970-01-01
_SENDER_NTP = "_RTCRtpSender__ntp_timestamp"  # what the next sender report says
_SENDER_RTP = "_RTCRtpSender__rtp_timestamp"  # ... and the RTP timestamp it pairs with


def ntp_of(unix_s: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) of a Unix time."""
    return int(round((unix_s + NTP_UNIX_OFFSET_S) * (1 << 32)))


class ContentClockSender(RTCRtpSender):
    """aiortc's sender with reports on the content clock (module docstring). aiortc stores
    the send time after each packet; this property replaces it with the track's
    ``content_time_s`` of the frame just sent (the track hands frames out one at a time, and
    the sender sends a frame's packets before it asks for the next one). aiortc stores the
    packet's RTP timestamp right after: the pair is ``content_anchor``, which lets a receiver
    map this stream's RTP timestamps to the mic time without sender reports (web/avsync.js:
    Chromium only estimates a stream's playout in sender time inside a sync group)."""

    @property
    def _RTCRtpSender__ntp_timestamp(self) -> int:
        return int(self.__dict__.get("_content_ntp", 0))

    @_RTCRtpSender__ntp_timestamp.setter
    def _RTCRtpSender__ntp_timestamp(self, send_ntp: int) -> None:
        content_s = getattr(self.track, "content_time_s", None)
        self.__dict__["_content_ntp"] = send_ntp if content_s is None else ntp_of(content_s)
        self.__dict__["_content_s"] = content_s

    @property
    def _RTCRtpSender__rtp_timestamp(self) -> int:
        return int(self.__dict__.get("_rtp_timestamp", 0))

    @_RTCRtpSender__rtp_timestamp.setter
    def _RTCRtpSender__rtp_timestamp(self, rtp_timestamp: int) -> None:
        self.__dict__["_rtp_timestamp"] = rtp_timestamp
        content_s = self.__dict__.pop("_content_s", None)
        if content_s is not None:
            self.__dict__["content_anchor"] = (int(rtp_timestamp), float(content_s))


def use_content_clock(sender: RTCRtpSender) -> bool:
    """Make ``sender``'s reports state its track's ``content_time_s``; False (aiortc's own
    reports kept, with a warning) when aiortc no longer keeps the report time where this
    expects it."""
    if isinstance(sender, ContentClockSender):
        return True
    if (
        type(sender) is not RTCRtpSender
        or _SENDER_NTP not in vars(sender)
        or _SENDER_RTP not in vars(sender)
    ):
        log.warning("aiortc internals changed: voice and picture are synced by send time")
        return False
    sender.__class__ = ContentClockSender
    del vars(sender)[_SENDER_NTP]  # the properties keep them from now on
    del vars(sender)[_SENDER_RTP]
    return True


def content_clock(transceiver: RTCRtpTransceiver) -> dict[str, float] | None:
    """How the stream ``transceiver`` sends maps to the mic time: an RTP timestamp
    (``rtp``), the mic time it stands for (``ms``, Unix epoch) and the RTP clock rate
    (``rate``); None before its first packet, or without the content clock."""
    anchor = vars(transceiver.sender).get("content_anchor")
    codecs = getattr(transceiver, "_codecs", None)
    if anchor is None or not codecs:
        return None
    rtp, content_s = anchor
    return {"rtp": rtp, "ms": round(1000 * content_s, 3), "rate": int(codecs[0].clockRate)}


# ---------------------------------------------------------------- what the offer negotiated


def remote_receives(transceiver: RTCRtpTransceiver) -> bool:
    """Whether the remote's offer lets us send on ``transceiver`` (its m-line is sendrecv or
    recvonly on the remote's side). Call between ``setRemoteDescription`` and
    ``createAnswer``. Without aiortc's ``_offerDirection`` the answer is yes: aiortc still
    intersects the answer's direction with the offer's, so at worst a track is attached
    that is never sent."""
    if not hasattr(transceiver, "_offerDirection"):
        log.warning("aiortc internals changed: offer direction unknown, assuming sendrecv")
        return True
    # Seen from here: "sendrecv"/"sendonly" = we may send = the remote receives.
    return getattr(transceiver, "_offerDirection", None) in _SENDING


def sends_opus(transceiver: RTCRtpTransceiver) -> bool:
    """Whether the codec aiortc will send with on ``transceiver`` (the first common codec of
    the offer, ``_codecs``) is Opus. Unknown: no (aiortc then encodes the PCM itself)."""
    codecs = getattr(transceiver, "_codecs", None)
    if codecs is None:
        log.warning("aiortc internals changed: negotiated codec unknown, not pre-encoding Opus")
        return False
    return bool(codecs) and str(codecs[0].mimeType).lower() == "audio/opus"


# ---------------------------------------------------------------- a close the remote hears


async def close_telling_the_remote(
    pc: RTCPeerConnection, linger_s: float, interval_s: float = 1.0
) -> None:
    """Close ``pc``, sending each DTLS transport's close_notify every ``interval_s`` for up to
    ``linger_s`` first (see the module docstring); the resends stop early once the remote
    answers the close or the ICE path is gone. Without aiortc's ``_ssl`` / ``_send`` it is
    aiortc's own ``close`` (one close_notify)."""
    try:
        records = [(d, r) for d in _connected_dtls(pc) if (r := _close_notify(d))]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger_s
        while records:
            for dtls, record in list(records):
                try:
                    await dtls.transport._send(record)
                except ConnectionError:
                    records.remove((dtls, record))  # the ICE path is gone: nobody to tell
            if loop.time() + interval_s > deadline:
                break
            await asyncio.sleep(interval_s)
            records = [(d, r) for d, r in records if d.state != "closed"]
    finally:
        try:
            await pc.close()
        except Exception:
            log.debug("closing a peer connection failed", exc_info=True)


def _connected_dtls(pc: RTCPeerConnection) -> list[RTCDtlsTransport]:
    found: dict[int, RTCDtlsTransport] = {}
    for transceiver in pc.getTransceivers():
        dtls = getattr(transceiver.sender, "transport", None)
        if isinstance(dtls, RTCDtlsTransport) and dtls.state == "connected":
            found[id(dtls)] = dtls
    usable = [d for d in found.values() if hasattr(d, "_ssl") and hasattr(d.transport, "_send")]
    if len(usable) < len(found):
        log.warning("aiortc internals changed: the DTLS close is sent once")
        return []
    return usable


def _close_notify(dtls: RTCDtlsTransport) -> bytes:
    """The DTLS close_notify record of ``dtls``, made now (aiortc's own ``stop`` later finds
    the shutdown done and sends nothing more)."""
    ssl = dtls._ssl
    if ssl is None:
        return b""
    try:
        ssl.shutdown()
    except SSL.Error:
        pass
    try:
        return bytes(ssl.bio_read(1500))
    except SSL.Error:
        return b""


# ---------------------------------------------------------------- quiet connect after close

_CONNECT = "_RTCPeerConnection__connect"


class PeerConnection(RTCPeerConnection):
    """``RTCPeerConnection`` whose un-awaited connect step ends quietly once the connection
    is closed (module docstring). Without aiortc's private connect step (a new aiortc) it is
    plain ``RTCPeerConnection``."""

    async def _RTCPeerConnection__connect(self) -> None:
        connect: Callable[[RTCPeerConnection], Awaitable[None]] | None = getattr(
            RTCPeerConnection, _CONNECT, None
        )
        if connect is None:  # pragma: no cover - only with another aiortc
            return
        try:
            await connect(self)
        except InvalidStateError:
            if self.connectionState != "closed":
                raise
            log.debug("peer connection closed while connecting")


def finds_private_connect() -> bool:
    """Whether ``PeerConnection`` still overrides aiortc's connect step (for the tests)."""
    return callable(getattr(RTCPeerConnection, _CONNECT, None))
