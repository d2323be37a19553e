"""msadtalker.audio: decoding (formats, bad input), the golden log-mel, MelStream exactness."""

from __future__ import annotations

import logging
import wave
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import soxr

from msadtalker.audio import (
    MelStream,
    iter_audio_file,
    load_audio,
    log_mel,
    mel_filterbank,
    mel_frame_count,
    mel_windows,
    scan_audio,
    window_start,
)
from msadtalker.audio.mel import cut_waveform
from msadtalker.errors import AudioInputError
from msadtalker.timing import SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.io.audio_source import AudioFileSource

# ---------------------------------------------------------------------------- helpers


def tone(
    seconds: float, rate: int = SAMPLE_RATE, channels: int = 1, amp: float = 0.3
) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = amp * np.sin(2 * np.pi * 440.0 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) / 1.3
    return np.stack([mono] * channels).astype(np.float32)


def encode(path: Path, planar: np.ndarray, rate: int, codec: str, fmt: str | None = None) -> Path:
    """Write ``planar`` (channels, n) float32 with PyAV's encoders."""
    layout = "stereo" if planar.shape[0] == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planar), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise-excited formant-ish signal with pauses: exercises every mel band."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    voiced = sum(np.sin(2 * np.pi * k * 130 * t) / k for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 2.1 * t), 0, None) ** 2
    return (0.2 * envelope * voiced + 0.01 * rng.standard_normal(n)).astype(np.float32)


# ---------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "rate"),
    [
        ("stereo44k.wav", "pcm_s16le", None, 44100),
        ("a.mp3", "libmp3lame", None, 44100),
        ("a.m4a", "aac", "ipod", 44100),
        ("a.ogg", "libopus", "ogg", 48000),
        ("a.opus", "libopus", "opus", 48000),
        ("a.flac", "flac", None, 22050),
    ],
)
def test_common_formats_decode_to_16k_mono(
    tmp_path: Path, name: str, codec: str, fmt: str | None, rate: int
) -> None:
    path = encode(tmp_path / name, tone(1.5, rate, channels=2), rate, codec, fmt)
    audio = load_audio(path)
    info = scan_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert info.sample_rate == rate and info.channels == 2
    assert abs(len(audio) - 1.5 * SAMPLE_RATE) <= 0.05 * SAMPLE_RATE  # codec priming/padding
    assert len(audio) == info.samples
    expected = tone(1.5)[0]
    mid = slice(4000, 20000)
    best = max(
        abs(np.corrcoef(audio[mid], np.roll(expected, lag)[mid])[0, 1]) for lag in range(-400, 401)
    )
    assert best > 0.999


def test_int16_wav_at_16k_is_exactly_x_over_32768(tmp_path: Path) -> None:
    pcm = (np.random.default_rng(0).integers(-32768, 32767, 5000)).astype(np.int16)
    path = tmp_path / "pcm.wav"
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    assert np.array_equal(load_audio(path), pcm.astype(np.float32) / 32768)


def test_stereo_becomes_channel_mean(tmp_path: Path) -> None:
    left = tone(0.5)[0]
    right = 0.5 * tone(0.5, amp=0.2)[0]
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)


def test_resampling_is_soxr_hq_with_librosa_length(tmp_path: Path) -> None:
    x = speechlike(1.3)
    rate = 44100
    src = soxr.resample(x, SAMPLE_RATE, rate, quality="HQ").astype(np.float32)
    path = tmp_path / "f.wav"
    sf.write(path, src, rate, subtype="FLOAT")
    expected = soxr.resample(src, rate, SAMPLE_RATE, quality="HQ")
    n = -(-len(src) * SAMPLE_RATE // rate)  # ceil, as librosa.resample fixes it
    expected = np.pad(expected, (0, max(0, n - len(expected))))[:n]
    got = load_audio(path)
    assert len(got) == n
    np.testing.assert_array_equal(got, expected)


def test_iter_audio_file_streams_fixed_chunks(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.tile(speechlike(1.0), 20), 22050, subtype="PCM_16")  # 20 s at 22.05k
    info = scan_audio(path)
    chunks = list(iter_audio_file(path, 3000))
    assert all(len(c) == 3000 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 3000
    assert sum(len(c) for c in chunks) == info.samples
    whole = load_audio(path)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="nope.wav: file not found"):
        scan_audio(tmp_path / "nope.wav")


def test_directory_is_not_audio(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match="not a regular file"):
        load_audio(tmp_path)


def test_text_file_is_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not samples\n" * 10)
    with pytest.raises(AudioInputError, match=r"notes\.wav: not a readable audio file"):
        scan_audio(path)


def test_image_has_no_audio_stream(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(AudioInputError, match="no audio stream"):
        scan_audio(path)


def test_truncated_wav(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0)[0], SAMPLE_RATE, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="cut.wav: truncated WAV"):
        scan_audio(path)


def test_truncated_flac_is_corrupt(tmp_path: Path) -> None:
    path = encode(tmp_path / "half.flac", tone(2.0, 44100, 2), 44100, "flac")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match=r"half\.flac: (corrupt|truncated)"):
        load_audio(path)


