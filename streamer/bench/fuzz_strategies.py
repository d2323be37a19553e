"""Hypothesis strategies for fuzzing the live server: SDP offers, offer bodies, HTTP requests.

* ``sdp_offers()``: an offer written the way browsers and aiortc write one (session lines;
  audio, video or data sections with codecs, ICE credentials, fingerprints, candidates,
  SSRCs), each part drawn from valid values and odd ones (missing, repeated, huge, of the
  wrong kind), then up to three line mutations (dropped, doubled, swapped, replaced, cut).
  Most draws stay close to a real offer, so they get past ``parse_offer`` into aiortc's own
  parser and answerer: the path a real offer takes.
* ``offer_bodies(rooms)``: the JSON body of ``POST /offer`` around such an SDP, fields of
  every type, and bodies that are not JSON at all (nested up to 20,000 deep, bytes, empty).
* ``http_requests(credentials, ids)``: every route with random methods, paths, session ids,
  query strings, headers (content types, credentials valid, expired and forged, origins,
  encodings) and bodies (offers, any JSON, bytes, sizes around and far over the limits).

Hypothesis is a development dependency (the ``dev`` extra): import this module only where
fuzzing happens (``streamer.bench.fuzz_run``, the tests).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

T = TypeVar("T")

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS")
ROUTES = (
    "/",
    "/viewer",
    "/offer",
    "/healthz",
    "/readyz",
    "/metrics",
    "/avatar.jpg",
    "/static/app.js",
    "/static/style.css",
    "/static/index.html",
    "/static/../pyproject.toml",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/",
    "/sessions",
    "/sessions/",
    "/favicon.ico",
    "/ice-servers",
    "/whip",
    "/whep",
    "/whip/",
    "/rooms",
    "//offer",
    "/offer/",
    "/OFFER",
)
AUDIO_CODECS = (
    ("opus", "48000", "2"),
    ("PCMU", "8000", ""),
    ("PCMA", "8000", ""),
    ("G722", "8000", ""),
    ("telephone-event", "8000", ""),
    ("ISAC", "16000", ""),
    ("opus", "48000", "7"),
    ("X-NOTHING", "1", ""),
)
VIDEO_CODECS = (
    ("VP8", "90000", ""),
    ("H264", "90000", ""),
    ("VP9", "90000", ""),
    ("AV1", "90000", ""),
    ("rtx", "90000", ""),
    ("red", "90000", ""),
    ("ulpfec", "90000", ""),
)
FMTP = (
    "minptime=10;useinbandfec=1",
    "apt=97",
    "apt=",
    "apt=notanumber",
    "apt=99999999999999999999",
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "profile-level-id=zzzzzz",
    "packetization-mode=9;profile-level-id=",
    ";;;=;",
    "",
)
ODD_VALUES = (
    "",
    " ",
    "-1",
    "0",
    "NaN",
    "99999999999999999999999999",
    "\x00",
    "\t",
    "é" * 20,
    "\u202e\u0000",
    "%s%n%x",
    "../../etc/passwd",
    "a=mid:0",
    "m=audio 9 RTP/AVP 0",
)
PROTOS = (
    "UDP/TLS/RTP/SAVPF",
    "UDP/TLS/RTP/SAVPF",
    "RTP/AVP",
    "RTP/SAVP",
    "TCP/TLS/RTP/SAVPF",
    "UDP/DTLS/SCTP",
    "DTLS/SCTP",
    "x",
)


FINGERPRINTS = (
    "a=fingerprint:sha-256 D8:29:E2:81:1F:3B:D4:10:45:58:4B:AC:B6:79:F4:32:09:5C:4A:10:15:45:10:D3"
    ":1B:34:11:F9:90:7D:26:E5",
    "a=fingerprint:sha-256 " + ":".join(["00"] * 32),
)
ICE_CREDENTIALS = (("Dp6I", "HU2UjRjhWvuqB2fcSdnqzh"), ("abcd", "0123456789abcdefghijklmnop"))


@dataclass(frozen=True, slots=True)
class HttpCase:
    """One request: what ``streamer.bench.fuzz_run`` sends."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None

    def describe(self) -> str:
        """One short line (the figures name the slowest and any failing case with it)."""
        body = "no body" if self.body is None else f"{len(self.body)} B {self.body[:60]!r}"
        names = ",".join(name for name, _ in self.headers)
        return f"{self.method} {self.path[:80]} [{names}] {body}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Tokens the fuzzed server knows (and ones it must refuse), for the Authorization
    header: static publisher and viewer tokens, room tokens valid and expired."""

    publisher: str
    viewer: str
    room_publisher: str
    room_viewer: str
    expired: str

    def secrets(self) -> tuple[str, ...]:
        """What must never come back in an answer (unless the request itself carried it)."""
        return (self.publisher, self.viewer)


# ------------------------------------------------------------------ small parts


def odd_text(max_size: int = 40) -> SearchStrategy[str]:
    """Values a parser does not expect: any text, known troublemakers, very long runs."""
    return _mix(
        st.text(max_size=max_size),
        st.sampled_from(ODD_VALUES),
        st.sampled_from(ODD_VALUES),
        st.integers(1_000, 20_000).map(lambda n: "x" * n),
    )


def _mix(*choices: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """One of ``choices``, each about as often as it is listed (a strategy listed twice is
    drawn twice as often: ``st.one_of`` would not weigh it so)."""
    return st.sampled_from(choices).flatmap(lambda chosen: chosen)


def _either(valid: SearchStrategy[T], odd: SearchStrategy[T], wild: bool) -> SearchStrategy[T]:
    """``valid``; in a wild offer, ``odd`` about one time in three."""
    return _mix(valid, valid, odd) if wild else valid


def _payload_type(wild: bool) -> SearchStrategy[str]:
    odd = _mix(
        st.integers(0, 127).map(str),
        st.integers(128, 2**40).map(str),
        st.sampled_from(["x", "-1", "", "96 96"]),
    )
    return _either(st.integers(96, 127).map(str), odd, wild)


def _codec(kind: str, wild: bool) -> SearchStrategy[tuple[str, list[str]]]:
    """(payload type, its a= lines)."""
    table = AUDIO_CODECS if kind == "audio" else VIDEO_CODECS
    rate = _either(st.just(""), _mix(st.integers(0, 2**64).map(str), odd_text(12)), wild)
    fmtp = _either(
        st.sampled_from(FMTP[:2] + FMTP[5:6]), _mix(st.sampled_from(FMTP), odd_text(30)), wild
    )

    def lines(
        pt: str, codec: tuple[str, str, str], rate_: str, fmtp_: list[str], fb: bool
    ) -> tuple[str, list[str]]:
        name, default_rate, channels = codec
        rtpmap = f"a=rtpmap:{pt} {name}/{rate_ or default_rate}"
        out = [rtpmap + (f"/{channels}" if channels else ""), *(f"a=fmtp:{pt} {p}" for p in fmtp_)]
        if fb:
            out += [f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli", f"a=rtcp-fb:{pt} goog-remb"]
        return pt, out

    return st.builds(
        lines,
        _payload_type(wild),
        st.sampled_from(table),
        rate,
        st.lists(fmtp, max_size=2),
        st.booleans(),
    )


def _fingerprint(wild: bool) -> SearchStrategy[str]:
    if not wild:  # few choices: a clean offer must stay cheap for Hypothesis to draw
        return st.sampled_from(FINGERPRINTS)
    valid = st.binary(min_size=32, max_size=32).map(
        lambda b: "a=fingerprint:sha-256 " + ":".join(f"{x:02X}" for x in b)
    )
    odd = _mix(
        st.sampled_from(["sha-1 00", "md5 AA:BB", "sha-256", "", "sha-256 " + "ZZ:" * 40]),
        odd_text(),
    ).map(lambda value: f"a=fingerprint:{value}")
    return _either(valid, odd, wild)


def _ice_lines(wild: bool) -> SearchStrategy[list[str]]:
    if not wild:
        return st.sampled_from(ICE_CREDENTIALS).map(
            lambda pair: [f"a=ice-ufrag:{pair[0]}", f"a=ice-pwd:{pair[1]}"]
        )
    alnum = st.characters(min_codepoint=0x30, max_codepoint=0x7A, categories=["Lu", "Ll", "Nd"])
    ufrag = _either(st.text(alnum, min_size=4, max_size=8), odd_text(), wild)
    pwd = _either(st.text(alnum, min_size=22, max_size=32), odd_text(), wild)

    def lines(u: str, p: str, keep: int) -> list[str]:
        both = [f"a=ice-ufrag:{u}", f"a=ice-pwd:{p}"]
        return both if keep == 0 else both[keep % 2 : keep % 2 + 1] if keep < 3 else []

    return st.builds(lines, ufrag, pwd, _either(st.just(0), st.integers(0, 3), wild))


def _candidate(wild: bool) -> SearchStrategy[str]:
    address = _either(
        st.just("127.0.0.1"),
        st.sampled_from(["::1", "999.1.1.1", "localhost", "not-an-ip", "0.0.0.0", "x" * 300]),
        wild,
    )
    port = _either(st.integers(1, 65535).map(str), st.sampled_from(["0", "-1", "70000", "x"]), wild)
    transport = _either(st.just("udp"), st.sampled_from(["tcp", "UDP", "sctp", ""]), wild)
    kind = _either(st.just("host"), st.sampled_from(["srflx", "relay", "prflx", "weird"]), wild)
    component = _either(st.just("1"), st.sampled_from(["2", "0", "99"]), wild)
    priority = _either(st.just("2130706431"), st.integers(0, 2**70).map(str), wild)
    valid = st.builds(
        lambda a, p, t, k, c, pr: f"a=candidate:1 {c} {t} {pr} {a} {p} typ {k}",
        address,
        port,
        transport,
        kind,
        component,
        priority,
    )
    return _either(valid, odd_text().map(lambda v: f"a=candidate:{v}"), wild)


def _direction_lines(kind: str, wild: bool) -> SearchStrategy[list[str]]:
    # Mostly what a publisher's offer says (audio sent, video received): those go deepest.
    usual = ["sendrecv"] * 6 if kind == "audio" else ["recvonly"] * 6
    one = st.sampled_from([*usual, *DIRECTIONS]).map(lambda d: f"a={d}")
    odd: SearchStrategy[list[str]] = _mix(
        st.just([]),
        st.lists(one, min_size=2, max_size=3),
        odd_text(12).map(lambda v: [f"a={v}"]),
    )
    return _either(one.map(lambda line: [line]), odd, wild)


def _mid(index: int, wild: bool) -> SearchStrategy[list[str]]:
    odd: SearchStrategy[list[str]] = _mix(
        st.just([]),
        st.sampled_from(["0", "1", "audio", "video"]).map(lambda m: [f"a=mid:{m}"]),
        odd_text().map(lambda m: [f"a=mid:{m}"]),
        st.just([f"a=mid:{index}", f"a=mid:{index + 7}"]),
    )
    return _either(st.just([f"a=mid:{index}"]), odd, wild)


BENIGN_ATTRIBUTES = (
    "a=rtcp-mux",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=rtcp-rsize",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=msid:stream track",
    "a=end-of-candidates",
    "a=ice-options:trickle",
    "b=AS:30",
)
ODD_ATTRIBUTES = (
    "a=extmap:99999 urn:x",
    "a=extmap:x",
    "a=ssrc-group:FID 1 2",
    "a=ssrc-group:FID",
    "a=sctp-port:5000",
    "a=sctp-port:x",
    "a=max-message-size:262144",
    "a=sctpmap:5000 webrtc-datachannel 1024",
    "a=ice-lite",
    "b=AS:x",
    "i=info",
)


def _section(kind: str, index: int, wild: bool) -> SearchStrategy[list[str]]:
    """One m= section's lines."""
    kinds = _either(
        st.just(kind), st.sampled_from(["audio", "video", "application", "text", "AUDIO"]), wild
    )
    port = _either(
        _mix(st.just("9"), st.integers(1, 65535).map(str)),
        st.sampled_from(["0", "-1", "65536", "9" * 30, "x"]),
        wild,
    )
    proto = _either(st.just(PROTOS[0]), st.sampled_from(PROTOS), wild)
    count = _either(st.integers(1, 2), st.integers(0, 5), wild)
    codecs = count.flatmap(lambda n: st.tuples(*(_codec(kind, wild) for _ in range(n))).map(list))
    extra_pts = _either(st.just([]), st.lists(_payload_type(True), max_size=2), wild)
    ssrc = _either(st.integers(0, 2**32 - 1), st.integers(2**32, 2**80), wild).map(
        lambda n: f"a=ssrc:{n} cname:fuzz"
    )
    attribute = _either(
        _mix(st.sampled_from(BENIGN_ATTRIBUTES), ssrc),
        _mix(st.sampled_from(ODD_ATTRIBUTES), odd_text().map(lambda v: f"a={v}")),
        wild,
    )
    connection: SearchStrategy[list[str]] = _either(
        st.just(["c=IN IP4 127.0.0.1"]),
        _mix(st.just(["c=IN IP6 ::1"]), st.just([]), odd_text().map(lambda v: [f"c={v}"])),
        wild,
    )
    setup: SearchStrategy[list[str]] = _either(
        st.just(["a=setup:actpass"]),
        st.sampled_from(["active", "passive", "holdconn", "", "sideways", None]).map(
            lambda v: [] if v is None else [f"a=setup:{v}"]
        ),
        wild,
    )
    fingerprints = _either(
        _fingerprint(False).map(lambda line: [line]), st.lists(_fingerprint(True), max_size=2), wild
    )

    def assemble(
        kind_: str,
        port_: str,
        proto_: str,
        codecs_: list[tuple[str, list[str]]],
        extra_pts_: list[str],
        conn: list[str],
        directions: list[str],
        mid: list[str],
        ice: list[str],
        fingerprints_: list[str],
        setup_: list[str],
        candidates: list[str],
        attributes: list[str],
        mux: list[str],
    ) -> list[str]:
        pts = [pt for pt, _ in codecs_] + extra_pts_
        formats = " ".join(pts) if pts else ("webrtc-datachannel" if kind_ == "application" else "")
        head = f"m={kind_} {port_} {proto_} {formats}".rstrip()
        body = [line for _, lines in codecs_ for line in lines]
        return [
            head,
            *mux,
            *conn,
            *directions,
            *mid,
            *body,
            *ice,
            *fingerprints_,
            *setup_,
            *candidates,
            *attributes,
        ]

    return st.builds(
        assemble,
        kinds,
        port,
        proto,
        codecs,
        extra_pts,
        connection,
        _direction_lines(kind, wild),
        _mid(index, wild),
        _ice_lines(wild),
        fingerprints,
        setup,
        st.lists(_candidate(wild), max_size=2 if wild else 1),
        st.lists(attribute, max_size=4 if wild else 2),
        _either(st.just(["a=rtcp-mux"]), st.just([]), wild),  # aiortc requires it
    )


