"""The latency bench's breakdown: the session offset is found from the returned audio, and the
parts of an onset's latency add up to it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from streamer.bench.breakdown import frame_overhead_ms, onset_breakdown, session_offset
from streamer.bench.signals import onset_speech


@pytest.mark.parametrize("offset", [-3000, 0, 517, 6400 + 123])
def test_the_session_offset_is_found_from_the_returned_audio(offset: int) -> None:
    speech = onset_speech(bursts=3, seed=2)
    clip = speech.samples
    # The session's audio line: clip sample s at position s + offset, 48 kHz, 20 ms packets.
    line = np.zeros(len(clip) + abs(offset), dtype=np.float32)
    if offset >= 0:
        line[offset : offset + len(clip)] = clip
    else:
        line[: len(clip) + offset] = clip[-offset:]
    up = resample_poly(line, 3, 1).astype(np.float32)
    up += 0.01 * np.random.default_rng(0).standard_normal(len(up)).astype(np.float32)
    packets = [(k, up[k : k + 960]) for k in range(0, len(up) - 960, 960)]
    assert session_offset(packets, clip, speech.onsets) == [offset] * len(speech.onsets)
    assert session_offset([], clip, speech.onsets) == [None] * len(speech.onsets)


def test_an_offset_that_changes_during_the_session_is_followed() -> None:
    """The ingest re-anchored 230 ms later between the second and the third onset."""
    speech = onset_speech(bursts=3, seed=4)
    clip = speech.samples
    cut, jump = (speech.ends[1] + speech.onsets[2]) // 2, 3680
    line = np.concatenate([np.zeros(500, np.float32), clip[:cut], np.zeros(jump, np.float32)])
    line = np.concatenate([line, clip[cut:]])
    up = resample_poly(line, 3, 1).astype(np.float32)
    packets = [(k, up[k : k + 960]) for k in range(0, len(up) - 960, 960)]
    assert session_offset(packets, clip, speech.onsets) == [500, 500, 500 + jump]


def test_the_parts_add_up_to_the_latency() -> None:
    started = 100.0

    def capture(sample: int) -> float:
        return started + sample / 16000

    onset, offset, delay = 24_321, 517, 3
    shown_frame = (onset + offset) // 640 + 1  # the mouth shows one frame after the onset's
    arrival = capture(onset) + 0.2
    parts = onset_breakdown(onset, shown_frame, arrival, offset, capture, delay)
    assert parts.total_ms == pytest.approx(200.0)
    assert 0 < parts.fill_ms <= 40 and parts.ramp_ms == 40 and parts.designed_ms == 120
    assert parts.overhead_ms == pytest.approx(
        frame_overhead_ms(shown_frame, arrival, offset, capture, delay)
    )