def test_truncated_mp3_is_detected(tmp_path: Path) -> None:
    path = encode(tmp_path / "half.mp3", tone(3.0, 44100, 2), 44100, "libmp3lame")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match=r"half\.mp3: (corrupt|truncated)"):
        scan_audio(path)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "stub.m4a"
    full = encode(tmp_path / "full.m4a", tone(1.0, 44100, 2), 44100, "aac", "ipod")
    path.write_bytes(full.read_bytes()[:200])
    with pytest.raises(AudioInputError, match="stub.m4a"):
        scan_audio(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioInputError, match=r"empty\.wav: empty file \(0 bytes\)"):
        scan_audio(path)


def test_zero_length_wav(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioInputError, match=r"zero\.wav: contains no audio samples"):
        scan_audio(path)


def test_nan_samples(tmp_path: Path) -> None:
    x = tone(0.5)[0]
    x[3000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="nan.wav: contains NaN or infinite"):
        scan_audio(path)
    with pytest.raises(AudioInputError, match="NaN"):
        load_audio(path)


def test_inf_samples(tmp_path: Path) -> None:
    x = tone(0.5)[0]
    x[-5] = np.inf
    path = tmp_path / "inf.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="infinite"):
        scan_audio(path)


def test_shorter_than_one_video_frame(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, tone(0.03)[0], SAMPLE_RATE, subtype="PCM_16")  # 30 ms < 40 ms
    with pytest.raises(AudioInputError, match=r"blip\.wav: too short: 30 ms"):
        scan_audio(path)
    sf.write(path, tone(0.04)[0], SAMPLE_RATE, subtype="PCM_16")  # exactly one frame: fine
    assert scan_audio(path).frame_count == 1


def test_telephone_audio_works_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "phone.wav"
    sf.write(path, tone(1.0, rate=8000)[0], 8000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="msadtalker.audio"):
        audio = load_audio(path)
    assert len(audio) == SAMPLE_RATE
    assert "8000 Hz" in caplog.text and "band-limited" in caplog.text


def test_clipping_works_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = np.clip(6.0 * tone(1.0)[0], -1.0, 1.0)
    path = tmp_path / "loud.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="msadtalker.audio"):
        info = scan_audio(path)
    assert 0.1 < info.clipped_fraction < 0.9
    assert "clipped" in caplog.text and "%" in caplog.text


def test_clean_audio_logs_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ok.wav"
    sf.write(path, tone(1.0)[0], SAMPLE_RATE, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="msadtalker.audio"):
        load_audio(path)
    assert caplog.text == ""


# ---------------------------------------------------------------------------- golden log-mel


def test_log_mel_matches_official(golden: dict[str, np.ndarray]) -> None:
    mel = log_mel(golden["input_wav_loaded"])
    assert mel.dtype == np.float64 and mel.shape == golden["audio_mel_f64"].shape == (161, 80)
    assert np.abs(mel - golden["audio_mel_f64"]).max() < 1e-6


def test_waveform_cut_matches_official(golden: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(cut_waveform(golden["input_wav_loaded"]), golden["audio_wav_cut"])


def test_windows_match_official(golden: dict[str, np.ndarray]) -> None:
    windows = mel_windows(log_mel(golden["input_wav_loaded"]), 50)
    expected = golden["expnet_in_mels"][0, :, 0]
    assert windows.shape == expected.shape == (50, 80, 16) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows, expected)


