"""Who may publish: tokens on the routes, sessions bound to their creator, cross-site rules,
security headers, the internal hop between workers, refusing to serve open beyond loopback,
and ``msadtalker token``. In-process servers with the fake stages; offers are never
connected (their sessions cost nothing until they are)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from live_fakes import eventually, fake_stages

from msadtalker.errors import ConfigError
from streamer.cli import main
from streamer.config import AuthConfig, Config, ServerConfig, load_config
from streamer.io.aiortc_workarounds import use_loopback_candidates
from streamer.io.webrtc import make_peer_connection
from streamer.server.access import encode_credential
from streamer.server.app import make_app
from streamer.server.auth import Authenticator, Credential, mint_room_token
from streamer.server.cluster import CREDENTIAL_HEADER, HOP_HEADER, Cluster
from streamer.server.ids import parse_id
from streamer.server.offers import OfferError, parse_offer
from streamer.server.rooms import RoomRegistry
from streamer.server.run import check_exposure
from streamer.server.state import STATE

PUB = "publisher-token-0123456789"
PUB2 = "publisher-token-abcdefghij"
VIEW = "viewer-token-0123456789ab"
SECRET = "room-token-secret-0123456789"
SECRETS = (PUB, PUB2, VIEW, SECRET)
Client = TestClient[web.Request, web.Application]


def _config(auth: AuthConfig | None = None, **server: Any) -> Config:
    base: dict[str, Any] = {"jitter_ms": 20, "connect_timeout_s": 5.0}
    base.update(server)
    return Config(server=ServerConfig(**base), auth=auth or AuthConfig())


TOKENS = AuthConfig(publisher_tokens=(PUB, PUB2), viewer_tokens=(VIEW,), token_secret=SECRET)


async def _client(config: Config, cluster: Cluster | None = None, port: int = 0) -> Client:
    app = make_app(config, lambda: fake_stages(config), cluster=cluster)
    client: Client = TestClient(TestServer(app, port=port))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = await _client(_config(TOKENS))
    yield c
    await c.close()


@pytest.fixture(scope="module")
def sdp() -> dict[str, str]:
    async def make(audio: str) -> str:
        pc = make_peer_connection()
        pc.addTransceiver("audio", direction=audio)
        pc.addTransceiver("video", direction="recvonly")
        use_loopback_candidates(pc, "only")
        await pc.setLocalDescription(await pc.createOffer())
        text = pc.localDescription.sdp
        await pc.close()
        return text

    async def both() -> dict[str, str]:
        return {"publisher": await make("sendrecv"), "viewer": await make("recvonly")}

    return asyncio.run(both())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def offer(
    client: Client,
    sdp: dict[str, str],
    token: str | None,
    role: str = "publisher",
    room: str | None = None,
) -> ClientResponse:
    body: dict[str, Any] = {"type": "offer", "sdp": sdp[role], "role": role}
    if room is not None:
        body["room"] = room
    return await client.post("/offer", json=body, headers=bearer(token) if token else None)


async def expect_error(resp: ClientResponse, status: int, pattern: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    body: dict[str, Any] = json.loads(text)
    assert body["status"] == status and pattern.lower() in body["error"].lower(), body
    assert not any(secret in text for secret in SECRETS)
    return body


async def answer(resp: ClientResponse) -> dict[str, Any]:
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@pytest.fixture(autouse=True)
def no_errors_and_no_secrets_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """A client's mistake is never an ERROR line, and no token reaches the log."""
    caplog.set_level(logging.DEBUG)
    yield
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not any(secret in caplog.text for secret in SECRETS)


# ------------------------------------------------------------------ tokens on the routes


