"""Who a client is, for the per-client limits: its address, and what it has in flight.

The client of a request is the TCP peer, except:

* behind a reverse proxy listed in ``server.trusted_proxies``: the address that proxy put last
  in ``X-Forwarded-For`` (the last one not itself a trusted proxy; what a client writes there
  itself comes first and is not believed);
* on a worker's internal port (``serve --workers N``): the client the receiving worker saw,
  which ``cluster.Forwarder`` passes on in ``X-Forwarded-For``.

``ClientLimits`` is one server's per-client bookkeeping: the offer budget of each address
(``RateLimiter``) and the offers each is negotiating right now. Peers that were answered but
have not connected yet count too (``Peer.client``; ``streamer.server.limits``).
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from streamer.config import ServerConfig
from streamer.server.ratelimit import RateLimiter

CLIENT = web.RequestKey("client", str)  # the request's client address, once known
UNKNOWN = "unknown"  # a transport without a peer address (a Unix socket, a closed one)
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientLimits:
    """One server's per-client bookkeeping (see the module docstring)."""

    def __init__(self, server: ServerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.offers = RateLimiter(server.offers_per_minute, server.offers_burst, clock)
        self.proxies: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies
        )
        self.negotiating: Counter[str] = Counter()

    @contextmanager
    def negotiation(self, client: str) -> Iterator[None]:
        """Counts an offer of ``client`` while it is being negotiated."""
        self.negotiating[client] += 1
        try:
            yield
        finally:
            self.negotiating[client] -= 1
            if not self.negotiating[client]:
                del self.negotiating[client]

    def is_proxy(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)


def client_address(request: web.Request, limits: ClientLimits, internal: bool = False) -> str:
    """The client of ``request`` (see the module docstring); ``internal``: it came in on this
    worker's internal port."""
    peer = request.remote or UNKNOWN
    forwarded = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
        if hop.strip()
    ]
    if internal:
        return forwarded[-1] if forwarded else peer
    if not limits.proxies or not limits.is_proxy(peer):
        return peer
    for hop in reversed(forwarded):
        if not limits.is_proxy(hop):
            return hop if _is_address(hop) else peer  # a proxy passes on what it was given
    return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