def test_official_wav_samples_decode_to_the_official_waveform(
    golden: dict[str, np.ndarray], tmp_path: Path
) -> None:
    # The official harness wrote these int16 samples as a 16 kHz mono WAV and librosa loaded it.
    path = tmp_path / "golden_speech.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(golden["input_wav_int16"].astype("<i2").tobytes())
    np.testing.assert_array_equal(load_audio(path), golden["input_wav_loaded"])


def test_window_start_truncates_toward_zero() -> None:
    assert [window_start(i) for i in range(7)] == [-6, -3, 0, 3, 6, 9, 12]
    assert all(window_start(i) == int(80 * (i - 2) / 25) for i in range(0, 2000))


def test_filterbank_shape_and_slaney_norm() -> None:
    fb = mel_filterbank()
    assert fb.shape == (80, 401) and fb.dtype == np.float32
    assert (fb >= 0).all() and (fb.sum(axis=1) > 0).all()
    # Slaney area norm: each triangle integrates (in Hz) to about 1.
    assert np.allclose(fb.sum(axis=1) * (SAMPLE_RATE / 800), 1.0, rtol=0.1)


# ---------------------------------------------------------------------------- MelStream


def run_stream(x: np.ndarray, sizes: Iterable[int]) -> np.ndarray:
    stream = MelStream()
    rows = []
    position = 0
    for size in sizes:
        rows.append(stream.push(x[position : position + size]))
        position += size
        if position >= len(x):
            break
    rows.append(stream.push(x[position:]))
    rows.append(stream.flush())
    return np.concatenate(rows)


@pytest.mark.parametrize("chunk_ms", [10, 20, 37, 1000])
def test_mel_stream_equals_batch(golden: dict[str, np.ndarray], chunk_ms: int) -> None:
    x = golden["input_wav_loaded"]
    size = chunk_ms * SAMPLE_RATE // 1000
    got = run_stream(x, [size] * (len(x) // size + 1))
    np.testing.assert_array_equal(got, log_mel(x))


@pytest.mark.parametrize("seed", range(4))
def test_mel_stream_random_chunks_and_lengths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = speechlike(rng.uniform(0.01, 2.5), seed)
    sizes = rng.integers(1, 2500, 200)
    got = run_stream(x, sizes)
    assert len(got) == mel_frame_count(len(x) // SAMPLES_PER_FRAME)
    np.testing.assert_array_equal(got, log_mel(x))


def test_mel_stream_rows_are_final_only_with_whole_blocks() -> None:
    stream = MelStream()
    x = speechlike(0.5)
    assert len(stream.push(x[:1279])) == 2  # one block: rows 0, 1 (200 j + 400 <= 640)
    assert len(stream.push(x[1279:1280])) == 3  # the second block completes rows 2..4
    assert stream.next_row == 5


def test_mel_stream_flush_resets() -> None:
    stream = MelStream()
    x = speechlike(0.3)
    first = np.concatenate([stream.push(x), stream.flush()])
    second = np.concatenate([stream.push(x), stream.flush()])
    np.testing.assert_array_equal(first, second)
    assert stream.position == 0


def test_mel_stream_silence_from_equals_zeroed_input() -> None:
    x = speechlike(1.0, seed=3)
    cut = 7040
    stream = MelStream(history_samples=4000)
    early = stream.push(x[:8000])
    first = stream.silence_from(cut)
    late = np.concatenate([stream.push(x[8000:]), stream.flush()])
    zeroed = x.copy()
    zeroed[cut:8000] = 0.0
    reference = log_mel(zeroed)
    np.testing.assert_array_equal(np.concatenate([early[:first], late]), reference)


# ---------------------------------------------------------------------------- file source


def test_audio_file_source_chunks_are_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    sf.write(path, speechlike(2.03), 48000, subtype="PCM_16")
    source = AudioFileSource(path, chunk_ms=20)
    chunks = list(source)
    assert all(len(c.samples) == 320 for c in chunks[:-1])
    assert [c.start for c in chunks] == [
        sum(len(c.samples) for c in chunks[:k]) for k in range(len(chunks))
    ]
    assert chunks[-1].end == source.samples
    assert source.frame_count == source.samples // SAMPLES_PER_FRAME
    assert list(source)[3].start == chunks[3].start  # iterating again starts over


def test_audio_file_source_validates_up_front(tmp_path: Path) -> None:
    x = tone(1.0)[0]
    x[-10] = np.nan  # only at the very end of the file
    path = tmp_path / "late_nan.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="late_nan.wav"):
        AudioFileSource(path)
