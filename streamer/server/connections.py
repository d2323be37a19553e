"""Slow and greedy HTTP clients: request deadlines, connections per client, quiet client errors.

aiohttp closes a keep-alive connection that sits idle between requests (``keepalive_timeout``:
``server.keepalive_timeout_s``, see ``handler_args``), but has no deadline for a request that
arrives slowly: a thousand connections each sending a header byte every few seconds, or a body
that never ends, stay open as long as their senders like. ``ConnectionGuard`` wraps aiohttp's
protocol factory on the public port (``GuardedSite``) and watches the bytes as they arrive,
reading no more of them than the header lines that say how long a body is:

* the request line and headers must be complete ``header_timeout_s`` after the connection
  opened, or after the first byte of the request;
* a body must be complete ``body_timeout_s`` after its headers (``Content-Length`` bytes, or
  a chunked body up to its last chunk);
* ``max_connections_per_client`` connections at once per client address (a trusted proxy's
  are not counted per client: it carries many) and ``max_connections`` in all: beyond them a
  new connection gets a JSON 429 (this client) or 503 (everyone) and is closed before aiohttp
  sees it;
* a request with an ``Expect`` header other than ``100-continue`` gets a JSON 417 and the
  connection is closed: aiohttp answers it before any middleware, as text that quotes the
  header, and a header that is not UTF-8 made that a 500 with an ERROR traceback (found by
  fuzzing: any client could flood the log).

A deadline runs only while a request is incomplete, so a response that takes long (an offer
being negotiated) never counts against the client. What a guard closes is logged at DEBUG and
what aiohttp cannot parse at INFO, one line each (``ClientErrorLogger``): a flood of bad
clients must not become a flood of log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from streamer.config import ServerConfig

log = logging.getLogger(__name__)

_KEPT_OF_A_LINE = 64  # header lines are read for their name and a short value only
_LAST_CHUNK = b"\n0\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_per_client: int = 32
    max_total: int = 1024
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks not counted per client

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(
            header_timeout_s=server.header_timeout_s,
            body_timeout_s=server.body_timeout_s,
            max_per_client=server.max_connections_per_client,
            max_total=server.max_connections,
            trusted_proxies=server.trusted_proxies,
        )


def handler_args(server: ServerConfig) -> dict[str, Any]:
    """aiohttp's own per-connection settings (``web.Application(handler_args=...)``, so test
    servers get them too): the keep-alive timeout (in aiohttp >= 3.12 it also closes a
    connection that never sends a request) and the quiet logger for unparsable requests."""
    return {
        "keepalive_timeout": server.keepalive_timeout_s,
        "logger": ClientErrorLogger(logging.getLogger("aiohttp.server")),
    }


class ClientErrorLogger(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, except that a request aiohttp could not parse, head or body
    (the client's mistake, answered with a 400), is one INFO line naming the error's type, not
    an ERROR with a traceback; its text is left out, as it may quote what the client sent (a
    token)."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError | web.RequestPayloadError):
            client = args[0] if args and "%s" in str(msg) else "a client"
            name = type(exc_info).__name__
            self.logger.info("unparsable HTTP request from %s: %s", client, name)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


class ConnectionGuard:
    """Counts the connections of one listening socket and watches their requests (see the
    module docstring); ``wrap(factory)`` is the protocol factory for ``create_server``."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in limits.trusted_proxies)
        self.per_client: Counter[str] = Counter()
        self.total = 0
        self.refused = 0  # connections turned away at once (over a cap)
        self.timed_out = 0  # connections closed at a request deadline

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, factory())

    def admit(self, client: str) -> tuple[int, str] | None:
        """Count a new connection of ``client``; a (status, message) refusal over a cap."""
        if self.total >= self.limits.max_total:
            return 503, "the server has too many connections; try again later"
        counted = not self._is_proxy(client)
        if counted and self.per_client[client] >= self.limits.max_per_client:
            return 429, "too many connections from this address at once"
        self.total += 1
        if counted:
            self.per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        if self.per_client.get(client):
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]

    def _is_proxy(self, client: str) -> bool:
        if not self._proxies:
            return False
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self._proxies)


