"""What ``POST /whip/{room}`` and ``POST /whep/{room}`` accept: a bare SDP offer, checked
before any peer connection (WHIP: RFC 9725; WHEP: draft-ietf-wish-whep).

``parse_wish_offer(role, body, content_type, room, max_sdp_bytes)`` is a pure function: the
raw body in, a frozen ``offers.Offer`` out, or ``OfferError(status, message)``:

* 415 unless the body is ``application/sdp``; 413 over ``max_sdp_bytes``; 400 for a room
  name that is not 1-64 characters of ``A-Z a-z 0-9 _ -``, a body that is not UTF-8 SDP,
  or an SDP ``offers.media_sections`` refuses (no media, no ``a=mid``, no direction);
* WHIP (``"publisher"``): an audio m-line that sends (``sendonly``/``sendrecv``): the
  microphone drives the avatar. Video may be offered too (OBS always sends its scene): the
  server answers it ``inactive`` and never decodes it (``peers``);
* WHEP (``"viewer"``): a video m-line that receives, and every audio and video m-line
  ``recvonly`` (or ``inactive``): a WHEP session only watches, and sending media into it
  would be decoded for nobody.
"""

from __future__ import annotations

from streamer.server.offers import Offer, OfferError, Role, media_sections
from streamer.server.rooms import ROOM_ID

SDP_CONTENT_TYPE = "application/sdp"
_SENDING = frozenset({"sendrecv", "sendonly"})
_WATCHING = frozenset({"recvonly", "inactive"})


def parse_wish_offer(
    role: Role, body: bytes, content_type: str, room: str, max_sdp_bytes: int
) -> Offer:
    """The offer a WHIP (``role="publisher"``) or WHEP (``"viewer"``) client posted to
    ``room`` (see the module docstring); ``OfferError`` when it is unusable."""
    protocol = "WHIP" if role == "publisher" else "WHEP"
    if content_type != SDP_CONTENT_TYPE:
        raise OfferError(415, f"Content-Type must be {SDP_CONTENT_TYPE} (the SDP offer itself)")
    if len(body) > max_sdp_bytes:
        raise OfferError(413, f"SDP larger than {max_sdp_bytes} bytes")
    if not ROOM_ID.fullmatch(room):
        raise OfferError(400, "the room in the URL must be 1-64 characters of A-Z a-z 0-9 _ -")
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OfferError(400, "the SDP offer is not UTF-8 text") from None
    if not sdp.strip():
        raise OfferError(400, f"empty body: a {protocol} request carries an SDP offer")
    media = media_sections(sdp)
    audio = [m for m in media if m.kind == "audio"]
    if role == "publisher":
        if not audio:
            raise OfferError(400, "WHIP offer has no audio m-line: the avatar is driven by audio")
        if not any(m.direction in _SENDING for m in audio):
            raise OfferError(
                400, f"WHIP offer's audio is {audio[0].direction}: it must send (sendonly)"
            )
    else:
        for section in media:
            if section.kind in ("audio", "video") and section.direction not in _WATCHING:
                raise OfferError(
                    400,
                    f"WHEP offer's {section.kind} is {section.direction}: it must be recvonly "
                    "(a WHEP session only watches)",
                )
        if not any(m.kind == "video" and m.direction == "recvonly" for m in media):
            raise OfferError(400, "WHEP offer does not receive video (a recvonly video m-line)")
    return Offer(sdp=sdp, role=role, room=room, media=media)
