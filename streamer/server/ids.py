"""Ids that name their owner: which server instance (machine) and which worker made them.

Behind a load balancer (docs/broadcast.md, "Several machines") a follow-up request (stats,
interrupt, hang-up, a WHIP/WHEP resource, a viewer of a room) must reach the instance that
holds the session, and the balancer can only see the URL. So every id this server makes
starts with its instance, then its worker (``streamer.server.cluster``), then 128 random bits::

    i-<instance>_w<worker>-<random>      e.g. i-gpu-3_w1-3f2a...   (serve --workers N)
    i-<instance>_<random>                e.g. i-gpu-3_3f2a...      (one process)

``_`` ends the instance because an instance id cannot contain it while every room-id
validator already accepts it (``streamer.server.rooms.ROOM_ID``). A room name a client chose
carries no instance (it is placed by the balancer like any new offer).

``make_id`` is the one function that makes ids and ``parse_id`` the one that reads them; the
nginx configuration (deploy/nginx/msadtalker-lb.conf) matches the same pattern.
"""

from __future__ import annotations

import re
import secrets
import socket
from dataclasses import dataclass

INSTANCE_ID = re.compile(r"[a-z0-9-]{1,32}")  # always ``fullmatch``ed
# Optional instance, then optional worker: old-style ``w1-...`` ids still name their worker.
_OWNED = re.compile(r"(?:i-(?P<instance>[a-z0-9-]{1,32})_)?(?:w(?P<worker>\d{1,4})-)?")
_NOT_INSTANCE = re.compile(r"[^a-z0-9-]+")
RANDOM_INSTANCE_BYTES = 4  # when the hostname gives nothing usable: 8 hex characters


@dataclass(frozen=True)
class IdOwner:
    """Who made an id: ``instance`` (``None``: an id without one, e.g. a room name a client
    chose) and ``worker`` (``None``: a single-process server's id, or none named)."""

    instance: str | None = None
    worker: int | None = None


def make_id(owner: IdOwner, random_part: str) -> str:
    """The id ``owner`` gives to ``random_part`` (``""``: the prefix alone, which the room
    registry and the peers put in front of their own random parts)."""
    instance = f"i-{owner.instance}_" if owner.instance is not None else ""
    worker = f"w{owner.worker}-" if owner.worker is not None else ""
    return f"{instance}{worker}{random_part}"


def parse_id(some_id: str) -> IdOwner:
    """The owner an id names; ``IdOwner()`` when it names none."""
    match = _OWNED.match(some_id)
    assert match is not None  # every part is optional: the empty prefix always matches
    worker = match.group("worker")
    return IdOwner(match.group("instance"), int(worker) if worker is not None else None)


def instance_from_hostname(hostname: str) -> str:
    """The instance id a hostname suggests: its first label, lower case, other characters as
    ``-``, at most 32 characters; ``""`` when nothing usable is left."""
    label = hostname.split(".", 1)[0].lower()
    return _NOT_INSTANCE.sub("-", label).strip("-")[:32].strip("-")


def resolve_instance_id(configured: str, hostname: str | None = None) -> str:
    """``server.instance_id`` when set, else the hostname's (``socket.gethostname()``), else
    random. Machines behind one balancer need distinct ids: set them where hostnames repeat
    (containers often share one)."""
    if configured:
        return configured
    derived = instance_from_hostname(socket.gethostname() if hostname is None else hostname)
    return derived or secrets.token_hex(RANDOM_INSTANCE_BYTES)
