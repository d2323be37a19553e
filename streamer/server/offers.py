"""What ``POST /offer`` accepts: the JSON body and its SDP, checked before any peer connection.

``parse_offer(body, max_sdp_bytes)`` is a pure function: the raw body in, a frozen ``Offer``
out, or ``OfferError(status, message)`` (400 for a malformed body or SDP, 413 for a body or
SDP over the limit). It checks what the server needs of an offer, not the whole of SDP
(aiortc's own parser sees it next; what that refuses is a 400 too, see
``streamer.server.peers``):

* the body: a JSON object with ``"type": "offer"``, a non-empty ``"sdp"``, an optional
  ``"role"`` (``"publisher"``, the default, or ``"viewer"``) and ``"room"`` (1-64 characters
  of ``A-Z a-z 0-9 _ -``; a viewer must name one);
* the SDP: starts with ``v=0``, every line is ``x=...``, every ``m=`` line has its four
  fields, at least one media section, each with an ``a=mid`` of its own (no two alike), and
  every audio and video section with its own direction (``a=sendrecv``, ``sendonly``,
  ``recvonly`` or ``inactive``: aiortc reads no session-level direction and cannot answer a
  section without one);
* the media, with each section's direction as offered: a publisher sends audio (its
  microphone), and every offer receives video (the avatar).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from streamer.server.rooms import ROOM_ID

Role = Literal["publisher", "viewer"]

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_SENDING = frozenset({"sendrecv", "sendonly"})
_RECEIVING = frozenset({"sendrecv", "recvonly"})


class OfferError(Exception):
    """An offer the client must fix; becomes a JSON error with ``status`` (400, 413, 415)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str  # "audio", "video", "application", ...
    direction: str  # as the offerer sees it: "sendrecv", "sendonly", "recvonly", "inactive"


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    role: Role
    room: str | None  # None: a publisher without a room name gets a random one
    media: tuple[MediaSection, ...]


def max_body_bytes(max_sdp_bytes: int) -> int:
    """Largest body read: the SDP JSON-escaped (line ends double) plus the other fields."""
    return 2 * max_sdp_bytes + 4096


def parse_offer(body: bytes | str, max_sdp_bytes: int) -> Offer:
    """The offer in ``body`` (see the module docstring); ``OfferError`` when it is unusable."""
    size = len(body.encode("utf-8", "replace")) if isinstance(body, str) else len(body)
    if size > max_body_bytes(max_sdp_bytes):
        raise OfferError(413, "request body too large")
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise OfferError(400, "body is not JSON") from None
    if not isinstance(fields, dict):
        raise OfferError(400, "body must be a JSON object")
    sdp, kind = fields.get("sdp"), fields.get("type")
    if kind != "offer":
        raise OfferError(400, 'field "type" must be "offer"')
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError(400, 'field "sdp" must be a non-empty string')
    if len(sdp.encode("utf-8", "replace")) > max_sdp_bytes:
        raise OfferError(413, f"SDP larger than {max_sdp_bytes} bytes")
    role = fields.get("role", "publisher")
    if role not in ("publisher", "viewer"):
        raise OfferError(400, 'field "role" must be "publisher" or "viewer"')
    room = fields.get("room")
    if room is not None and (not isinstance(room, str) or not ROOM_ID.fullmatch(room)):
        raise OfferError(400, 'field "room" must be 1-64 characters of A-Z a-z 0-9 _ -')
    if role == "viewer" and room is None:
        raise OfferError(400, 'a viewer offer needs a "room"')
    media = media_sections(sdp)
    if role == "publisher" and not any(
        m.kind == "audio" and m.direction in _SENDING for m in media
    ):
        raise OfferError(400, "offer has no microphone: an audio track that sends is needed")
    if not any(m.kind == "video" and m.direction in _RECEIVING for m in media):
        raise OfferError(400, "offer does not receive video (add a recvonly video transceiver)")
    return Offer(sdp=sdp, role=role, room=room, media=media)


def media_sections(sdp: str) -> tuple[MediaSection, ...]:
    """Kind and offered direction of each ``m=`` section; ``OfferError`` (400) when the SDP
    is malformed, has no media, or has a section aiortc cannot answer (no ``a=mid``, a mid
    used twice, audio or video without its own direction)."""
    lines = [line.strip() for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise OfferError(400, "malformed SDP: it must start with v=0")
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise OfferError(400, f"malformed SDP line: {line[:40]!r}")
    sections: list[_Section] = []
    for line in lines:
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) < 4:
                raise OfferError(400, f"malformed SDP media line: {line[:60]!r}")
            sections.append(_Section(parts[0]))
        elif sections and line.startswith("a="):
            sections[-1].read(line[2:])
    if not sections:
        raise OfferError(400, "SDP has no media sections")
    seen: dict[str, int] = {}
    for number, section in enumerate(sections, start=1):
        name = f"media section {number} ({section.kind[:20]})"
        if section.mid is None:
            raise OfferError(400, f"{name} has no a=mid")
        if section.mid in seen:
            first = seen[section.mid]
            raise OfferError(400, f"{name} repeats a=mid:{section.mid[:32]} of section {first}")
        seen[section.mid] = number
        if section.kind in ("audio", "video") and section.direction is None:
            raise OfferError(
                400, f"{name} has no direction (a=sendrecv, sendonly, recvonly or inactive)"
            )
    return tuple(MediaSection(s.kind, s.direction or "sendrecv") for s in sections)


class _Section:
    """What ``media_sections`` reads of one ``m=`` section: its kind, mid and direction."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.mid: str | None = None
        self.direction: str | None = None

    def read(self, attribute: str) -> None:
        if attribute in DIRECTIONS:
            self.direction = attribute
        elif attribute.startswith("mid:"):
            self.mid = attribute[4:].strip() or None  # the last one counts, as for aiortc