def _session_lines(wild: bool) -> SearchStrategy[list[str]]:
    version = _either(st.just("v=0"), st.sampled_from(["v=1", "v=", "v=0 0"]), wild)
    origin = _either(
        st.integers(0, 2**32).map(lambda n: f"o=- {n} {n} IN IP4 0.0.0.0"),
        _mix(
            st.integers(2**32, 2**90).map(lambda n: f"o=- {n} {n} IN IP4 0.0.0.0"),
            odd_text().map(lambda v: f"o={v}"),
        ),
        wild,
    )
    group: SearchStrategy[list[str]] = _either(
        st.sampled_from([["a=group:BUNDLE 0 1"], []]),
        st.lists(odd_text(8), max_size=4).map(lambda mids: [f"a=group:BUNDLE {' '.join(mids)}"]),
        wild,
    )
    benign = st.sampled_from(
        ["a=msid-semantic:WMS *", "a=ice-options:trickle", "a=extmap-allow-mixed"]
    )
    odd = st.sampled_from(
        [
            "a=ice-lite",
            "a=setup:actpass",
            "a=sendrecv",
            "a=recvonly",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "b=AS:99999999999999999999",
            "t=0",
        ]
    )
    extra = st.lists(_either(benign, odd, wild), max_size=3)
    return st.builds(
        lambda v, o, g, e: [v, o, "s=-", "t=0 0", *g, *e], version, origin, group, extra
    )


