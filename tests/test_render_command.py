"""``msadtalker render`` end to end: the mp4 it writes, its flags, and its errors.

The mp4s are decoded with PyAV and measured (streams, timing, pixels); the frames are run
through the face finder again where a flag promises something about the head. The quality of
the motion itself (pose, mouth, stillness in silence) is checked in ``test_render_quality``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from render_checks import Decoded, decode, landmarks_of

from msadtalker.audio import load_audio
from msadtalker.avatar import default_avatar_path
from msadtalker.avatar import topology as tp
from msadtalker.timing import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from streamer.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "msadtalker" / "assets" / "sample_speech_en.wav"
FRAME_S = 1.0 / FPS


@pytest.fixture(scope="module", autouse=True)
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One avatar cache for the module: each photo is prepared once, not once per test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MSADTALKER_CACHE", str(tmp_path_factory.mktemp("avatar-cache")))
        yield


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def short_wav(work: Path) -> Path:
    """The first 2.4 s of the sample speech (60 frames, speech from ~0.25 s)."""
    audio = load_audio(SAMPLE, warn=False)[: int(2.4 * SAMPLE_RATE)]
    path = work / "short.wav"
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def sample(work: Path) -> tuple[Path, Path, Path]:
    """The bundled sample speech rendered with a trace and a plot (crop 256, seed 3)."""
    out, trace, plot = work / "sample.mp4", work / "sample.csv", work / "sample.png"
    args = ["render", "--audio", str(SAMPLE), "--out", str(out), "--trace", str(trace)]
    assert main([*args, "--plot", str(plot), "--seed", "3", "--lookahead-ms", "40"]) == 0
    return out, trace, plot


@pytest.fixture(scope="module")
def sample_video(sample: tuple[Path, Path, Path]) -> Decoded:
    return decode(sample[0])


def _grace_hopper() -> Path:
    """A second, unrelated public-domain portrait (US Navy photo shipped with matplotlib)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    try:
        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (OSError, ValueError):
        pytest.skip("matplotlib's sample data is not installed")
    if not path.is_file():
        pytest.skip("matplotlib's sample data is not installed")
    return path


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --- the mp4 -------------------------------------------------------------------------------


def test_mp4_is_h264_25fps_with_aac_audio(sample_video: Decoded) -> None:
    v = sample_video
    assert v.video_codec == "h264" and v.pix_fmt == "yuv420p"
    assert v.fps == pytest.approx(FPS)
    assert v.audio_codec == "aac" and v.audio_rate == SAMPLE_RATE and v.audio_channels == 1
    assert v.size == (256, 256)


def test_duration_and_frame_count_follow_the_audio(
    sample: tuple[Path, Path, Path], sample_video: Decoded
) -> None:
    audio_s = sf.info(SAMPLE).frames / sf.info(SAMPLE).samplerate
    frames = len(sample_video.frames)
    rows = sample[1].read_text().splitlines()[1:]
    assert frames == len(rows) == int(audio_s * SAMPLE_RATE) // SAMPLES_PER_FRAME
    video_s = frames * FRAME_S
    assert abs(video_s - audio_s) <= FRAME_S
    decoded_audio_s = len(sample_video.audio) / SAMPLE_RATE
    # AAC works in 1024-sample packets: the last one may carry up to 64 ms of padding.
    assert abs(decoded_audio_s - video_s) <= FRAME_S + 1024 / SAMPLE_RATE


def test_audio_and_video_are_in_sync(sample_video: Decoded) -> None:
    v = sample_video
    # Frame k is shown at k / 25 s, from 0, with no gaps or duplicates.
    np.testing.assert_allclose(v.pts_s, np.arange(len(v.frames)) * FRAME_S, atol=1e-6)
    assert v.audio_start_s == pytest.approx(0.0, abs=1e-6)
    # The decoded track lines up with the input sample for sample (AAC priming compensated):
    # cross-correlate 2 s of speech over +-50 ms.
    source = load_audio(SAMPLE, warn=False)
    start, length, reach = SAMPLE_RATE, 2 * SAMPLE_RATE, 800
    window = v.audio[start : start + length].astype(np.float64)
    ref = source[start - reach : start + length + reach].astype(np.float64)
    score = np.correlate(ref, window, mode="valid")
    lag = int(np.argmax(score)) - reach
    assert abs(lag) <= 16, f"audio shifted by {lag} samples ({lag / 16:.1f} ms)"
    peak = score.max() / np.sqrt((window**2).sum() * (ref[reach:-reach] ** 2).sum())
    assert peak > 0.95  # the same speech, not just something correlated


