"""``msadtalker motion``: the trace (exact columns, sane values), the plot, seeds, lookahead,
TOML config with CLI overrides, and bad input / bad flags -> one clear line and exit 2."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msadtalker.audio import load_audio
from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.cli import main
from streamer.io.trace import COLUMNS, read_trace

ASSETS = Path(__file__).resolve().parents[1] / "msadtalker" / "assets"
HEADER = (
    "frame,time_s,pitch_deg,yaw_deg,roll_deg,upper_lip,lower_lip,mouth_open,silent,silence_weight"
)


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of the bundled sample speech at 44.1 kHz stereo (so decoding is exercised too)."""
    import soxr

    x = load_audio(ASSETS / "sample_speech_en.wav", warn=False)[: 5 * SAMPLE_RATE + 123]
    y = soxr.resample(x, SAMPLE_RATE, 44100, quality="HQ")
    path = tmp_path_factory.mktemp("motion") / "speech.wav"
    sf.write(path, np.stack([y, 0.5 * y], axis=1), 44100, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def default_run(wav: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("default")
    trace, plot = out / "t.csv", out / "t.png"
    assert main(["motion", "--audio", str(wav), "--trace", str(trace), "--plot", str(plot)]) == 0
    return trace, plot


def _motion(wav: Path, out: Path, *flags: str) -> np.ndarray:
    trace = out / f"trace{len(list(out.iterdir()))}.csv"
    assert main(["motion", "--audio", str(wav), "--trace", str(trace), *flags]) == 0
    t = read_trace(trace)
    return np.stack([t["pitch_deg"], t["yaw_deg"], t["roll_deg"]], axis=1)


def test_trace_columns_are_exactly_the_issue_s(default_run: tuple[Path, Path]) -> None:
    trace, _ = default_run
    lines = trace.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    assert ",".join(COLUMNS) == HEADER


def test_trace_values(default_run: tuple[Path, Path], wav: Path) -> None:
    trace, _ = default_run
    t = read_trace(trace)
    frames = round(5 * SAMPLE_RATE + 123 * SAMPLE_RATE / SAMPLE_RATE) // SAMPLES_PER_FRAME
    assert len(t) == frames
    np.testing.assert_array_equal(t["frame"], np.arange(frames))
    np.testing.assert_allclose(t["time_s"], np.arange(frames) / FPS, atol=5e-4)
    assert set(np.unique(t["silent"])) <= {False, True}
    w = t["silence_weight"]
    assert w.min() >= 0 and w.max() <= 1 and w.max() == 1.0 and w.min() == 0.0
    assert np.all(np.isin(np.round(w * 5, 6), np.arange(6)))  # the W = 5 average of 0/1
    mouth = t["mouth_open"]
    assert mouth.min() >= 0 and mouth.max() <= 1 and mouth.max() > 0.5
    for name, amplitude in (("pitch_deg", 10), ("yaw_deg", 6), ("roll_deg", 8)):
        assert np.abs(t[name]).max() <= amplitude
        assert np.abs(t[name]).max() > 0.3 * amplitude
    with trace.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert {row[8] for row in rows} <= {"0", "1"}


def test_plot_is_a_readable_png(default_run: tuple[Path, Path]) -> None:
    import matplotlib.image as mpimg

    _, plot = default_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(plot)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 700
    # Not blank: plenty of non-white pixels (curves, shading, labels).
    ink = (image[..., :3] < 0.9).any(axis=2).mean()
    assert ink > 0.03


def test_seed_is_reproducible_and_changes_the_pose(wav: Path, tmp_path: Path) -> None:
    a = _motion(wav, tmp_path, "--seed", "4")
    b = _motion(wav, tmp_path, "--seed", "4")
    c = _motion(wav, tmp_path, "--seed", "5")
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1.0


def test_lookahead_flag_is_used(wav: Path, tmp_path: Path) -> None:
    trace0, trace80 = tmp_path / "l0.csv", tmp_path / "l80.csv"
    assert main(["motion", "--audio", str(wav), "--trace", str(trace0), "--lookahead-ms", "0"]) == 0
    assert main(["motion", "--audio", str(wav), "--trace", str(trace80)]) == 0
    w0, w80 = read_trace(trace0)["silence_weight"], read_trace(trace80)["silence_weight"]
    assert len(w0) == len(w80) and not np.array_equal(w0, w80)


def test_toml_config_and_cli_override(wav: Path, tmp_path: Path) -> None:
    config = tmp_path / "motion.toml"
    config.write_text(
        '[pipeline]\nseed = 9\n\n[pose]\namplitude_deg = [4.0, 3.0, 2.0]\nnoise = "iid"\n',
        encoding="utf-8",
    )
    from_file = _motion(wav, tmp_path, "--config", str(config))
    assert np.all(np.abs(from_file).max(axis=0) <= [4.0, 3.0, 2.0])
    assert np.abs(from_file).max() > 1.0
    overridden = _motion(wav, tmp_path, "--config", str(config), "--seed", "2")
    assert np.abs(overridden - from_file).max() > 0.1  # --seed beats the file's seed
    assert np.all(np.abs(overridden).max(axis=0) <= [4.0, 3.0, 2.0])  # the rest is kept
    config.write_text(
        '[pipeline]\nseed = 2\n\n[pose]\namplitude_deg = [4.0, 3.0, 2.0]\nnoise = "iid"\n',
        encoding="utf-8",
    )
    np.testing.assert_array_equal(_motion(wav, tmp_path, "--config", str(config)), overridden)


# ---------------------------------------------------------------------------- bad input


def _one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str], expect: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert expect in errors[0], errors[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    y = x.copy()
    y[500] = np.nan
    sf.write(d / "nan.wav", y, SAMPLE_RATE, subtype="FLOAT")
    y = x.copy()
    y[-3] = -np.inf
    sf.write(d / "inf.wav", y, SAMPLE_RATE, subtype="FLOAT")
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "zero.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    (d / "notes.mp3").write_text("not audio at all\n" * 20)
    sf.write(d / "blip.wav", x[:400], SAMPLE_RATE)
    sf.write(d / "ok.wav", x, SAMPLE_RATE)
    (d / "bad.toml").write_text("[pose\n")
    (d / "unknown.toml").write_text("[pose]\nwobble = 1\n")
    (d / "negseed.toml").write_text("[pipeline]\nseed = -1\n")
    (d / "neglook.toml").write_text("[pipeline]\nlookahead_ms = -40\n")
    (d / "freq.toml").write_text("[pose]\nfreq_min_hz = 2.0\nfreq_max_hz = 1.0\n")
    (d / "noise.toml").write_text('[pose]\nnoise = "pink"\n')
    (d / "damp.toml").write_text("[silence]\nmouth_damping_s = -0.1\n")
    return d


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("nan.wav", "NaN or infinite"),
        ("inf.wav", "NaN or infinite"),
        ("empty.wav", "empty file"),
        ("zero.wav", "no audio samples"),
        ("notes.mp3", "not a readable audio file"),
        ("blip.wav", "too short"),
    ],
)
def test_bad_audio_is_one_line_and_leaves_no_trace(
    capsys: pytest.CaptureFixture[str], bad_files: Path, tmp_path: Path, name: str, expect: str
) -> None:
    trace = tmp_path / "t.csv"
    _one_error_line(
        capsys, ["motion", "--audio", str(bad_files / name), "--trace", str(trace)], expect
    )
    assert not trace.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--seed", "-1"], "--seed"),
        (["--seed", "x"], "--seed"),
        (["--lookahead-ms", "1.5"], "--lookahead-ms"),
        (["--lookahead-ms", "-80"], "--lookahead-ms"),
        (["--plot", "/no/such/dir/p.png"], "--plot"),
        (["--config", "missing.toml"], "--config"),
        (["--config", "{bad}/bad.toml"], "not valid TOML"),
        (["--config", "{bad}/unknown.toml"], "pose.wobble"),
        (["--config", "{bad}/negseed.toml"], "seed"),
        (["--config", "{bad}/neglook.toml"], "lookahead_ms"),
        (["--config", "{bad}/freq.toml"], "frequencies"),
        (["--config", "{bad}/noise.toml"], "pose.noise"),
        (["--config", "{bad}/damp.toml"], "mouth_damping_s"),
    ],
)
def test_bad_flags_and_config_are_one_line(
    capsys: pytest.CaptureFixture[str],
    bad_files: Path,
    tmp_path: Path,
    flags: list[str],
    expect: str,
) -> None:
    flags = [f.replace("{bad}", str(bad_files)) for f in flags]
    argv = ["motion", "--audio", str(bad_files / "ok.wav"), "--trace", str(tmp_path / "t.csv")]
    _one_error_line(capsys, [*argv, *flags], expect)