def _mutate(
    lines: list[str], mutations: list[tuple[int, int, int, str]], keep_first: bool
) -> list[str]:
    """``lines`` with each mutation (operation, line, other line, junk) applied;
    ``keep_first``: never the first line (``v=0``: without it nothing else is looked at)."""
    out = list(lines)
    first = 1 if keep_first else 0
    for op, i, j, junk in mutations:
        if len(out) <= first:
            out.append(junk)
            continue
        i, j = first + i % (len(out) - first), first + j % (len(out) - first)
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(i, out[i])
        elif op == 2:
            out[i], out[j] = out[j], out[i]
        elif op == 3:
            out[i] = junk
        elif op == 4:
            out[i] = out[i][: j % (len(out[i]) + 1)]
        else:
            out.extend(out[i:])
    return out


def _offer(wild: bool) -> SearchStrategy[str]:
    kinds = _either(
        st.sampled_from(
            [("audio", "video"), ("audio", "video"), ("audio", "video", "application")]
        ),
        st.lists(st.sampled_from(["audio", "video", "application"]), max_size=4).map(tuple),
        wild,
    )
    sections = kinds.flatmap(
        lambda ks: st.tuples(*(_section(k, i, wild) for i, k in enumerate(ks))).map(list)
    )
    mutation = st.tuples(
        st.integers(0, 5), st.integers(0, 10**6), st.integers(0, 10**6), odd_text()
    )
    mutations = st.lists(mutation, max_size=3 if wild else 1)
    eol = _either(st.sampled_from(["\r\n", "\r\n", "\n"]), st.just("\r"), wild)

    def assemble(
        session: list[str], media: list[list[str]], muts: list[tuple[int, int, int, str]], end: str
    ) -> str:
        lines = [*session, *(line for section in media for line in section)]
        lines = _mutate(lines, muts, keep_first=not wild)
        return end.join(lines) + end

    return st.builds(assemble, _session_lines(wild), sections, mutations, eol)


