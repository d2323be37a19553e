"""Rooms: one publisher (whose mic drives the avatar) and any number of viewers watching it.

A room lives exactly as long as its publisher: when the publisher leaves, its viewers are
closed. Viewers subscribe to the publisher's ``LiveSession`` output, so a viewer costs an
encoder, never a second pipeline (virtual-anchor broadcast). Sessions in different rooms share
nothing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Generic, TypeVar

PeerT = TypeVar("PeerT")

# Always ``fullmatch``ed: ``$`` would let a trailing newline through.
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
RANDOM_ID_BYTES = 16  # 128 bits: a random room id is as unguessable as a session id


@dataclass
class Room(Generic[PeerT]):
    id: str
    publisher: PeerT | None = None
    viewers: dict[str, PeerT] = field(default_factory=dict)


class RoomRegistry(Generic[PeerT]):
    """Room ids -> rooms. Plain bookkeeping: no I/O, no awaiting."""

    def __init__(self, prefix: str = "") -> None:
        self._rooms: dict[str, Room[PeerT]] = {}
        self._prefix = prefix  # of the random ids (a worker's, see ``streamer.server.cluster``)

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, room_id: str) -> Room[PeerT] | None:
        return self._rooms.get(room_id)

    def open(self, room_id: str | None = None) -> Room[PeerT]:
        """A new room; ``room_id`` if given (it must be free), else a fresh random id."""
        if room_id is None:
            room_id = self._prefix + secrets.token_urlsafe(RANDOM_ID_BYTES)
            while room_id in self._rooms:
                room_id = self._prefix + secrets.token_urlsafe(RANDOM_ID_BYTES)
        elif not ROOM_ID.fullmatch(room_id):
            raise ValueError("room ids are 1-64 characters of A-Z a-z 0-9 _ -")
        elif room_id in self._rooms:
            raise KeyError(room_id)
        room: Room[PeerT] = Room(id=room_id)
        self._rooms[room_id] = room
        return room

    def close(self, room_id: str) -> Room[PeerT] | None:
        return self._rooms.pop(room_id, None)

    def rooms(self) -> list[Room[PeerT]]:
        return list(self._rooms.values())