@pytest.mark.parametrize(
    ("headers", "pattern"),
    [
        ({}, "token is required"),
        (bearer("not-a-token-of-ours-123"), "invalid token"),
        ({"Authorization": f"Basic {PUB}"}, "Bearer"),
        (bearer("mst1.forged.signature"), "token"),
    ],
)
async def test_no_or_wrong_token_is_401_before_the_body_is_read(
    client: Client, headers: dict[str, str], pattern: str
) -> None:
    # A body that is not even JSON, and one far over the size limit: 401 first all the same.
    for body in (b"not json", b"x" * (3 * ServerConfig().max_sdp_bytes)):
        resp = await client.post(
            "/offer", data=body, headers={**headers, "Content-Type": "application/json"}
        )
        await expect_error(resp, 401, pattern)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    for method, path in (("GET", "/sessions/x"), ("POST", "/sessions/x/interrupt")):
        resp = await client.request(method, path, headers=headers)
        await expect_error(resp, 401, pattern)
    assert not client.app[STATE].peers
    assert sum(auth_failures(client).values()) == 4


async def test_a_viewer_token_cannot_publish(client: Client, sdp: dict[str, str]) -> None:
    await expect_error(await offer(client, sdp, VIEW), 403, "viewer token cannot act as publisher")
    assert not client.app[STATE].peers and not len(client.app[STATE].rooms)
    assert auth_failures(client) == {"forbidden": 1}


async def test_pages_and_health_need_no_token(client: Client) -> None:
    for path in ("/", "/viewer", "/static/app.js", "/healthz"):
        resp = await client.get(path)
        assert resp.status == 200, path