def sdp_offers() -> SearchStrategy[str]:
    """An offer's SDP text (see the module docstring): mostly well-formed offers (every part
    valid, at most one line mutated), the rest wild (any part odd, up to three mutations)."""
    return _mix(_offer(False), _offer(False), _offer(True))


def json_values() -> SearchStrategy[object]:
    scalars = _mix(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
    return st.recursive(
        scalars,
        lambda children: _mix(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10), children, max_size=4),
        ),
        max_leaves=12,
    )


def _nested(depth: int) -> bytes:
    return b'{"sdp": ' * depth + b"1" + b"}" * depth


def room_names(rooms: Sequence[str] = (), wild: bool = True) -> SearchStrategy[object]:
    """A room name: ``rooms`` (worth naming: a live publisher's) or a valid one; when
    ``wild``, also odd text, near misses and JSON values of other types."""
    valid = st.text(
        st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"),
        min_size=1,
        max_size=64,
    )
    usual = _mix(st.sampled_from(list(rooms)), valid) if rooms else valid
    odd = _mix(
        odd_text(80),
        st.sampled_from(["abc\n", "a" * 65, "room name", "../x", "w0-abc", "w1-abc"]),
        json_values(),
    )
    return _either(usual, odd, wild)


def _offer_fields(rooms: Sequence[str], wild: bool) -> SearchStrategy[dict[str, object]]:
    kind = _either(
        st.just("offer"), _mix(st.sampled_from(["answer", "OFFER", ""]), json_values()), wild
    )
    sdp = _either(sdp_offers(), _mix(json_values(), odd_text()), wild)
    role = _either(
        st.sampled_from(["publisher", "publisher", "viewer"]),
        _mix(st.sampled_from(["Publisher", "admin", ""]), json_values()),
        wild,
    )
    optional: dict[str, SearchStrategy[object]] = {"role": role, "room": room_names(rooms, wild)}
    if wild:
        optional["extra"] = json_values()
    return st.fixed_dictionaries({"type": kind, "sdp": sdp}, optional=optional)


