"""Offline driver: a file source, the pipeline, and sinks; no pacing (as fast as it goes).

The live server drives the very same ``Pipeline`` from WebRTC audio with a real-time pacer;
only the source, the sinks and the clock differ.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from streamer.pipeline import Pipeline
from streamer.types import AudioChunk


class Sink(Protocol):
    def write(self, frame: Any) -> None: ...


def run_offline(
    pipeline: Pipeline[Any],
    source: Iterable[AudioChunk],
    sinks: Sequence[Sink],
    total_frames: int | None = None,
    progress: bool | None = None,
) -> int:
    """Run ``source`` through ``pipeline`` into every sink; returns the number of frames.

    Sinks with ``close``/``abort`` are closed on success and aborted (no partial output left
    behind) on any error. A progress bar is shown on a TTY unless ``progress`` says otherwise.
    """
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=total_frames, unit="frame", desc="render", file=sys.stderr)
    count = 0
    try:
        for frame in pipeline.run(source):
            for sink in sinks:
                sink.write(frame)
            count += 1
            if bar is not None:
                bar.update(1)
    except BaseException:
        for sink in sinks:
            abort = getattr(sink, "abort", None)
            if abort is not None:
                abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is not None:
            close()
    return count