async def test_a_token_in_the_address_stays_out_of_the_access_log(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await client.get(f"/viewer?room=r1&token={PUB}")
    assert resp.status == 200

    def logged() -> bool:  # once the answer is written, after the client has it
        lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
        return any("/viewer?room=r1&token=<redacted>" in line for line in lines)

    await eventually(logged, "the access log line")
    # (the autouse fixture checks that the token itself is in no log line)


async def test_sessions_belong_to_the_credential_that_made_them(
    client: Client, sdp: dict[str, str]
) -> None:
    mine = await answer(await offer(client, sdp, PUB, room="studio"))
    sid = mine["session_id"]
    viewer = await answer(await offer(client, sdp, VIEW, role="viewer", room="studio"))
    vid = viewer["session_id"]
    # Anyone else (another publisher, a viewer of the room) is told it does not exist, with
    # the same words as for an id nobody has.
    unknown = await expect_error(await client.get("/sessions/nobody", headers=bearer(PUB)), 404, "")
    for token in (PUB2, VIEW):
        for method, path in (
            ("GET", f"/sessions/{sid}"),
            ("POST", f"/sessions/{sid}/interrupt"),
            ("DELETE", f"/sessions/{sid}"),
        ):
            resp = await client.request(method, path, headers=bearer(token))
            body = await expect_error(resp, 404, "no session")
            assert body["error"] == unknown["error"].replace("nobody", sid)
    resp = await client.get(f"/sessions/{vid}", headers=bearer(PUB2))
    await expect_error(resp, 404, "no session")
    assert set(client.app[STATE].peers) == {sid, vid}
    # Its creator may; the viewer reads (and leaves) its own session only.
    stats = await answer(await client.get(f"/sessions/{sid}", headers=bearer(PUB)))
    assert stats["viewers"] == 1
    await answer(await client.post(f"/sessions/{sid}/interrupt", headers=bearer(PUB)))
    assert (await answer(await client.get(f"/sessions/{vid}", headers=bearer(VIEW))))["role"] == (
        "viewer"
    )
    await answer(await client.delete(f"/sessions/{vid}", headers=bearer(VIEW)))
    await answer(await client.delete(f"/sessions/{sid}", headers=bearer(PUB)))
    assert not client.app[STATE].peers


async def test_ids_are_unguessable(sdp: dict[str, str]) -> None:
    client = await _client(_config())  # open mode: the id is the only capability
    try:
        ids = [await answer(await offer(client, sdp, None)) for _ in range(2)]
        for body in ids:
            assert len(body["session_id"]) >= 32  # 128 bits in hex
            assert len(body["room"]) >= 22  # 128 bits in URL-safe base64
        assert ids[0]["session_id"] != ids[1]["session_id"] and ids[0]["room"] != ids[1]["room"]
    finally:
        await client.close()


# ------------------------------------------------------------------ signed room tokens


async def test_a_room_token_opens_and_keeps_to_its_room(
    client: Client, sdp: dict[str, str]
) -> None:
    token = mint_room_token(SECRET, "publisher", "show-7", 3600, now=_now())
    # No room in the offer: the token's room is opened.
    body = await answer(await offer(client, sdp, token))
    assert body["room"] == "show-7"
    await expect_error(await offer(client, sdp, token, room="show-8"), 403, "another room")
    # Another holder of a publisher token for this room meets the first publisher (409).
    other = mint_room_token(SECRET, "publisher", "show-7", 60, now=_now())
    await expect_error(await offer(client, sdp, other, room="show-7"), 409, "already has")
    # The viewer link carries a viewer token for this room only, never the publisher's.
    link = body["viewer_url"]
    assert link.startswith("/viewer?room=show-7&token=mst1.") and token not in link
    viewer_token = link.split("&token=", 1)[1]
    viewer = Authenticator(secret=SECRET).authenticate(viewer_token)
    assert (viewer.role, viewer.room) == ("viewer", "show-7")
    await answer(await offer(client, sdp, viewer_token, role="viewer", room="show-7"))
    await expect_error(await offer(client, sdp, viewer_token), 403, "cannot act as publisher")
    resp = await offer(client, sdp, viewer_token, role="viewer", room="elsewhere")
    await expect_error(resp, 403, "another room")
    # A room token reads the sessions it made, and no others.
    resp = await client.get(f"/sessions/{body['session_id']}", headers=bearer(other))
    await expect_error(resp, 404, "no session")
    await answer(await client.get(f"/sessions/{body['session_id']}", headers=bearer(token)))


async def test_an_expired_room_token_is_401(client: Client, sdp: dict[str, str]) -> None:
    token = mint_room_token(SECRET, "publisher", "late", 10, now=_now() - 60)
    await expect_error(await offer(client, sdp, token), 401, "expired")


async def test_static_tokens_get_a_bare_viewer_link_without_a_secret(sdp: dict[str, str]) -> None:
    client = await _client(_config(AuthConfig(publisher_tokens=(PUB,))))
    try:
        body = await answer(await offer(client, sdp, PUB))
        assert body["viewer_url"] == f"/viewer?room={body['room']}"
    finally:
        await client.close()


def auth_failures(client: Client) -> dict[str, float]:
    """``msadtalker_auth_failures`` by reason, as /metrics reports them."""
    registry = client.app[STATE].metrics.registry
    return {
        sample.labels["reason"]: sample.value
        for family in registry.collect()
        if family.name == "msadtalker_auth_failures"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def _now() -> float:
    import time

    return time.time()


# ------------------------------------------------------------------ cross-site


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_offers_must_be_json(client: Client, sdp: dict[str, str], content_type: str) -> None:
    data = json.dumps({"type": "offer", "sdp": sdp["publisher"]}).encode()
    headers = bearer(PUB)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post("/offer", data=data, headers=headers)
    await expect_error(resp, 415, "application/json")
    headers["Content-Type"] = "application/json; charset=utf-8"
    await answer(await client.post("/offer", data=data, headers=headers))


async def test_security_headers_on_every_answer(client: Client) -> None:
    for path, status in (("/", 200), ("/static/app.js", 200), ("/healthz", 200), ("/nope", 404)):
        resp = await client.get(path)
        assert resp.status == status
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Server"] == "msadtalker"
        assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.post("/offer", json={})  # a 401 too
    assert resp.headers["Server"] == "msadtalker" and "Content-Security-Policy" in resp.headers


async def test_frame_ancestors_come_from_the_config() -> None:
    ancestors = ("'self'", "https://obs.example")
    client = await _client(_config(frame_ancestors=ancestors))
    try:
        resp = await client.get("/viewer")
        assert (
            "frame-ancestors 'self' https://obs.example" in resp.headers["Content-Security-Policy"]
        )
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/static/nothing.js", "GET", 404),
        ("/static/../streamer/config.py", "GET", 404),
        ("/static/%2e%2e/pyproject.toml", "GET", 404),
        ("/static/app.js", "POST", 405),
    ],
)
async def test_static_errors_are_json(client: Client, path: str, method: str, status: int) -> None:
    resp = await client.request(method, path)
    await expect_error(resp, status, "")


