"""``msadtalker render`` / ``motion`` / ``serve`` on the neural path (seed-0 synthetic weights).

One short neural render (3 frames at 256, ~10 s of generator per frame on 2 busy cores) end to
end through the CLI: the mp4 has the frames, the trace the same columns as the mesh path.
Bad checkpoint directories fail as one line with exit code 2 before any network is built.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")
pytest.importorskip("safetensors")

from msadtalker.audio import load_audio  # noqa: E402
from msadtalker.timing import SAMPLES_PER_FRAME  # noqa: E402
from streamer.cli import main  # noqa: E402
from streamer.io.trace import COLUMNS  # noqa: E402

pytestmark = pytest.mark.neural


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSADTALKER_CACHE", str(tmp_path_factory.getbasetemp() / "neural-cache"))
    monkeypatch.delenv("MSADTALKER_CHECKPOINTS", raising=False)


def _speech(path: Path, frames: int) -> Path:
    wav = load_audio(Path("msadtalker/assets/sample_speech_en.wav"), warn=False)
    start = 12 * SAMPLES_PER_FRAME
    sf.write(path, wav[start : start + frames * SAMPLES_PER_FRAME + 200], 16000, subtype="PCM_16")
    return path


def _trace(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


@pytest.mark.slow
def test_neural_render_end_to_end(tmp_path: Path, synthetic_checkpoints: Path) -> None:
    out, trace = tmp_path / "neural.mp4", tmp_path / "neural.csv"
    argv = ["render", "--audio", str(_speech(tmp_path / "s.wav", 3)), "--out", str(out)]
    argv += ["--trace", str(trace), "--checkpoints", str(synthetic_checkpoints)]
    assert main(argv) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (256, 256, 3)
    # the generator's output, not the photo: random weights give a noisy, moving image
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 1.0
    rows = _trace(trace)
    assert [row["frame"] for row in rows] == ["0", "1", "2"]
    assert all(0.0 <= float(row["mouth_open"]) <= 1.0 for row in rows)


@pytest.mark.slow
def test_neural_motion_command_writes_the_same_trace_format(
    tmp_path: Path, synthetic_checkpoints: Path
) -> None:
    trace = tmp_path / "motion.csv"
    argv = ["motion", "--audio", str(_speech(tmp_path / "s.wav", 25)), "--trace", str(trace)]
    assert main([*argv, "--checkpoints", str(synthetic_checkpoints)]) == 0
    neural = _trace(trace)
    assert len(neural) == 25
    assert main(argv) == 0  # without checkpoints: the articulator
    mesh = _trace(trace)
    assert len(mesh) == 25
    assert [r["upper_lip"] for r in neural] != [r["upper_lip"] for r in mesh]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("msadtalker: error: ") and "\n" not in err, err
    return err


def test_empty_checkpoint_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "ckpt"
    empty.mkdir()
    speech = str(_speech(tmp_path / "s.wav", 3))
    argv = ["render", "--audio", speech, "--out", str(tmp_path / "x.mp4"), "--checkpoints"]
    assert main([*argv, str(empty)]) == 2
    assert "is empty" in _one_line_error(capsys)
    assert not (tmp_path / "x.mp4").exists()
    assert main(["serve", "--checkpoints", str(empty), "--port", "0"]) == 2
    assert "is empty" in _one_line_error(capsys)


def test_wrong_size_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "SadTalker_V0.0.2_512.safetensors").write_bytes(b"\0" * 16)
    speech = str(_speech(tmp_path / "s.wav", 3))
    argv = ["render", "--audio", speech, "--out", str(tmp_path / "x.mp4")]
    assert main([*argv, "--checkpoints", str(directory), "--size", "256"]) == 2
    assert "SadTalker_V0.0.2_256.safetensors" in _one_line_error(capsys)


def test_mesh_renderer_can_be_forced_with_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "ckpt"
    empty.mkdir()
    out = tmp_path / "mesh.mp4"
    speech = str(_speech(tmp_path / "s.wav", 3))
    argv = ["render", "--audio", speech, "--out", str(out), "--checkpoints", str(empty)]
    assert main([*argv, "--renderer", "mesh"]) == 0  # the directory is not even opened
    assert out.exists()


def test_bench_networks_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "networks.json"
    argv = ["bench", "networks", "--networks", "mapping,audio2exp", "--threads", "1"]
    assert main([*argv, "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["networks"]) == {"mapping", "audio2exp"}
    mapping = report["networks"]["mapping"]
    assert mapping["input"] == "1x70x27" and mapping["threads_1"]["median_ms"] > 0
    assert mapping["official_ms_2_threads"] == 16.8
    assert report["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_bench_lookahead_is_exact_at_full_lookahead(
    tmp_path: Path, synthetic_checkpoints: Path
) -> None:
    out = tmp_path / "lookahead.json"
    argv = ["bench", "lookahead", "--checkpoints", str(synthetic_checkpoints)]
    assert main([*argv, "--seconds", "1.2", "--lookaheads", "1,13", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 30
    assert report["L13"]["chain"]["kp_max"] == 0.0 == report["L13"]["mapping_only"]["kp_max"]
    assert report["L1"]["mapping_only"]["kp_max"] > 0.0
    # features 2 + lips 1 + silence 1 + keypoints 1; 3 + 13 + 2 + 13 at full lookahead
    assert (report["L1"]["pipeline_delay_frames"], report["L13"]["pipeline_delay_frames"]) == (
        5,
        31,
    )
