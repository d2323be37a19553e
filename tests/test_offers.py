"""``parse_offer``: what ``POST /offer`` accepts, as a pure function (no server, no network)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from streamer.server.offers import (
    MediaSection,
    Offer,
    OfferError,
    max_body_bytes,
    media_sections,
    parse_offer,
)

MAX_SDP = 4000


def sdp(*sections: tuple[str, str | None], session: str | None = None, eol: str = "\r\n") -> str:
    """An SDP with one ``m=`` section per (kind, direction); ``None``: no direction line."""
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    if session is not None:
        lines.append(f"a={session}")
    for mid, (kind, direction) in enumerate(sections):
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", f"a=mid:{mid}"]
        if direction is not None:
            lines.append(f"a={direction}")
        lines.append("a=rtcp-mux")
    return eol.join(lines) + eol


PUBLISHER = sdp(("audio", "sendrecv"), ("video", "recvonly"))
VIEWER = sdp(("audio", "recvonly"), ("video", "recvonly"))


def body(sdp_text: Any = PUBLISHER, **fields: Any) -> bytes:
    return json.dumps({"type": "offer", "sdp": sdp_text, **fields}).encode()


def refused(raw: bytes | str, status: int, pattern: str) -> None:
    with pytest.raises(OfferError) as err:
        parse_offer(raw, MAX_SDP)
    assert err.value.status == status
    assert pattern in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_publisher_offer() -> None:
    offer = parse_offer(body(), MAX_SDP)
    assert offer == Offer(
        sdp=PUBLISHER,
        role="publisher",
        room=None,
        media=(MediaSection("audio", "sendrecv"), MediaSection("video", "recvonly")),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        offer.room = "x"  # type: ignore[misc]
    assert parse_offer(body().decode(), MAX_SDP) == offer  # str or bytes alike


def test_a_viewer_offer_names_its_room() -> None:
    offer = parse_offer(body(VIEWER, role="viewer", room="lobby"), MAX_SDP)
    assert (offer.role, offer.room) == ("viewer", "lobby")
    refused(body(VIEWER, role="viewer"), 400, 'a viewer offer needs a "room"')
    refused(body(VIEWER, role="viewer", room=None), 400, 'needs a "room"')


# ------------------------------------------------------------------ the body


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b"not json at all", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"{'sdp': 'v=0'}", "body is not JSON"),
        (b"[" * 5000 + b"]" * 5000, "body is not JSON"),  # nested past the parser's depth
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'"offer"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes, pattern: str) -> None:
    refused(raw, 400, pattern)


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"type": "answer", "sdp": PUBLISHER}, 'field "type" must be "offer"'),
        ({"sdp": PUBLISHER}, 'field "type"'),
        ({"type": "offer"}, 'field "sdp" must be a non-empty string'),
        ({"type": "offer", "sdp": 42}, 'field "sdp"'),
        ({"type": "offer", "sdp": ["v=0"]}, 'field "sdp"'),
        ({"type": "offer", "sdp": "  \r\n "}, 'field "sdp"'),
        ({"type": "offer", "sdp": PUBLISHER, "role": "boss"}, 'field "role"'),
        ({"type": "offer", "sdp": PUBLISHER, "role": None}, 'field "role"'),
        ({"type": "offer", "sdp": PUBLISHER, "role": 1}, 'field "role"'),
    ],
)
def test_fields_are_checked(fields: dict[str, Any], pattern: str) -> None:
    refused(json.dumps(fields).encode(), 400, pattern)


@pytest.mark.parametrize("room", ["no spaces!", "ünïcode", "x" * 65, "", "a/b", 42, True, ["r"]])
def test_a_bad_room_name_is_a_400(room: Any) -> None:
    refused(body(room=room), 400, 'field "room" must be 1-64 characters')


@pytest.mark.parametrize("room", ["a", "x" * 64, "Party_Room-42", "w1-Xy_9ab"])
def test_room_names(room: str) -> None:
    assert parse_offer(body(room=room), MAX_SDP).room == room


def test_the_type_is_checked_before_the_sdp_and_the_role_before_the_media() -> None:
    refused(body("not sdp", type="answer"), 400, '"type"')
    refused(body("v=0", role="boss"), 400, '"role"')
    refused(body("v=0", role="viewer"), 400, '"room"')


def test_sizes_are_limited_in_bytes() -> None:
    assert max_body_bytes(MAX_SDP) == 2 * MAX_SDP + 4096
    refused(b" " * (max_body_bytes(MAX_SDP) + 1), 413, "request body too large")
    padded = PUBLISHER + "a=x-pad:" + "y" * MAX_SDP + "\r\n"
    refused(body(padded), 413, f"SDP larger than {MAX_SDP} bytes")
    # Under the limit in characters, over it in UTF-8 bytes.
    wide = PUBLISHER + "a=x-pad:" + "é" * (MAX_SDP // 2) + "\r\n"
    assert len(wide) < MAX_SDP + 200
    refused(json.dumps({"type": "offer", "sdp": wide}, ensure_ascii=False), 413, "larger than")
    exact = PUBLISHER + "a=x:" + "y" * (MAX_SDP - len(PUBLISHER) - 6) + "\r\n"
    assert len(exact.encode()) == MAX_SDP
    assert parse_offer(body(exact), MAX_SDP).sdp == exact


# ------------------------------------------------------------------ the SDP


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("hello", "malformed SDP: it must start with v=0"),
        ("o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n", "must start with v=0"),
        ("v=1\r\nm=audio 9 RTP/AVP 0\r\n", "must start with v=0"),
        ("v=0\r\nm=audio\r\n", "malformed SDP media line: 'm=audio'"),
        ("v=0\r\nm=audio 9 RTP/AVP\r\n", "malformed SDP media line"),
        ("v=0\r\nthis is not a line\r\n", "malformed SDP line: 'this is not a line'"),
        ("v=0\r\nm=audio 9 RTP/AVP 0\r\nx\r\n", "malformed SDP line: 'x'"),
        ("v=0\r\n=oops\r\n", "malformed SDP line"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "SDP has no media sections"),
    ],
)
def test_malformed_sdp_is_a_400(text: str, pattern: str) -> None:
    refused(body(text), 400, pattern)
    with pytest.raises(OfferError):
        media_sections(text)


def test_a_long_malformed_line_is_quoted_short() -> None:
    with pytest.raises(OfferError) as err:
        media_sections("v=0\r\n" + "z" * 500 + "\r\n")
    assert len(str(err.value)) < 80


def test_line_ends_and_blank_lines_do_not_matter() -> None:
    expected = (MediaSection("audio", "sendrecv"), MediaSection("video", "recvonly"))
    assert media_sections(sdp(*[(m.kind, m.direction) for m in expected], eol="\n")) == expected
    spaced = "\r\n\r\n  " + PUBLISHER.replace("\r\n", "  \r\n\r\n")
    assert media_sections(spaced) == expected


def test_each_audio_and_video_section_names_its_direction() -> None:
    assert media_sections(sdp(("audio", "inactive"), ("video", "recvonly"))) == (
        MediaSection("audio", "inactive"),
        MediaSection("video", "recvonly"),
    )
    # aiortc reads no session-level direction and cannot answer a section without one
    # (its createAnswer raised a ValueError: a 500 before this check).
    for session in (None, "sendrecv"):
        text = sdp(("audio", "sendrecv"), ("video", None), session=session)
        refused(body(text), 400, "media section 2 (video) has no direction (a=sendrecv")
    # Other attributes that start like a direction are not one.
    text = PUBLISHER.replace("a=recvonly", "a=recvonly-ish\r\na=recvonly")
    assert media_sections(text)[1] == MediaSection("video", "recvonly")
    refused(body(sdp(("audio", "sendrecv"), ("video", "sendrecvx"))), 400, "no direction")


def test_each_section_has_a_mid_of_its_own() -> None:
    # A repeated mid made aiortc fail after the peer connection was half built (an
    # AttributeError, or "Media sections in answer do not match offer"): a 500 before.
    repeated = PUBLISHER.replace("a=mid:1", "a=mid:0")
    refused(body(repeated), 400, "media section 2 (video) repeats a=mid:0 of section 1")
    three = sdp(("audio", "sendrecv"), ("audio", "sendrecv"), ("video", "recvonly"))
    refused(body(three.replace("a=mid:1", "a=mid:0")), 400, "section 2 (audio) repeats")
    # The last a=mid of a section is its mid (as aiortc reads it).
    last_wins = PUBLISHER.replace("a=mid:0", "a=mid:7\r\na=mid:1")
    refused(body(last_wins), 400, "repeats a=mid:1")
    assert parse_offer(body(PUBLISHER.replace("a=mid:0", "a=mid:1\r\na=mid:audio")), MAX_SDP)
    for missing in ("", "a=mid:\r\n"):
        text = PUBLISHER.replace("a=mid:1\r\n", missing)
        refused(body(text), 400, "media section 2 (video) has no a=mid")
    # Attributes before the first m= line belong to the session, not to a section.
    assert parse_offer(body(PUBLISHER.replace("t=0 0", "t=0 0\r\na=mid:1")), MAX_SDP)
    # An odd kind is quoted short (sections of other kinds need no direction).
    odd = sdp(("x" * 100, None), ("x" * 100, None)).replace("a=mid:1", "a=mid:0")
    refused(body(odd), 400, f"media section 2 ({'x' * 20}) repeats")


def test_a_data_channel_section_is_listed_but_needs_nothing() -> None:
    text = sdp(("audio", "sendonly"), ("video", "recvonly"), ("application", None))
    offer = parse_offer(body(text), MAX_SDP)
    assert [m.kind for m in offer.media] == ["audio", "video", "application"]


# ------------------------------------------------------------------ what each role needs


@pytest.mark.parametrize(
    ("sections", "session", "ok"),
    [
        ((("audio", "sendrecv"), ("video", "recvonly")), None, True),
        ((("audio", "sendonly"), ("video", "recvonly")), None, True),  # a mic, no speaker
        ((("audio", "sendrecv"), ("video", "sendrecv")), None, True),
        ((("audio", "recvonly"), ("video", "recvonly")), None, False),  # listens only
        ((("audio", "inactive"), ("video", "recvonly")), None, False),
        ((("video", "recvonly"),), None, False),  # no audio at all
        ((("audio", "recvonly"), ("video", "recvonly")), "sendrecv", False),  # section's own
        ((("audio", "sendrecv"), ("audio", "recvonly"), ("video", "recvonly")), None, True),
    ],
)
def test_a_publisher_sends_audio(
    sections: tuple[tuple[str, str], ...], session: str | None, ok: bool
) -> None:
    raw = body(sdp(*sections, session=session))
    if ok:
        assert parse_offer(raw, MAX_SDP).role == "publisher"
    else:
        refused(raw, 400, "offer has no microphone")


@pytest.mark.parametrize(
    ("video", "session", "ok"),
    [
        ("recvonly", None, True),
        ("sendrecv", None, True),
        ("recvonly", "sendonly", True),
        ("sendonly", None, False),
        ("inactive", None, False),
        ("sendonly", "recvonly", False),
    ],
)
def test_every_offer_receives_video(video: str, session: str | None, ok: bool) -> None:
    for role, audio in (("publisher", "sendonly"), ("viewer", "recvonly")):
        # (a session-level direction does not reach a section that names its own)
        raw = body(sdp(("audio", audio), ("video", video), session=session), role=role, room="r")
        if ok:
            assert parse_offer(raw, MAX_SDP).role == role
        else:
            refused(raw, 400, "offer does not receive video")
    refused(body(sdp(("audio", "sendrecv"))), 400, "does not receive video")


def test_a_viewer_needs_no_microphone() -> None:
    for sections in ((("video", "recvonly"),), (("audio", "inactive"), ("video", "recvonly"))):
        offer = parse_offer(body(sdp(*sections), role="viewer", room="r"), MAX_SDP)
        assert offer.role == "viewer"
