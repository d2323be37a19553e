"""The voice a session hands on ahead of its pictures, held back by the pipeline's lookahead.

Mic audio goes to the voice subscribers as soon as it is on the session's time line, not with
the frames made from it (``streamer.session``). A picture shows its audio's frame only
``lookahead`` after that audio came in (the silence window and the features look ahead), so
voice sent at once would lead its picture by the lookahead plus the processing; the receiver
then has to hold the voice that long to line the lips up with it, and a browser reaches such
a hold only step by step over several seconds (Chromium corrects A/V offsets by half the
filtered difference once a second, and not at all under 30 ms). Holding the voice here by the
designed lookahead leaves the receiver only the processing time to absorb, which its audio
buffer covers from the first second.

``add(start, samples)``: audio at time line position ``start`` (16 kHz); what was added
before is not added again (the buffer re-anchored or shifted back over it), a gap stays a gap
(the audio track fills it with silence). ``release(upto)``: the chunks for every position
before ``upto``, in order. ``drop()``: forget what is held (barge-in).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streamer.types import VoiceChunk


class VoiceLine:
    def __init__(self) -> None:
        self._held: deque[VoiceChunk] = deque()
        self._added = 0  # one past the last position added
        self._released = 0  # one past the last position handed out

    @property
    def held_samples(self) -> int:
        return sum(len(chunk.audio) for chunk in self._held)

    def add(self, start: int, samples: np.ndarray) -> None:
        first = max(start, self._added, self._released)
        end = start + len(samples)
        if first >= end:
            return
        self._held.append(VoiceChunk(first, samples[first - start :]))
        self._added = end

    def release(self, upto: int) -> list[VoiceChunk]:
        out: list[VoiceChunk] = []
        while self._held and self._held[0].start < upto:
            chunk = self._held.popleft()
            cut = upto - chunk.start
            if cut < len(chunk.audio):
                self._held.appendleft(VoiceChunk(upto, chunk.audio[cut:]))
                chunk = VoiceChunk(chunk.start, chunk.audio[:cut])
            out.append(chunk)
            self._released = chunk.start + len(chunk.audio)
        return out

    def drop(self) -> None:
        if self._held:
            last = self._held[-1]
            self._released = max(self._released, last.start + len(last.audio))
        self._held.clear()