def offer_bodies(rooms: Sequence[str] = ()) -> SearchStrategy[bytes]:
    """A ``POST /offer`` body: mostly a JSON offer around ``sdp_offers()`` with usual fields,
    some with fields of any type, some not JSON at all. ``rooms``: names worth naming."""
    encoded = st.builds(
        lambda f, ascii_only: json.dumps(f, ensure_ascii=ascii_only).encode(
            "utf-8", "surrogatepass"
        ),
        _mix(_offer_fields(rooms, False), _offer_fields(rooms, False), _offer_fields(rooms, True)),
        st.booleans(),
    )
    return _mix(
        encoded,
        encoded,
        encoded,
        encoded,
        encoded,
        encoded,
        st.sampled_from([b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"type": "offer"' * 50]),
        st.integers(100, 20_000).map(_nested),
        st.binary(max_size=512),
        json_values().map(lambda v: json.dumps(v).encode()),
    )


# ------------------------------------------------------------------ HTTP


def _header_text(max_size: int = 60) -> SearchStrategy[str]:
    """Header values http.client can send: Latin-1, no control characters."""
    return st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), max_size=max_size)


def _authorization(credentials: Credentials) -> SearchStrategy[list[tuple[str, str]]]:
    c = credentials
    tokens = [c.publisher, c.viewer, c.room_publisher, c.room_viewer]
    value = _mix(
        st.sampled_from([f"Bearer {t}" for t in tokens]),
        st.sampled_from([f"Bearer {t}" for t in tokens]),
        st.sampled_from(
            [
                f"Bearer {c.expired}",
                f"bearer {c.publisher}",
                f"Bearer {c.publisher[:-1]}",
                f"Bearer {c.publisher} extra",
                f"Bearer  {c.viewer}",
                f"Basic {c.publisher}",
                c.publisher,
                "Bearer ",
                "Bearer",
                "Bearer mst1.e30.AAAA",
                "Bearer mst1...",
                "Bearer mst1." + "A" * 3000,
            ]
        ),
        _header_text().map(lambda v: f"Bearer {v}"),
        _header_text(),
    )
    return _mix(st.just([]), value.map(lambda v: [("Authorization", v)]))


