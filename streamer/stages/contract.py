"""The contract every pipeline stage keeps.

A stage is a synchronous object with explicit state. ``push`` takes one input and returns the
outputs that became final because of it (zero, one or several); ``flush`` ends the stream and
returns whatever was held back; ``reset`` drops everything buffered and returns the stage to
rest (used for barge-in), while the stream position keeps counting so that frame indices and
timestamps stay monotonic. ``delay_frames`` is the lookahead the stage adds: output frame ``i``
is emitted only after input frame ``i + delay_frames`` has been pushed (or at ``flush``).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

InT = TypeVar("InT", contravariant=True)
OutT = TypeVar("OutT")


class Stage(Protocol[InT, OutT]):
    @property
    def delay_frames(self) -> int: ...

    def push(self, item: InT) -> list[OutT]: ...

    def flush(self) -> list[OutT]: ...

    def reset(self) -> None: ...
