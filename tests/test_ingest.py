"""Live audio ingest: resampling, mic frame conversion, gap filling, the jitter buffer."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from streamer.ingest import JitterBuffer, MicFrameConverter, StreamResampler, frame_to_mono


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(48000, 16000), (44100, 16000), (8000, 16000), (16000, 48000)]
)
def test_resampler_is_accurate_and_block_size_invariant(rate_in: int, rate_out: int) -> None:
    t = np.arange(rate_in) / rate_in
    x = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    resampler = StreamResampler(rate_in, rate_out)
    whole = resampler.process(x)
    resampler.reset()
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 1500))
        parts.append(resampler.process(x[i : i + n]))
        i += n
    pieces = np.concatenate(parts)
    np.testing.assert_array_equal(whole, pieces)
    assert len(whole) == rate_out  # one second in, one second out
    expected = 0.8 * np.sin(2 * np.pi * 440 * (np.arange(rate_out) / rate_out - resampler.delay_s))
    assert np.abs(whole[100:-100] - expected[100:-100]).max() < 1e-3


def test_resampler_removes_what_the_output_rate_cannot_hold() -> None:
    rate = 48000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # above 8 kHz: must vanish
    out = StreamResampler(rate, 16000).process(tone)
    assert np.sqrt(np.mean(out[200:] ** 2)) < 0.01


def _mic_frame(samples: np.ndarray, pts: int, channels: int = 2, fmt: str = "s16") -> av.AudioFrame:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    if fmt == "s16":
        data = np.repeat(pcm, channels).reshape(1, -1)  # packed: interleaved
    else:
        data = np.tile(pcm.astype(np.float32) / 32767, (channels, 1))  # planar float
    layout = "stereo" if channels == 2 else "mono"
    frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


@pytest.mark.parametrize(("channels", "fmt"), [(2, "s16"), (1, "s16"), (2, "fltp")])
def test_frame_to_mono_handles_layouts(channels: int, fmt: str) -> None:
    x = np.linspace(-0.5, 0.5, 960).astype(np.float32)
    mono = frame_to_mono(_mic_frame(x, 0, channels, fmt))
    assert mono.shape == (960,)
    assert np.abs(mono - x).max() < 1e-3


def test_converter_fills_lost_packets_with_silence_and_keeps_time() -> None:
    rng = np.random.default_rng(0)
    converter = MicFrameConverter()
    out = []
    for j in range(50):
        if j in (10, 11, 30):  # three packets lost in transit
            continue
        samples, restart = converter.convert(_mic_frame(0.3 * rng.standard_normal(960), j * 960))
        assert restart == (j == 0)
        out.append(samples)
    stream = np.concatenate(out)
    # 50 packets of 20 ms = 1 s = 16000 samples at 16 kHz (minus the filter's tail).
    assert abs(len(stream) - 16000) <= 8
    assert converter.stats.gaps == 2 and converter.stats.gap_samples == 3 * 960
    # The lost span (packets 10-11 -> 16 kHz samples 3200..3840) is near-silent.
    assert np.abs(stream[3230:3810]).max() < 0.05


def test_converter_drops_duplicates_and_restarts_on_clock_jumps() -> None:
    converter = MicFrameConverter()
    tone = 0.2 * np.ones(960, dtype=np.float32)
    converter.convert(_mic_frame(tone, 0))
    converter.convert(_mic_frame(tone, 960))
    samples, _ = converter.convert(_mic_frame(tone, 960))  # duplicate
    assert len(samples) == 0 and converter.stats.dropped_backwards == 1
    samples, restart = converter.convert(_mic_frame(tone, 960 * 500))  # 10 s jump
    assert restart and converter.stats.discontinuities == 1 and len(samples) > 0


def _frames(buf: JitterBuffer, first: int, count: int) -> np.ndarray:
    return np.concatenate([buf.read(k) for k in range(first, first + count)])


def test_jitter_buffer_in_time_delivery_is_exact() -> None:
    audio = np.arange(16000, dtype=np.float32) / 16000
    buf = JitterBuffer()
    for j in range(50):  # 20 ms pieces, each arriving at its end time
        buf.write(audio[j * 320 : (j + 1) * 320], now_s=(j + 1) * 0.02)
    np.testing.assert_array_equal(_frames(buf, 0, 25), audio)
    assert buf.stats.samples_missing == 0 and buf.stats.samples_late == 0


def _simulate(buf: JitterBuffer, arrivals: dict[int, float], steps: int) -> np.ndarray:
    """Real-time driver: at every 20 ms step the pieces that arrive are written, then every
    frame due (frame k at (k + 1) * 40 ms + 20 ms jitter) is read. ``arrivals``: piece -> value."""
    out, k = [], 0
    for step in range(1, steps + 1):
        now = step * 0.02
        if step - 1 in arrivals:
            buf.write(np.full(320, arrivals[step - 1], dtype=np.float32), now_s=now)
        while (k + 1) * 0.04 + 0.02 <= now + 1e-9:
            out.append(buf.read(k))
            k += 1
    return np.concatenate(out)


def test_jitter_buffer_stall_gives_zeros_then_resumes_on_time() -> None:
    buf = JitterBuffer()
    # 200 ms of audio, the mic stalls for 800 ms (no packets, no pts advance), then resumes.
    arrivals = {j: 0.5 for j in range(10)} | {j: 0.25 for j in range(50, 100)}
    stream = _simulate(buf, arrivals, steps=110)
    np.testing.assert_array_equal(stream[:3200], np.full(3200, 0.5, dtype=np.float32))
    np.testing.assert_array_equal(stream[3200:16000], np.zeros(12800, dtype=np.float32))
    # The resumed audio is placed at its arrival time (1.0 s), not where the stream left off.
    np.testing.assert_array_equal(stream[16000:32000], np.full(16000, 0.25, dtype=np.float32))
    assert buf.stats.reanchors == 1 and buf.stats.samples_late == 0
    assert buf.stats.samples_missing == 12800 + (len(stream) - 32000)


def test_jitter_buffer_discards_late_audio_and_stays_bounded() -> None:
    buf = JitterBuffer(capacity_s=0.5)
    piece = np.ones(320, dtype=np.float32)
    buf.write(piece, now_s=0.02)
    buf.read(0)
    buf.read(1)  # frames 0-1 (80 ms) made; the next piece belongs to 20-40 ms: late
    buf.write(piece, now_s=0.1)
    assert buf.stats.samples_late == 320
    # A burst of 5 s of audio at once cannot grow the buffer past its capacity.
    for _ in range(250):
        buf.write(piece, now_s=0.1)
    assert buf.buffered <= 0.5 * 16000
    assert buf.stats.reanchors >= 1


def test_jitter_buffer_clear_drops_unread_audio() -> None:
    buf = JitterBuffer()
    for j in range(10):
        buf.write(np.ones(320, dtype=np.float32), now_s=(j + 1) * 0.02)
    buf.read(0)
    buf.clear()
    assert not np.any(buf.read(1))


def test_jitter_buffer_sheds_delay_of_a_late_anchor() -> None:
    """The first block arrives 60 ms late, the rest on time: within a second or two the
    stream is moved earlier so that it no longer carries those 60 ms."""
    buf = JitterBuffer()
    piece = np.ones(320, dtype=np.float32)
    k = 0
    for step in range(1, 151):
        now = step * 0.02
        if step == 4:
            buf.write(piece, now_s=now)  # piece 0, 60 ms late
        if step >= 4:
            buf.write(piece, now_s=now)  # pieces 1.. on time from here on
        while (k + 1) * 0.04 + 0.02 <= now + 1e-9:
            buf.read(k)
            k += 1
    assert buf.stats.shifts >= 1 and buf.stats.reanchors == 0
    assert buf.end_position is not None
    lead = buf.end_position - round(150 * 0.02 * 16000)
    assert 0 <= lead <= 0.005 * 16000


def test_jitter_buffer_refuses_audio_from_the_future() -> None:
    """A sender whose timestamps jump further than time did (here: 1 s of gap fill arrives
    with a packet that is on time) is put back on its arrival time."""
    buf = JitterBuffer()
    piece = np.ones(320, dtype=np.float32)
    buf.write(piece, now_s=0.02)
    buf.write(np.concatenate([np.zeros(16000, dtype=np.float32), piece]), now_s=0.04)
    assert buf.stats.reanchors == 1
    assert buf.end_position == round(0.04 * 16000)
