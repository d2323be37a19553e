"""WHIP and WHEP under ``msadtalker serve --workers 2``: a WHIP publisher's room lives on one
worker; a WHEP viewer reaches it from either worker (the ``{room}`` in the path routes the
offer), and DELETE on each resource reaches its owner (the worker prefix of the id)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from live_fakes import speech_like
from test_serve_workers import TRIES, Serve, fresh, owner
from wish_client import WishClient

from streamer.server.cluster import WORKER_HEADER

pytestmark = pytest.mark.slow


async def test_whip_and_whep_reach_the_rooms_worker_from_either_worker(tmp_path: Path) -> None:
    serve = Serve(tmp_path / "serve.log", "--workers", "2")
    room = "wish-room"
    home = zlib.crc32(room.encode()) % 2
    publisher = WishClient("publisher", audio=speech_like([(0.2, 2.0)], 3.0))
    viewers: list[WishClient] = []
    try:
        async with fresh() as session:
            await publisher.connect(session, f"{serve.url}/whip/{room}")
            assert owner(publisher.location.rsplit("/", 1)[1]) == home
            for _ in range(TRIES):
                viewer = WishClient("viewer")
                viewers.append(viewer)
                answer = await viewer.connect(session, f"{serve.url}/whep/{room}")
                assert answer.headers["Location"].startswith("/whep/resource/")
                if int(answer.headers[WORKER_HEADER]) != home:
                    break  # relayed by the other worker, Location and all
            else:
                raise AssertionError("no WHEP offer reached the other worker")
            await viewers[-1].wait_frames(25)
            for client in (*viewers, publisher):
                async with session.delete(serve.url + client.location) as resp:
                    assert resp.status == 200, await resp.text()
    finally:
        for client in (*viewers, publisher):
            await client.aclose()
        assert serve.stop() == 0, serve.log()
