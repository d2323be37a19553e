"""``msadtalker bench motion`` runs on a small input and writes every figure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamer.bench.motion import head_speed, precision_recall, rms_jerk
from streamer.bench.speech import gapped_speech
from streamer.cli import main

CLIP_KEYS = {
    "frames",
    "gap_frames",
    "head_speed_deg_s",
    "head_speed_ratio",
    "head_speed_ratio_settled",
    "pose_max_over_A",
    "pose_rms_jerk_deg_s3",
    "silent",
    "weight",
    "silent_offline",
    "causal_agrees_with_offline",
    "mouth_max_in_settled_gaps",
}


def test_bench_motion_json_has_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "motion.json"
    argv = [
        "bench",
        "motion",
        "--json",
        str(out),
        "--languages",
        "en,cmn",
        "--sentences",
        "2",
        "--generator-s",
        "20",
        "--snr-db",
        "10",
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"config", "en", "cmn", "pose_generator"} <= set(result)
    for lang in ("en", "cmn"):
        assert {"speech", "seconds", "gaps_s", "clean", "pink_10db"} <= set(result[lang])
        for condition in ("clean", "pink_10db"):
            figures = result[lang][condition]
            assert CLIP_KEYS <= set(figures)
            assert set(figures["pose_max_over_A"]) == {"pitch", "yaw", "roll"}
            assert all(0 <= v <= 1 for v in figures["pose_max_over_A"].values())
            assert set(figures["silent"]) == {"precision", "recall", "f1"}
            assert 0 <= figures["head_speed_ratio"] < 1
    generator = result["pose_generator"]
    for noise in ("lowpass", "iid"):
        assert {"max_over_A", "clamped_share", "rms_jerk_deg_s3", "noise_rms_jerk_deg_s3"} <= set(
            generator[noise]
        )
        assert all(v <= 1.0 for v in generator[noise]["max_over_A"].values())
    assert all(v > 1 for v in generator["jerk_ratio_iid_over_lowpass"].values())
    assert "long_file" not in result  # only with --long-s


def test_gapped_speech_records_its_gaps() -> None:
    clip = gapped_speech(["Hello there.", "Good bye."], "en", [0.8], lead_s=0.5, tail_s=0.4)
    assert len(clip.gaps) == 3
    for start, end in clip.gaps:
        assert not clip.audio[start:end].any()
    gap = clip.gap_frames()
    speech = clip.speech_frames()
    assert not (gap & speech).any()
    assert gap.sum() >= round((0.5 + 0.8 + 0.4) * 25) - 4
    assert clip.gap_frames(settle_s=0.2).sum() < gap.sum()


def test_metric_helpers() -> None:
    pose = np.zeros((10, 3))
    pose[5:, 0] = 1.0
    speed = head_speed(pose)
    assert speed[5] == 25.0 and speed.sum() == 25.0
    truth = np.array([1, 1, 0, 0], dtype=bool)
    assert precision_recall(np.array([1, 0, 0, 1], dtype=bool), truth) == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
    }
    t = np.arange(1000) / 25
    jerk = rms_jerk(np.stack([np.sin(2 * np.pi * t)] * 3, axis=1))
    np.testing.assert_allclose(jerk, (2 * np.pi) ** 3 / np.sqrt(2), rtol=0.02)