def _headers(credentials: Credentials) -> SearchStrategy[tuple[tuple[str, str], ...]]:
    content_type: SearchStrategy[list[tuple[str, str]]] = _mix(
        st.just([("Content-Type", "application/json")]),
        st.just([("Content-Type", "application/json")]),
        st.sampled_from(
            [
                "text/plain",
                "application/sdp",
                "application/json; charset=utf-8",
                "application/json; charset=latin-1",
                "APPLICATION/JSON",
                "multipart/form-data; boundary=x",
                "application/x-www-form-urlencoded",
                "",
            ]
        ).map(lambda v: [("Content-Type", v)]),
        _header_text().map(lambda v: [("Content-Type", v)]),
        st.just([]),
    )
    names = st.sampled_from(
        [
            "Origin",
            "X-Forwarded-For",
            "Accept",
            "Accept-Encoding",
            "Content-Encoding",
            "Cookie",
            "Referer",
            "X-Msadtalker-Hop",
            "X-Msadtalker-Credential",
            "X-Msadtalker-Worker",
            "Access-Control-Request-Method",
            "If-None-Match",
            "Range",
            "Expect",
            "Connection",
        ]
    )
    values = _mix(
        st.sampled_from(
            [
                "https://evil.example",
                "null",
                "127.0.0.1",
                "gzip",
                "deflate",
                "br",
                "bytes=0-0",
                "*/*",
                "keep-alive",
            ]
        ),
        _header_text(),
    )
    extra = st.lists(st.tuples(names, values), max_size=4)
    return st.builds(
        lambda ct, auth, more: tuple([*ct, *auth, *more]),
        content_type,
        _authorization(credentials),
        extra,
    )


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="/?=&%")


