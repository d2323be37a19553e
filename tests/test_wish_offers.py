"""``parse_wish_offer`` (WHIP/WHEP SDP checks, a pure function): whatever the body, content
type and room, an ``Offer`` or an ``OfferError`` with a 4xx, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.server.offers import OfferError, Role
from streamer.server.wish_offers import parse_wish_offer

MAX_SDP = 2048
MIC = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
SCENE = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\n"
WATCH = (
    "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n"
)
_LINES = st.sampled_from(
    ["v=0", "m=audio 9 X 111", "m=video 9 X 96", "a=mid:0", "a=mid:1", "a=sendonly",
     "a=recvonly", "a=sendrecv", "a=inactive", "m=application 9 X x", "x", ""]
)  # fmt: skip


def test_what_whip_and_whep_take() -> None:
    whip = parse_wish_offer("publisher", (MIC + SCENE).encode(), "application/sdp", "show", 4096)
    assert (whip.role, whip.room, [m.kind for m in whip.media]) == (
        "publisher",
        "show",
        ["audio", "video"],
    )
    whep = parse_wish_offer("viewer", WATCH.encode(), "application/sdp", "show", 4096)
    assert [m.direction for m in whep.media] == ["recvonly", "recvonly"]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    role=st.sampled_from(["publisher", "viewer"]),
    lines=st.lists(_LINES, max_size=12),
    noise=st.binary(max_size=64),
    content_type=st.sampled_from(["application/sdp", "application/json", ""]),
    room=st.text(max_size=70),
)
def test_any_body_is_an_offer_or_a_4xx(
    role: Role, lines: list[str], noise: bytes, content_type: str, room: str
) -> None:
    body = "\r\n".join(lines).encode() + noise
    try:
        offer = parse_wish_offer(role, body, content_type, room, MAX_SDP)
    except OfferError as exc:
        assert 400 <= exc.status < 500 and str(exc)
        return
    assert offer.role == role and offer.room == room


@pytest.mark.parametrize("role", ["publisher", "viewer"])
def test_the_size_limit_is_the_sdp_limit(role: Role) -> None:
    with pytest.raises(OfferError, match="larger than 2048") as caught:
        parse_wish_offer(role, b"v=0\r\n" * 500, "application/sdp", "show", MAX_SDP)
    assert caught.value.status == 413
