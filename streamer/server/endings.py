"""Why a session the server ended has ended, kept a while for the client that owned it.

When the server closes a peer connection (its pipeline failed, it went idle or silent, the
server shut down, ...) the client sees its connection close and nothing more. For a while
after, ``GET /sessions/ID`` (and interrupt, hang-up) answers that client **410 Gone** with
the reason (``"ended"``, the ``msadtalker_peers_closed_total`` reason) and one sentence
(``"error"``), so a page polling its figures can say why. A hang-up is not recorded: the
client knows, and its id is simply unknown again (404).

Only the credential that created the session learns of it (``streamer.server.access``);
anyone else gets the 404 of an unknown id. The sentences are fixed: nothing of an exception's
text (a path, a token) reaches a client. Bounded: the latest ``limit`` endings, each for
``keep_s``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_ENDINGS = 1024
KEEP_S = 600.0
NOT_RECORDED = frozenset({"hangup"})
_SENTENCES = {
    "error": "the avatar pipeline failed",
    "vanished": "its client stopped answering",
    "idle": "no audio and no viewer for too long",
    "max_length": "it reached the maximum session length",
    "connect_timeout": "it did not connect in time",
    "connection_failed": "its connection failed",
    "connection_closed": "its connection closed",
    "session_ended": "its audio ended",
    "room_closed": "its room closed",
    "drain": "the server is shutting down",
}


@dataclass(frozen=True, slots=True)
class Ending:
    owner: str  # the credential subject that created the session
    reason: str  # as in msadtalker_peers_closed_total
    sentence: str
    at: float  # when (the store's clock)


class Endings:
    """The recent endings by session id (see the module docstring)."""

    def __init__(
        self,
        limit: int = MAX_ENDINGS,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._items: OrderedDict[str, Ending] = OrderedDict()
        self._limit = limit
        self._keep_s = keep_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._items)

    def record(self, session_id: str, owner: str, reason: str, cause: str | None = None) -> None:
        """``cause``: why the room closed, for a viewer closed with it (``room_closed``)."""
        if reason in NOT_RECORDED:
            return
        sentence = _SENTENCES.get(reason, reason)
        if cause is not None and cause not in NOT_RECORDED:
            sentence = f"{sentence}: {_SENTENCES.get(cause, cause)}"
        self._items[session_id] = Ending(owner, reason, sentence, self._clock())
        self._items.move_to_end(session_id)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, session_id: str) -> Ending | None:
        ending = self._items.get(session_id)
        if ending is not None and self._clock() - ending.at > self._keep_s:
            del self._items[session_id]
            return None
        return ending
