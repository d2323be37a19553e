"""Ids that name their instance and worker (``streamer.server.ids``), and the instance id's
configuration; the routing by them is tests/test_loadbalancer.py's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msadtalker.errors import ConfigError
from streamer.config import load_config
from streamer.server.ids import (
    IdOwner,
    instance_from_hostname,
    make_id,
    parse_id,
    resolve_instance_id,
)
from streamer.server.rooms import ROOM_ID, RoomRegistry

LB_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "msadtalker-lb.conf"


@pytest.mark.parametrize(
    "owner",
    [
        IdOwner("node-a", 1),
        IdOwner("gpu-3", None),
        IdOwner("x" * 32, 12),
        IdOwner(None, 0),
        IdOwner(None, None),
    ],
)
def test_an_id_names_the_owner_that_made_it(owner: IdOwner) -> None:
    for random_part in ("3f2a" * 8, "Xy_9ab-Q", "-_x"):
        assert parse_id(make_id(owner, random_part)) == owner


def test_ids_read_as_the_balancer_reads_them() -> None:
    assert make_id(IdOwner("node-a", 1), "3f2a") == "i-node-a_w1-3f2a"
    assert make_id(IdOwner("node-a"), "3f2a") == "i-node-a_3f2a"
    # Ids from before instances (and names clients chose) name a worker at most.
    assert parse_id("w1-3f2a") == IdOwner(None, 1)
    assert parse_id("party-room") == IdOwner()
    assert parse_id("i-UPPER_x") == IdOwner()  # not an instance id: nobody's
    assert parse_id("i-node-a-3f2a") == IdOwner()  # no ``_``: no instance


def test_random_room_ids_with_an_instance_are_still_room_ids() -> None:
    rooms: RoomRegistry[object] = RoomRegistry(make_id(IdOwner("node-a", 3), ""))
    room = rooms.open()
    assert ROOM_ID.fullmatch(room.id), room.id  # viewers may name it in their offers
    assert parse_id(room.id) == IdOwner("node-a", 3)


@pytest.mark.parametrize(
    ("hostname", "instance"),
    [
        ("node-a", "node-a"),
        ("GPU_Box-3.example.com", "gpu-box-3"),
        ("-" * 5 + "a" * 40, "a" * 32),
        ("___", ""),
    ],
)
def test_the_default_instance_comes_from_the_hostname(hostname: str, instance: str) -> None:
    assert instance_from_hostname(hostname) == instance


def test_a_configured_instance_wins_and_nothing_usable_is_random() -> None:
    assert resolve_instance_id("edge-1", hostname="node-a") == "edge-1"
    assert resolve_instance_id("", hostname="node-a") == "node-a"
    drawn = {resolve_instance_id("", hostname="...") for _ in range(4)}
    assert len(drawn) > 1
    assert all(re.fullmatch(r"[0-9a-f]{8}", d) for d in drawn)


def test_the_instance_id_is_validated() -> None:
    assert load_config(overrides={"server.instance_id": "node-7"}).server.instance_id == "node-7"
    for bad in ("Node", "a_b", "x" * 33, "a.b"):
        with pytest.raises(ConfigError, match=r"\[server\] instance_id .* must be 1-32 of"):
            load_config(overrides={"server.instance_id": bad})


def test_the_shipped_balancer_config_matches_the_ids() -> None:
    """The nginx map reads the instance the way ``parse_id`` does (its input: URI, ``?room=``,
    the room query argument)."""
    conf = LB_CONF.read_text()
    owner_map = conf.split("$msadtalker_owner {", 1)[1].split("\n}", 1)[0]
    patterns = re.findall(r'"~(\^[^"]+)"', owner_map)
    assert patterns, "no routing regex in the shipped config"
    sid = make_id(IdOwner("node-b", 2), "3f2a" * 8)
    routed = {
        f"/sessions/{sid}?room=": "node-b",
        f"/sessions/{sid}/interrupt?room=": "node-b",
        f"/whip/resource/{sid}?room=": "node-b",
        f"/whep/resource/{sid}?room=": "node-b",
        f"/whep/{sid}?room=": "node-b",
        f"/offer?room={sid}": "node-b",
        "/offer?room=party-room": None,
        "/offer?room=": None,
        "/sessions/w1-3f2a?room=": None,
    }
    for uri, instance in routed.items():
        found = None
        for pattern in patterns:
            match = re.match(pattern, uri)
            if match is not None:
                found = match.group(match.lastindex or 0)
                break
        assert found == instance, uri
