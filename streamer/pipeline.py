"""One pipeline, run the same way offline and live.

``Pipeline`` chains stages: every output of stage k is pushed into stage k + 1 at once, so the
pipeline itself holds nothing; all state lives in the stages. Offline render and the live
server differ only in the source that feeds ``push``, the sink that takes the outputs and the
clock that paces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from streamer.stages.contract import Stage
from streamer.types import AudioChunk

OutT = TypeVar("OutT")


class Pipeline(Generic[OutT]):
    """Audio chunks in, frames (``MotionFrame`` or ``VideoFrame``) out."""

    def __init__(self, stages: Sequence[Stage[Any, Any]]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self._stages = tuple(stages)

    @property
    def stages(self) -> tuple[Stage[Any, Any], ...]:
        return self._stages

    @property
    def delay_frames(self) -> int:
        """Frames the whole chain holds back: the sum of every stage's lookahead."""
        return sum(stage.delay_frames for stage in self._stages)

    def push(self, chunk: AudioChunk) -> list[OutT]:
        return self._run_from(0, [chunk])

    def flush(self) -> list[OutT]:
        """End of stream: flush each stage in order, feeding its tail to the next."""
        pending: list[Any] = []
        for stage in self._stages:
            carried = [out for item in pending for out in stage.push(item)]
            carried.extend(stage.flush())
            pending = carried
        return pending

    def reset(self) -> None:
        for stage in self._stages:
            stage.reset()

    def run(self, chunks: Iterable[AudioChunk]) -> Iterator[OutT]:
        """Push every chunk, then flush; yields outputs as soon as they are final."""
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.flush()

    def _run_from(self, first: int, items: list[Any]) -> list[Any]:
        for stage in self._stages[first:]:
            produced: list[Any] = []
            for item in items:
                produced.extend(stage.push(item))
            items = produced
            if not items:
                break
        return items
