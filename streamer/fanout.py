"""A session's output fan-out: one bounded, drop-oldest queue per consumer.

Generic over what flows: a session fans out its ``VideoFrame``s and, apart, its ``VoiceChunk``s
(the voice leaves as soon as it is in, not with its picture). Each subscriber (a video track,
an audio track, a viewer's tracks, a broadcast encoder) has its own queue, so a slow or dead
subscriber never holds up the session or the other subscribers; every frame it loses is counted
(``Subscription.dropped``), also after it left (``FanOut.dropped_by_leavers``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One consumer's bounded view of a session's output (drop-oldest when full).

    ``get()`` returns the next frame, or ``None`` once the session has ended (or the
    subscription was closed) and everything queued was taken.
    """

    def __init__(self, fanout: FanOut[T], maxsize: int, name: str) -> None:
        self._fanout = fanout
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.name = name
        self.offered = 0  # items published to it (the voice's are mic blocks, not frames)
        self.dropped = 0
        self.delivered = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> T | None:
        while not self._items:
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.delivered += 1
        return self._items.popleft()

    def close(self) -> None:
        self._fanout.remove(self)
        self._end()

    def _offer(self, frame: T) -> None:
        if self._ended:
            return
        self.offered += 1
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(frame)
        self._wake()

    def _purge(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class FanOut(Generic[T]):
    """Publishes each output frame to every subscription; keeps the drop count of leavers."""

    def __init__(self, default_size: int) -> None:
        self._subs: list[Subscription[T]] = []
        self._default_size = default_size
        self._ended = False
        self.dropped_by_leavers = 0
        self.worst_leaver = 0

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription[T]:
        sub = Subscription(self, maxsize or self._default_size, name)
        if self._ended:
            sub._end()
        else:
            self._subs.append(sub)
        return sub

    def remove(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self.dropped_by_leavers += sub.dropped
            self.worst_leaver = max(self.worst_leaver, sub.dropped)

    def publish(self, frame: T) -> None:
        for sub in self._subs:
            sub._offer(frame)

    def purge(self) -> int:
        return sum(sub._purge() for sub in self._subs)

    def end(self) -> None:
        self._ended = True
        for sub in list(self._subs):
            sub._end()

    @property
    def subscribers(self) -> tuple[Subscription[T], ...]:
        return tuple(self._subs)

    @property
    def dropped(self) -> int:
        """Frames dropped over all subscriptions (one frame may count once per subscriber)."""
        return self.dropped_by_leavers + sum(sub.dropped for sub in self._subs)

    @property
    def worst_dropped(self) -> int:
        """Frames the worst-served subscriber lost."""
        return max([self.worst_leaver, *(sub.dropped for sub in self._subs)])