def _paths(
    credentials: Credentials, ids: Sequence[str], rooms: Sequence[str]
) -> SearchStrategy[str]:
    known = st.sampled_from(list(ids)) if ids else st.just("nobody")
    session_id = _mix(
        known,
        known,
        st.binary(min_size=16, max_size=16).map(lambda b: b.hex()),
        st.sampled_from(["w0-", "w1-", "w9-", ""]).flatmap(
            lambda p: st.text(max_size=30).map(lambda t: p + t)
        ),
        st.integers(100, 6000).map(lambda n: "z" * n),
        st.text(max_size=40),
    )
    sessions = st.builds(
        lambda sid, suffix: "/sessions/" + _quoted(sid) + suffix,
        session_id,
        st.sampled_from(["", "", "/interrupt", "/interrupt", "/", "/interrupt/x", "/%2e%2e"]),
    )
    room = room_names(rooms).map(lambda r: str(r))
    query = _mix(
        st.just(""),
        st.builds(lambda r: "?room=" + urllib.parse.quote(r, safe=""), room),
        st.sampled_from(
            [
                f"?token={credentials.publisher}",
                f"?room=x&token={credentials.room_viewer}",
                "?token=",
                "?a=1&a=2",
            ]
        ),
        st.text(max_size=30).map(lambda t: "?" + urllib.parse.quote(t, safe="=&")),
    )
    fixed = st.builds(lambda route, q: route + q, st.sampled_from(ROUTES), query)
    anything = st.text(max_size=60).map(lambda t: "/" + _quoted(t))
    # WHIP / WHEP endpoints and resources, a room's outputs.
    wish = _mix(
        st.builds(
            lambda kind, r: f"/{kind}/" + urllib.parse.quote(r, safe=""),
            st.sampled_from(["whip", "whep"]),
            room,
        ),
        st.builds(
            lambda kind, sid, suffix: f"/{kind}/resource/" + _quoted(sid) + suffix,
            st.sampled_from(["whip", "whep"]),
            session_id,
            st.sampled_from(["", "", "/", "/x"]),
        ),
    )
    outputs = st.builds(
        lambda r, suffix: "/rooms/" + urllib.parse.quote(r, safe="") + suffix,
        room,
        _mix(
            st.sampled_from(["/outputs", "/outputs", "/outputs/", "", "/x"]),
            session_id.map(lambda o: "/outputs/" + _quoted(o)),
        ),
    )
    return _mix(fixed, fixed, sessions, sessions, wish, outputs, anything)


def output_bodies() -> SearchStrategy[bytes]:
    """A ``POST /rooms/{room}/outputs`` body: mostly an output of a known kind pointing at
    closed loopback ports (nothing leaves the machine), then odd fields and values."""
    kind = _mix(st.sampled_from(["rtmp", "record", "whip"]), odd_text(12))
    url = _mix(
        st.sampled_from(
            [
                "rtmp://127.0.0.1:9/live/key",
                "rtmps://127.0.0.1:9/live/key",
                "http://127.0.0.1:9/whip",
                "file:///etc/passwd",
                "rtmp://",
                "",
            ]
        ),
        odd_text(80),
        st.integers(),
    )
    body = st.fixed_dictionaries({"kind": kind}, optional={"url": url, "token": odd_text(20)})
    return _mix(body, body, json_values()).map(lambda v: json.dumps(v).encode())


def http_requests(
    credentials: Credentials, ids: Sequence[str] = (), rooms: Sequence[str] = ()
) -> SearchStrategy[HttpCase]:
    """Any request to any route (see the module docstring). ``ids``: session ids worth
    naming (live, ended, another credential's); ``rooms``: room names worth naming."""
    method = _mix(
        st.sampled_from(METHODS),
        st.sampled_from(METHODS),
        st.sampled_from(METHODS),
        st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_"), min_size=1, max_size=12),
    )
    body = _mix(
        st.none(),
        st.none(),
        offer_bodies(rooms),
        sdp_offers().map(lambda sdp: sdp.encode()),
        output_bodies(),
        json_values().map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=2_000),
        st.sampled_from([10_000, 130_000, 140_000, 300_000, 2_000_000]).map(lambda n: b"x" * n),
    )
    return st.builds(HttpCase, method, _paths(credentials, ids, rooms), _headers(credentials), body)