def test_trace_equals_msadtalker_motion(sample: tuple[Path, Path, Path], work: Path) -> None:
    motion = work / "motion.csv"
    args = ["motion", "--audio", str(SAMPLE), "--trace", str(motion)]
    assert main([*args, "--seed", "3", "--lookahead-ms", "40"]) == 0
    assert motion.read_bytes() == sample[1].read_bytes()
    # ... and the seed matters (the comparison above is not trivially true).
    other = work / "motion_seed4.csv"
    args = ["motion", "--audio", str(SAMPLE), "--trace", str(other)]
    assert main([*args, "--seed", "4", "--lookahead-ms", "40"]) == 0
    assert other.read_bytes() != sample[1].read_bytes()


def test_plot_is_written(sample: tuple[Path, Path, Path]) -> None:
    with Image.open(sample[2]) as plot:
        assert plot.format == "PNG" and plot.width > 600 and plot.height > 400


# --- flags ---------------------------------------------------------------------------------


def test_still_keeps_the_head_at_its_initial_pose(
    short_wav: Path, work: Path, sample_video: Decoded
) -> None:
    out, trace = work / "still.mp4", work / "still.csv"
    args = ["render", "--audio", str(short_wav), "--out", str(out), "--trace", str(trace)]
    assert main([*args, "--still"]) == 0
    rows = np.genfromtxt(trace, delimiter=",", names=True)
    for column in ("pitch_deg", "yaw_deg", "roll_deg"):
        assert np.all(rows[column] == 0.0), column
    assert rows["mouth_open"].max() > 0.5  # the mouth still speaks
    video = decode(out)
    # Pixels, not landmarks: the landmarker's whole mesh shifts by a few px as the jaw drops,
    # while the picture above the brows does not change at all.
    lm = landmarks_of(video.frames[::3])
    brows = list(tp.RIGHT_EYEBROW_LOWER + tp.LEFT_EYEBROW_LOWER)
    top = int(lm[0, brows, 1].min()) - 6

    def band_motion(frames: np.ndarray) -> float:
        band = frames[:, :top].astype(np.float32)
        return float(np.abs(band - band[0]).mean(axis=(1, 2, 3)).max())

    assert band_motion(video.frames) < 0.5  # H.264 noise only
    assert band_motion(sample_video.frames) > 5.0  # without --still the head moves there
    gaps = [tp.lip_gap(x) for x in lm]
    assert max(gaps) - min(gaps) > 4.0  # px at 256: the lips do move


def test_size_512(short_wav: Path, work: Path) -> None:
    out = work / "big.mp4"
    assert main(["render", "--audio", str(short_wav), "--out", str(out), "--size", "512"]) == 0
    video = decode(out)
    assert video.size == (512, 512) and len(video.frames) == 60


def test_full_mode_has_the_photo_size_and_a_still_body(short_wav: Path, work: Path) -> None:
    photo = _grace_hopper()  # 512 x 600, not square: the size cannot be a crop by accident
    with Image.open(photo) as im:
        size = im.size
    out = work / "full.mp4"
    args = ["render", "--audio", str(short_wav), "--out", str(out), "--avatar", str(photo)]
    assert main([*args, "--mode", "full"]) == 0
    video = decode(out)
    assert video.size == size
    # The body (bottom fifth) stays where it is in the photo while the head moves.
    with Image.open(photo) as im:
        original = np.asarray(im.convert("RGB"), dtype=np.float32)
    body = slice(int(0.8 * size[1]), None)
    frames = video.frames.astype(np.float32)
    assert np.abs(frames[:, body] - original[body]).mean() < 3.0  # H.264 noise only
    head = slice(int(0.15 * size[1]), int(0.55 * size[1]))
    assert np.abs(frames[:, head] - original[head]).mean(axis=(1, 2, 3)).max() > 4.0


def test_bundled_avatar_full_mode(short_wav: Path, work: Path) -> None:
    out = work / "full_default.mp4"
    assert main(["render", "--audio", str(short_wav), "--out", str(out), "--mode", "full"]) == 0
    with Image.open(default_avatar_path()) as im:
        assert decode(out).size == im.size


def test_animated_gif_uses_its_first_frame(short_wav: Path, tmp_path: Path) -> None:
    with Image.open(default_avatar_path()) as im:
        face = im.convert("RGB")
    blank = Image.new("RGB", face.size, (128, 128, 128))
    good, bad = tmp_path / "face_first.gif", tmp_path / "blank_first.gif"
    face.save(good, save_all=True, append_images=[blank], duration=100, loop=0)
    blank.save(bad, save_all=True, append_images=[face], duration=100, loop=0)
    out = tmp_path / "gif.mp4"
    args = ["render", "--audio", str(short_wav), "--out", str(out)]
    assert main([*args, "--avatar", str(good)]) == 0
    assert decode(out).size == (256, 256)
    out.unlink()
    assert main([*args, "--avatar", str(bad)]) == 2 and not out.exists()


