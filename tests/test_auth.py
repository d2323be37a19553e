"""Bearer tokens and signed room tokens (streamer.server.auth), without a server."""

from __future__ import annotations

import pytest

from streamer.server.auth import (
    OPEN,
    Authenticator,
    AuthError,
    bearer_token,
    mint_room_token,
)

SECRET = "s3cret-for-tests"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_nothing_configured_is_open() -> None:
    auth = Authenticator()
    assert auth.open
    assert auth.authenticate(None) is OPEN
    assert auth.require("anything", "publisher") is OPEN


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER x.y.z", "x.y.z")],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "abc", "x" * 5000])
def test_malformed_authorization_is_401(header: str) -> None:
    with pytest.raises(AuthError) as info:
        bearer_token(header)
    assert info.value.status == 401


def test_static_tokens_give_their_role() -> None:
    auth = Authenticator(publisher_tokens=["pub1", "pub2"], viewer_tokens=["view1"])
    assert not auth.open
    assert auth.authenticate("pub2").role == "publisher"
    assert auth.authenticate("view1").role == "viewer"
    # Distinct credentials, stable subjects; the subject is not the token.
    assert auth.authenticate("pub1").subject != auth.authenticate("pub2").subject
    assert auth.authenticate("pub1").subject == auth.authenticate("pub1").subject
    assert "pub1" not in auth.authenticate("pub1").subject


@pytest.mark.parametrize("token", [None, "", "pub", "pub1 ", "PUB1", "view1x"])
def test_missing_or_wrong_token_is_401(token: str | None) -> None:
    auth = Authenticator(publisher_tokens=["pub1"], viewer_tokens=["view1"])
    with pytest.raises(AuthError) as info:
        auth.authenticate(token)
    assert info.value.status == 401
    assert token is None or not token or token not in str(info.value)


def test_viewer_token_on_a_publisher_action_is_403() -> None:
    auth = Authenticator(publisher_tokens=["pub1"], viewer_tokens=["view1"])
    with pytest.raises(AuthError) as info:
        auth.require("view1", "publisher")
    assert info.value.status == 403
    assert auth.require("pub1", "viewer").role == "publisher"  # a publisher may watch


def test_room_token_round_trip_and_scope() -> None:
    clock = Clock()
    auth = Authenticator(secret=SECRET, clock=clock)
    token = mint_room_token(SECRET, "publisher", "show-1", ttl_s=3600, now=clock.now)
    credential = auth.require(token, "publisher", room="show-1")
    assert credential.room == "show-1" and credential.role == "publisher"
    with pytest.raises(AuthError) as info:
        auth.require(token, "publisher", room="show-2")
    assert info.value.status == 403
    viewer = mint_room_token(SECRET, "viewer", "show-1", ttl_s=60, now=clock.now)
    with pytest.raises(AuthError) as info:
        auth.require(viewer, "publisher", room="show-1")
    assert info.value.status == 403


def test_room_token_expires() -> None:
    clock = Clock()
    auth = Authenticator(secret=SECRET, clock=clock)
    token = mint_room_token(SECRET, "viewer", "r", ttl_s=10, now=clock.now)
    assert auth.authenticate(token).room == "r"
    clock.now += 10
    with pytest.raises(AuthError, match="expired"):
        auth.authenticate(token)


def test_room_token_with_another_secret_or_edited_claims_is_rejected() -> None:
    clock = Clock()
    auth = Authenticator(secret=SECRET, clock=clock)
    forged = mint_room_token("other", "publisher", "r", ttl_s=10, now=clock.now)
    with pytest.raises(AuthError, match="invalid token"):
        auth.authenticate(forged)
    prefix, payload, signature = mint_room_token(SECRET, "viewer", "r", 10, clock.now).split(".")
    other_payload = mint_room_token(SECRET, "publisher", "r", 10, clock.now).split(".")[1]
    with pytest.raises(AuthError, match="invalid token"):
        auth.authenticate(f"{prefix}.{other_payload}.{signature}")


@pytest.mark.parametrize("token", ["mst1.", "mst1.a.b.c", "mst1.!!.??", "mst1.e30.AAAA"])
def test_malformed_room_tokens_are_401(token: str) -> None:
    auth = Authenticator(secret=SECRET)
    with pytest.raises(AuthError) as info:
        auth.authenticate(token)
    assert info.value.status == 401


def test_minting_needs_a_secret_a_role_and_a_ttl() -> None:
    with pytest.raises(ValueError):
        mint_room_token("", "viewer", "r", 10, 0)
    with pytest.raises(ValueError):
        mint_room_token(SECRET, "admin", "r", 10, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mint_room_token(SECRET, "viewer", "r", 0, 0)
