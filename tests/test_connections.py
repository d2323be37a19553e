"""Slow and greedy HTTP clients against ``GuardedSite`` (streamer.server.connections).

Raw sockets (asyncio streams) on loopback: slow headers, a partial body and an idle
keep-alive connection are closed at their deadlines (short ones, set here), while a slow
*response* never counts against the client; a client past its connection cap is refused while
another address still gets in. Every wait is for the event itself, bounded. (On uvloop, which
``serve`` runs on, the guard is exercised by the subprocess tests of test_server_media.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from live_fakes import eventually, within

from streamer.config import ServerConfig
from streamer.server.connections import ConnectionLimits, GuardedSite, handler_args

pytestmark = pytest.mark.leakcheck
A, B = "127.0.0.1", "127.0.0.2"
TIMEOUT_S = 0.4  # header and body deadlines of the test server
# aiohttp's keep-alive timeout, later: aiohttp >= 3.12 also closes a connection that has sent
# no complete request by then, so the guard's deadlines must come first to be seen.
KEEPALIVE_S = 2 * TIMEOUT_S
SLOW_ANSWER_S = 3 * TIMEOUT_S


class Guarded:
    def __init__(self, runner: web.AppRunner, site: GuardedSite) -> None:
        self.runner = runner
        self.site = site
        self.port = int(runner.addresses[0][1])

    async def connect(self, source: str = A) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(A, self.port, local_addr=(source, 0))


Start = Callable[..., Awaitable[Guarded]]


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"bytes": len(body)})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_ANSWER_S)  # a handler that takes its time (an offer's ICE)
    return web.json_response({"slow": True})


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def make(**limits: object) -> Guarded:
        server = ServerConfig(keepalive_timeout_s=KEEPALIVE_S)
        app = web.Application(handler_args=handler_args(server))
        app.router.add_route("*", "/echo", _echo)
        app.router.add_get("/slow", _slow)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        settings = {"header_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S, **limits}
        site = GuardedSite(runner, A, 0, ConnectionLimits(**settings))  # type: ignore[arg-type]
        await site.start()
        return Guarded(runner, site)

    yield make
    for runner in runners:
        await runner.cleanup()


async def _closed(reader: asyncio.StreamReader, what: str) -> bytes:
    """Everything the server sent until it closed the connection (bounded wait)."""
    return await within(reader.read(), 10 * TIMEOUT_S + 5, f"close of {what}")


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
    head = await within(reader.readuntil(b"\r\n\r\n"), 10, "an answer")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return status, json.loads(await reader.readexactly(length))


async def test_slow_headers_are_closed_at_the_header_deadline(start: Start) -> None:
    guarded = await start()
    reader, writer = await guarded.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
    assert await _closed(reader, "a slow-header connection") == b""
    writer.close()
    # One that says nothing at all is closed too.
    reader, writer = await guarded.connect()
    assert await _closed(reader, "a silent connection") == b""
    writer.close()
    assert guarded.site.guard.timed_out == 2


async def test_a_byte_at_a_time_does_not_extend_the_deadline(start: Start) -> None:
    guarded = await start()
    reader, writer = await guarded.connect()

    async def trickle() -> None:
        for byte in b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(TIMEOUT_S / 8)  # a slowloris client's pace

    sender = asyncio.create_task(trickle())
    try:
        assert await _closed(reader, "a trickling connection") == b""
        assert guarded.site.guard.timed_out == 1
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


async def test_a_partial_body_is_closed_at_the_body_deadline(start: Start) -> None:
    guarded = await start()
    reader, writer = await guarded.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert b"200" not in await _closed(reader, "a partial body")
    writer.close()
    reader, writer = await guarded.connect()
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    assert b"200" not in await _closed(reader, "a chunked body without its last chunk")
    writer.close()
    assert guarded.site.guard.timed_out == 2


async def test_an_idle_keep_alive_connection_is_closed(start: Start) -> None:
    guarded = await start()
    reader, writer = await guarded.connect()
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _answer(reader))[0] == 200
    assert await _closed(reader, "an idle keep-alive connection") == b""
    writer.close()
    assert guarded.site.guard.timed_out == 0  # aiohttp's keep-alive timeout closed it


async def test_complete_requests_of_every_shape_are_served(start: Start) -> None:
    """Bodies by length and chunked, pipelined requests, and an answer slower than every
    deadline: nothing is cut, the connection stays usable."""
    guarded = await start()
    reader, writer = await guarded.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert await _answer(reader) == (200, {"bytes": 5})
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n"
    writer.write(chunked + b"3\r\nabc\r\n4\r\n0\r\n\n\r\n0\r\n\r\n")
    assert await _answer(reader) == (200, {"bytes": 7})
    # Two at once, the first with its body split over writes.
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    await asyncio.sleep(TIMEOUT_S / 2)  # a pause shorter than the body deadline
    writer.write(b"cdGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _answer(reader) == (200, {"bytes": 4})
    assert await _answer(reader) == (200, {"bytes": 0})
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _answer(reader) == (200, {"slow": True})
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert await _answer(reader) == (200, {"bytes": 0})
    writer.close()
    assert guarded.site.guard.timed_out == 0


async def test_connections_per_client_are_capped(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guarded = await start(max_per_client=2, max_total=3)
    held = [await guarded.connect() for _ in range(2)]
    reader, writer = await guarded.connect()  # the third of one client
    status, body = await _answer(reader)
    assert status == 429 and body["status"] == 429 and "too many connections" in str(body)
    assert await _closed(reader, "a refused connection") == b""
    writer.close()
    # Another client still gets in ...
    other_reader, other_writer = await guarded.connect(B)
    other_writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _answer(other_reader))[0] == 200
    # ... until the server as a whole is full.
    reader, writer = await guarded.connect(B)
    assert (await _answer(reader))[0] == 503
    writer.close()
    other_writer.close()
    for _, w in held:
        w.close()
    guard = guarded.site.guard
    assert guard.refused == 2
    await eventually(lambda: guard.total == 0, "the connections counted out")
    assert not guard.per_client
    # Refusals are DEBUG lines: a flood of them does not flood the log.
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if "refused" in r.message)


async def test_a_trusted_proxy_is_not_capped_per_client(start: Start) -> None:
    guarded = await start(max_per_client=1, trusted_proxies=(A,))
    connections = [await guarded.connect() for _ in range(3)]
    reader, writer = connections[-1]
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _answer(reader))[0] == 200
    for _, w in connections:
        w.close()