# --- errors: one line, exit 2, nothing left behind ----------------------------------------


def _not_an_image(d: Path) -> list[str]:
    path = d / "notes.png"
    path.write_text("this is not a picture\n")
    return ["--avatar", str(path)]


def _truncated(d: Path) -> list[str]:
    path = d / "cut.jpg"
    Image.open(default_avatar_path()).convert("RGB").save(path, quality=92)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ["--avatar", str(path)]


def _no_face(d: Path) -> list[str]:
    rng = np.random.default_rng(0)
    noise = rng.integers(90, 160, (320, 320, 3), dtype=np.uint8)
    path = d / "wall.png"
    Image.fromarray(noise).save(path)
    return ["--avatar", str(path)]


def _bad_audio(d: Path) -> list[str]:
    path = d / "speech.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
    return ["--audio", str(path)]


def _empty_audio(d: Path) -> list[str]:
    path = d / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), SAMPLE_RATE)
    return ["--audio", str(path)]


ERROR_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "not an image": (_not_an_image, r"notes\.png: not an image"),
    "truncated image": (_truncated, r"cut\.jpg: truncated or corrupt image"),
    "no face": (_no_face, r"no face found in .*wall\.png"),
    "bad audio": (_bad_audio, r"speech\.wav"),
    "empty audio": (_empty_audio, r"empty\.wav"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_one_line_exit_2_and_no_output(
    case: str, short_wav: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    make, pattern = ERROR_CASES[case]
    extra = make(tmp_path)
    out = tmp_path / "out.mp4"
    inputs = {p.name for p in tmp_path.iterdir()}
    args = ["render", "--audio", str(short_wav), "--out", str(out), "--trace"]
    args += [str(tmp_path / "out.csv"), "--plot", str(tmp_path / "out.png"), *extra]
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("msadtalker: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert _leftovers(tmp_path, inputs) == []  # no mp4, trace, plot or temporary file


def test_user_sees_one_line_from_the_real_command(tmp_path: Path, short_wav: Path) -> None:
    """The installed entry point as a user runs it (native libraries' chatter included)."""
    extra = _no_face(tmp_path)
    out = tmp_path / "out.mp4"
    env = {**os.environ, "MSADTALKER_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "streamer.cli", "render", "--audio", str(short_wav)]
    result = subprocess.run(
        [*cmd, "--out", str(out), *extra], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"msadtalker: error: no face found in {tmp_path / 'wall.png'}"
    ]
    assert result.stdout == "" and not out.exists()


_MEMORY_CHILD = """
import json, resource, sys
from streamer.cli import build_parser, main
build_parser()  # every command module imported before the baseline is taken
import msadtalker.avatar.prepare, msadtalker.mesh.renderer, streamer.stages.render
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rc": rc, "base_mb": base / 1024, "peak_mb": peak / 1024}))
"""

_MAKE_HUGE = """
import sys
from PIL import Image
face = Image.open(sys.argv[1]).convert("RGB").resize((6000, 6000), Image.Resampling.BILINEAR)
canvas = Image.new("RGB", (12000, 12000), (205, 200, 196))
canvas.paste(face, (3000, 4000))
canvas.save(sys.argv[2], compress_level=1)
"""


def test_huge_photo_is_downscaled_in_bounded_memory(tmp_path: Path, short_wav: Path) -> None:
    """12000 x 12000 PNG (no decoder shortcut for PNG): renders, and the whole command needs
    less extra memory than one more full-size RGB copy of the photo would (432 MB)."""
    huge = tmp_path / "huge.png"
    subprocess.run(
        [sys.executable, "-c", _MAKE_HUGE, str(default_avatar_path()), str(huge)],
        check=True,
        cwd=REPO,
    )
    out = tmp_path / "huge.mp4"
    env = {**os.environ, "MSADTALKER_CACHE": str(tmp_path / "cache")}
    args = ["render", "--audio", str(short_wav), "--out", str(out), "--avatar", str(huge)]
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rc"] == 0
    # Pillow holds the decoded PNG at 4 bytes a pixel (576 MB); everything after works on
    # the reduced copy. A float copy of the photo (1.7 GB) or two uint8 ones would not fit.
    assert figures["peak_mb"] - figures["base_mb"] < 950, figures
    video = decode(out)
    assert video.size == (256, 256) and len(video.frames) == 60