class _Phase:
    START = "start"  # connected, no byte of a request yet (header deadline running)
    HEADERS = "headers"  # in the request line and headers (header deadline)
    BODY = "body"  # in a Content-Length body (body deadline)
    CHUNKED = "chunked"  # in a chunked body (body deadline)
    IDLE = "idle"  # between requests: aiohttp's keep-alive timeout applies


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's deadlines and counting in
    front; every callback is passed on unchanged."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self._phase = _Phase.START
        self._line = bytearray()
        self._line_length = 0
        self._started_line = False  # the request line has begun
        self._body_left = 0
        self._chunked = False
        self._tail = b""  # last bytes of a chunked body, for a terminator split over reads
        self._refusal: tuple[int, str] | None = None  # the request is answered here, not passed

    # ------------------------------------------------------------ the protocol, passed on

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an ``asyncio.Transport`` subclass).
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self._guard.admit(self._client)
        if refusal is not None:
            self._guard.refused += 1
            log.debug("connection from %s refused: %s", self._client, refusal[1])
            _refuse(transport, *refusal)
            return
        self._admitted = True
        self._arm(self._guard.limits.header_timeout_s, "no complete request headers")
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release(self._client)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        self._watch(data)
        if self._refusal is not None:
            assert self._transport is not None
            if not self._transport.is_closing():  # answered once; what follows is dropped
                log.debug("request from %s refused: %s", self._client, self._refusal[1])
                _refuse(self._transport, *self._refusal)
            return
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # ------------------------------------------------------------ the deadlines

    def _arm(self, delay_s: float, what: str) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay_s, self._expire, what, delay_s)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, what: str, delay_s: float) -> None:
        self._timer = None
        self._guard.timed_out += 1
        log.debug("closing a connection from %s: %s in %.1f s", self._client, what, delay_s)
        if self._transport is not None:
            self._transport.close()

    # ------------------------------------------------------------ where the request is

    def _watch(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._phase == _Phase.IDLE:
                self._arm(self._guard.limits.header_timeout_s, "no complete request headers")
                self._phase = _Phase.START
            if self._phase in (_Phase.START, _Phase.HEADERS):
                self._phase = _Phase.HEADERS
                at = self._read_headers(data, at)
            elif self._phase == _Phase.BODY:
                taken = min(self._body_left, len(data) - at)
                self._body_left -= taken
                at += taken
                if not self._body_left:
                    self._request_done()
            else:  # chunked: done at the last chunk, "0" CRLF CRLF at the start of a line
                seen = self._tail + data[at:]
                end = seen.find(_LAST_CHUNK)
                if end < 0:
                    self._tail = seen[-(len(_LAST_CHUNK) - 1) :]
                    return
                at += end + len(_LAST_CHUNK) - len(self._tail)
                self._tail = b""
                self._request_done()

    def _read_headers(self, data: bytes, at: int) -> int:
        """Reads header lines from ``data[at:]``; where it stopped."""
        end = data.find(b"\n", at)
        piece = data[at:] if end < 0 else data[at:end]
        room = _KEPT_OF_A_LINE - len(self._line)
        if room > 0:
            self._line += piece[:room]
        self._line_length += len(piece)
        if end < 0:
            return len(data)
        line = bytes(self._line).rstrip(b"\r")
        empty = not line and self._line_length <= 1
        self._line.clear()
        self._line_length = 0
        if not empty:
            self._read_header(line)
        elif self._started_line:
            self._headers_done()
        return end + 1

    def _read_header(self, line: bytes) -> None:
        if not self._started_line:
            self._started_line = True  # the request line
            return
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            try:
                self._body_left = max(0, int(value.strip()))
            except ValueError:
                self._body_left = 0  # aiohttp refuses it
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self._chunked = True
        elif name == b"expect" and value.strip().lower() != b"100-continue":
            self._refusal = (417, "unsupported Expect header (only 100-continue is)")

    def _headers_done(self) -> None:
        if self._chunked:
            self._phase = _Phase.CHUNKED
            self._tail = b"\n"  # the body starts a line
        elif self._body_left:
            self._phase = _Phase.BODY
        else:
            self._request_done()
            return
        self._arm(self._guard.limits.body_timeout_s, "no complete request body")

    def _request_done(self) -> None:
        self._disarm()
        self._phase = _Phase.IDLE
        self._started_line = False
        self._body_left = 0
        self._chunked = False


def _refuse(transport: asyncio.Transport, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    reason = {429: "Too Many Requests", 417: "Expectation Failed"}.get(
        status, "Service Unavailable"
    )
    retry = "Retry-After: 5\r\n" if status in (429, 503) else ""  # a capacity refusal
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{retry}X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


class GuardedSite(web.BaseSite):
    """``web.TCPSite`` with a ``ConnectionGuard`` in front of every connection."""

    __slots__ = ("_host", "_port", "_reuse_port", "guard")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        limits: ConnectionLimits,
        reuse_port: bool | None = None,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self.guard = ConnectionGuard(limits)

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.wrap(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
