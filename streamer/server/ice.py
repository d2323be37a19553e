"""ICE servers (STUN, TURN), configured once (``IceConfig``) and handed to everyone who connects.

* ``ice_servers(config, now)``: the servers as of ``now``, TURN REST credentials minted
  fresh (coturn's ``use-auth-secret``: username ``"<expiry>:<user>"``, credential
  base64(HMAC-SHA1(secret, username))), so a page or client gets credentials that expire
  and cannot be replayed for ever; static credentials are passed as configured.
* ``as_json``: what ``GET /ice-servers`` answers, the shape ``RTCConfiguration.iceServers``
  takes in a browser; ``link_headers``: the same as RFC 9725 ``Link: <url>; rel="ice-server"``
  headers for WHIP and WHEP clients (OBS reads them).
* ``peer_connection``: an aiortc peer connection with these servers, the server's own. aiortc
  uses the first STUN URL and the first TURN URL with a ``udp`` or ``tcp`` transport only.

Pure apart from the aiortc constructor: no I/O, no clock of its own (``now`` is passed in).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from streamer.config import Config
from streamer.io.aiortc_workarounds import PeerConnection


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""  # never logged


def turn_rest_credential(secret: str, user: str, expiry: int) -> tuple[str, str]:
    """(username, credential) that coturn's ``use-auth-secret`` accepts until ``expiry``
    (Unix seconds) for ``static-auth-secret = secret``."""
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(config: Config, now: float) -> tuple[IceServer, ...]:
    """The ICE servers as of ``now`` (Unix seconds): STUN (``ice.stun_urls`` and the older
    ``server.stun_url``), then TURN with its credentials (see the module docstring)."""
    ice = config.ice
    legacy = (config.server.stun_url,) if config.server.stun_url else ()
    stun = tuple(dict.fromkeys((*ice.stun_urls, *legacy)))
    servers: list[IceServer] = [IceServer(stun)] if stun else []
    if ice.turn_urls:
        if ice.turn_secret:
            expiry = int(now + ice.turn_ttl_s)
            username, credential = turn_rest_credential(ice.turn_secret, ice.turn_user, expiry)
        else:
            username, credential = ice.turn_username, ice.turn_credential
        servers.append(IceServer(ice.turn_urls, username, credential))
    return tuple(servers)


def as_json(servers: Sequence[IceServer]) -> list[dict[str, Any]]:
    """``RTCConfiguration.iceServers`` as a browser takes it."""
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        if server.username:
            entry.update(username=server.username, credential=server.credential)
        out.append(entry)
    return out


def link_headers(servers: Sequence[IceServer]) -> list[str]:
    """One RFC 9725 ``Link`` header value per URL (section 4.6; RFC 8288 quoting)."""
    links: list[str] = []
    for server in servers:
        for url in server.urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username:
                link += (
                    f"; username={_quoted(server.username)}; "
                    f'credential={_quoted(server.credential)}; credential-type="password"'
                )
            links.append(link)
    return links


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rtc_ice_servers(servers: Sequence[IceServer]) -> list[RTCIceServer]:
    return [
        RTCIceServer(
            urls=list(s.urls), username=s.username or None, credential=s.credential or None
        )
        for s in servers
    ]


def peer_connection(servers: Sequence[IceServer], relay_only: bool = False) -> RTCPeerConnection:
    """A peer connection with exactly ``servers`` (aiortc would otherwise ask Google's STUN
    server, slow or unreachable on closed networks); ``relay_only``: TURN relay candidates
    alone (``iceTransportPolicy: "relay"``)."""
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    configuration = RTCConfiguration(iceServers=rtc_ice_servers(servers), iceTransportPolicy=policy)
    return PeerConnection(configuration=configuration)
