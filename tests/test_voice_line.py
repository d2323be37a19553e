"""VoiceLine: the voice held back by the lookahead, released in order, never twice."""

from __future__ import annotations

import numpy as np

from streamer.voice_line import VoiceLine


def _ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)  # sample value = its position


def _positions(chunks: list) -> list[float]:  # type: ignore[type-arg]
    return [float(v) for c in chunks for v in c.audio]


def test_release_splits_at_the_limit_and_keeps_the_rest() -> None:
    line = VoiceLine()
    line.add(0, _ramp(0, 320))
    line.add(320, _ramp(320, 320))
    first = line.release(400)
    assert [(c.start, len(c.audio)) for c in first] == [(0, 320), (320, 80)]
    assert _positions(first) == list(range(400))
    assert line.held_samples == 240
    rest = line.release(10_000)
    assert [(c.start, len(c.audio)) for c in rest] == [(400, 240)]
    assert line.release(10_000) == []


def test_what_was_added_or_released_is_not_added_again() -> None:
    line = VoiceLine()
    line.add(0, _ramp(0, 320))
    line.add(200, _ramp(200, 320))  # the buffer shifted back over 120 samples
    chunks = line.release(1000)
    assert _positions(chunks) == list(range(520))  # each position once, in order
    line.add(100, _ramp(100, 100))  # already handed out
    assert line.release(1000) == []


def test_a_gap_stays_a_gap_and_drop_forgets_what_is_held() -> None:
    line = VoiceLine()
    line.add(0, _ramp(0, 320))
    line.add(960, _ramp(960, 320))  # 320..960 never came
    chunks = line.release(1000)
    assert [(c.start, len(c.audio)) for c in chunks] == [(0, 320), (960, 40)]
    line.drop()  # barge-in
    assert line.held_samples == 0
    line.add(1100, _ramp(1100, 320))  # what was dropped is not taken again
    assert [c.start for c in line.release(5000)] == [1280]