async def test_cors_is_off_by_default(client: Client) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    resp = await client.options("/offer", headers=preflight)
    assert resp.status == 405 and "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_allows_the_configured_origins_exactly() -> None:
    client = await _client(_config(TOKENS, cors_origins=("https://app.example",)))
    try:
        preflight = {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        resp = await client.options("/offer", headers=preflight)
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        resp = await client.get(
            "/sessions/x", headers={"Origin": "https://app.example", **bearer(PUB)}
        )
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        for origin in ("https://app.example.evil", "http://app.example", "null"):
            resp = await client.options("/offer", headers={**preflight, "Origin": origin})
            assert resp.status == 405 and "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await client.close()


def test_room_names_are_matched_whole() -> None:
    body = json.dumps({"type": "offer", "sdp": "v=0", "room": "abc\n"})
    with pytest.raises(OfferError, match='"room"') as info:
        parse_offer(body, 64_000)
    assert info.value.status == 400
    with pytest.raises(ValueError):
        RoomRegistry[Any]().open("abc\n")


# ------------------------------------------------------------------ the internal hop


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


async def test_the_internal_port_answers_only_the_workers(sdp: dict[str, str]) -> None:
    hop = "hop-secret-for-this-test-0123456789"
    ports = _free_ports(2)
    # This server listens on worker 0's internal port: every request is an internal one.
    cluster = Cluster(0, tuple(ports), hop_secret=hop)
    client = await _client(_config(TOKENS), cluster=cluster, port=ports[0])
    try:
        for headers in ({}, {HOP_HEADER: "guess"}, {HOP_HEADER: hop[:-1]}):
            for method, path in (("GET", "/healthz"), ("GET", "/sessions/w0-x")):
                resp = await client.request(method, path, headers={**headers, **bearer(PUB)})
                await expect_error(resp, 403, "workers only")
        # The hop carries the credential the receiving worker established; the owner binds
        # the session to it and checks it.
        caller = Credential(role="publisher", subject="publisher:abc")
        hop_headers = {HOP_HEADER: hop, CREDENTIAL_HEADER: encode_credential(caller)}
        body = {"type": "offer", "sdp": sdp["publisher"]}
        created = await answer(await client.post("/offer", json=body, headers=hop_headers))
        sid = created["session_id"]
        assert parse_id(sid).worker == 0
        await answer(await client.get(f"/sessions/{sid}", headers=hop_headers))
        stranger = {
            **hop_headers,
            CREDENTIAL_HEADER: encode_credential(
                Credential(role="publisher", subject="publisher:other")
            ),
        }
        await expect_error(await client.get(f"/sessions/{sid}", headers=stranger), 404, "")
        viewer = {
            **hop_headers,
            CREDENTIAL_HEADER: encode_credential(Credential(role="viewer", subject="viewer:v")),
        }
        resp = await client.post("/offer", json=body, headers=viewer)
        await expect_error(resp, 403, "cannot act as publisher")
        assert auth_failures(client) == {"hop": 6, "forbidden": 1}
        # No credential on a protected route: nobody.
        resp = await client.get(f"/sessions/{sid}", headers={HOP_HEADER: hop})
        await expect_error(resp, 401, "token")
    finally:
        await client.close()


def test_a_cluster_needs_a_hop_secret_and_hides_it() -> None:
    with pytest.raises(ValueError, match="hop secret"):
        Cluster(0, (1, 2))
    cluster = Cluster(0, (1, 2), hop_secret="very-secret-hop")
    assert "very-secret-hop" not in repr(cluster)
    assert cluster.hop_ok("very-secret-hop") and not cluster.hop_ok("very-secret-ho")
    assert not cluster.hop_ok(None) and not cluster.hop_ok("")


# ------------------------------------------------------------------ configuration


def test_tokens_from_the_environment_join_the_file(tmp_path: Any) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(f'[auth]\npublisher_tokens = ["{PUB}"]\ntoken_secret = "{SECRET}"\n')
    environ = {
        "MSADTALKER_PUBLISHER_TOKENS": f" {PUB2} , {PUB},",
        "MSADTALKER_VIEWER_TOKENS": VIEW,
    }
    auth = load_config(path, environ=environ).auth
    assert auth.publisher_tokens == (PUB, PUB2) and auth.viewer_tokens == (VIEW,)
    assert auth.token_secret == SECRET
    other = "another-secret-0123456789"
    secret_env = {"MSADTALKER_TOKEN_SECRET": other}
    assert load_config(path, environ=secret_env).auth.token_secret == other
    assert load_config(environ={}).auth.open
    shown = repr(load_config(path, environ=environ))
    assert not any(secret in shown for secret in SECRETS) and "hidden" in shown


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('[auth]\npublisher_tokens = ["short"]\n', "publisher_tokens: every token"),
        ('[auth]\ntoken_secret = "short"\n', "token_secret"),
        (f'[auth]\npublisher_tokens = ["{PUB}"]\nviewer_tokens = ["{PUB}"]\n', "both"),
        ('[auth]\npublisher_tokens = "one"\n', "must be a list"),
        ('[server]\ncors_origins = ["*"]\n', "cors_origins"),
        ('[server]\ncors_origins = ["https://a.example/path"]\n', "cors_origins"),
        ("[server]\nframe_ancestors = [\"'self'; script-src *\"]\n", "frame_ancestors"),
        ("[server]\nframe_ancestors = []\n", "frame_ancestors"),
    ],
)
def test_bad_auth_and_browser_settings_are_config_errors(
    tmp_path: Any, text: str, pattern: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path, environ={})
    assert "short" not in str(info.value) and PUB not in str(info.value)