def test_missing_audio_and_unwritable_trace(
    capsys: pytest.CaptureFixture[str], bad_files: Path, tmp_path: Path
) -> None:
    _one_error_line(
        capsys,
        ["motion", "--audio", str(tmp_path / "nope.wav"), "--trace", str(tmp_path / "t.csv")],
        "--audio",
    )
    _one_error_line(
        capsys,
        ["motion", "--audio", str(bad_files / "ok.wav"), "--trace", "/no/such/dir/t.csv"],
        "--trace",
    )
    _one_error_line(capsys, ["motion", "--audio", str(bad_files / "ok.wav")], "--trace")


def test_telephone_and_clipped_audio_work_with_warnings(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    t = np.arange(8000) / 8000
    x = np.clip(3.0 * np.sin(2 * np.pi * 300 * t), -1, 1).astype(np.float32)
    path = tmp_path / "phone.wav"
    sf.write(path, x, 8000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="msadtalker"):
        assert main(["motion", "--audio", str(path), "--trace", str(tmp_path / "t.csv")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # reported once each, not again when the file is streamed
    assert "8000 Hz" in warnings[0] and "clipped" in warnings[1]
    assert len(read_trace(tmp_path / "t.csv")) == SAMPLE_RATE // SAMPLES_PER_FRAME