def test_an_open_server_beyond_loopback_refuses_to_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        check_exposure(_config(host=host))
    for host in ("0.0.0.0", "", "192.168.1.10", "::", "example.com"):
        with pytest.raises(ConfigError, match="without tokens"):
            check_exposure(_config(host=host))
        check_exposure(_config(TOKENS, host=host))
        check_exposure(_config(AuthConfig(token_secret=SECRET), host=host))
    caplog.clear()
    check_exposure(_config(host="0.0.0.0", insecure=True))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--insecure" in warnings[0].getMessage()


def test_serve_beyond_loopback_without_tokens_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MSADTALKER_PUBLISHER_TOKENS", "MSADTALKER_VIEWER_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MSADTALKER_TOKEN_SECRET", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msadtalker: error: refusing to serve on 0.0.0.0")
    assert "--insecure" in err[0]


# ------------------------------------------------------------------ msadtalker token


def test_the_token_command_mints_what_the_server_accepts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSADTALKER_TOKEN_SECRET", SECRET)
    assert main(["token", "--role", "viewer", "--room", "show-1", "--ttl", "15m"]) == 0
    token = capsys.readouterr().out.strip()
    credential = Authenticator(secret=SECRET).authenticate(token)
    assert (credential.role, credential.room) == ("viewer", "show-1")


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["--role", "viewer", "--room", "r"], "no token secret"),
        (["--role", "admin", "--room", "r"], "--role"),
        (["--role", "viewer", "--room", "a b"], "--room"),
        (["--role", "viewer", "--room", "r", "--ttl", "soon"], "--ttl"),
        (["--role", "viewer", "--room", "r", "--ttl", "0s"], "--ttl"),
    ],
)
def test_the_token_command_says_what_is_wrong(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    pattern: str,
) -> None:
    monkeypatch.delenv("MSADTALKER_TOKEN_SECRET", raising=False)
    if pattern != "no token secret":
        monkeypatch.setenv("MSADTALKER_TOKEN_SECRET", SECRET)
    try:
        code = main(["token", *argv])
    except SystemExit as exc:  # argparse's own flag errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], lines
