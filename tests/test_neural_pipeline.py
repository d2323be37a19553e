"""The neural stage factory (``streamer.assembly.stage_factory``) with scripted networks.

The engines are replaced by the linear fakes of ``test_neural_parts`` so the whole neural
pipeline (avatar preparation, source, calibration, lips, silence, motion, keypoints, render,
crop and full modes) runs in seconds; the real networks are covered by
``test_neural_streaming`` and ``test_neural_render``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from test_neural_parts import FakeNetworks  # noqa: E402

import streamer.assembly.neural  # noqa: E402
from msadtalker.audio import load_audio  # noqa: E402
from msadtalker.timing import SAMPLES_PER_FRAME  # noqa: E402
from streamer.assembly import stage_factory  # noqa: E402
from streamer.config import load_config  # noqa: E402
from streamer.pipeline import Pipeline  # noqa: E402
from streamer.stages.neural_keypoints import NeuralKeypointStage  # noqa: E402
from streamer.stages.neural_lips import NeuralLipStage  # noqa: E402
from streamer.stages.neural_render import NeuralRenderStage  # noqa: E402
from streamer.types import AudioChunk, VideoFrame  # noqa: E402

pytestmark = pytest.mark.neural


class FakeEngine:
    def __init__(self, nets: FakeNetworks, network: str) -> None:
        self._nets, self.network, self.backend = nets, network, "fake"

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Mapping[str, Any]:
        return self._nets(self.network, *inputs)

    def close(self) -> None:
        pass


class FakeEngineSet:
    backend, device = "fake", "cpu"

    def __init__(self, networks: list[str], size: int) -> None:
        self.nets = FakeNetworks(size)
        self.opened = networks

    def engine(self, network: str) -> FakeEngine:
        assert network in self.opened, network
        return FakeEngine(self.nets, network)

    def close(self) -> None:
        pass


@pytest.fixture
def fake_engines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Path, list[FakeEngineSet]]:
    opened: list[FakeEngineSet] = []

    def open_engines(
        backend: str, directory: Path, size: int, networks: list[str], device: str
    ) -> FakeEngineSet:
        assert (backend, device) == ("torch", "auto")
        opened.append(FakeEngineSet(list(networks), size))
        return opened[-1]

    monkeypatch.setattr(streamer.assembly.neural, "open_engines", open_engines)
    monkeypatch.setenv("MSADTALKER_CACHE", str(tmp_path / "cache"))
    checkpoints = tmp_path / "ckpt"  # only named and fingerprinted, never loaded here
    checkpoints.mkdir()
    for name in (
        "SadTalker_V0.0.2_256.safetensors",
        "mapping_00229-model.pth.tar",
        "mapping_00109-model.pth.tar",
    ):
        (checkpoints / name).write_bytes(name.encode())
    return checkpoints, opened


def _speech(frames: int) -> list[AudioChunk]:
    wav = load_audio(Path("msadtalker/assets/sample_speech_en.wav"), warn=False)
    wav = wav[: frames * SAMPLES_PER_FRAME]
    step = 1000
    return [AudioChunk(wav[s : s + step], s) for s in range(0, len(wav), step)]


@pytest.mark.parametrize(("mode", "mapping"), [("crop", "mapping"), ("full", "mapping_full")])
def test_neural_factory_builds_the_one_pipeline(
    fake_engines: tuple[Path, list[FakeEngineSet]], mode: str, mapping: str
) -> None:
    checkpoints, opened = fake_engines
    config = load_config(overrides={"render.mode": mode, "pipeline.lookahead_ms": 160})
    factory = stage_factory(config, None, checkpoints, None)  # auto: neural with checkpoints
    assert len(opened) == 1 and mapping in opened[0].opened
    assert "generator_render" in opened[0].opened
    stages = factory()
    assert isinstance(stages[1], NeuralLipStage) and stages[1].delay_frames == 4
    assert isinstance(stages[-2], NeuralKeypointStage) and stages[-2].delay_frames == 4
    assert isinstance(stages[-1], NeuralRenderStage) and stages[-1].delay_frames == 0
    pipeline: Pipeline[VideoFrame] = Pipeline(stages)
    # features 3 + lips 4 + silence 2 + motion 0 + keypoints 4 + render 0
    assert pipeline.delay_frames == 13
    frames = list(pipeline.run(_speech(20)))
    assert [f.index for f in frames] == list(range(20))
    expected = (256, 256, 3) if mode == "crop" else (336, 336, 3)  # the bundled photo
    assert all(f.image.shape == expected for f in frames)
    assert all(f.motion.kp_driving is not None for f in frames)
    assert any(f.motion.lips.mouth_open > 0 for f in frames)
    # a second session reuses the prepared avatar and networks: nothing is opened again
    assert len(factory()) == len(stages) and len(opened) == 1
    assert opened[0].nets.calls["generator_source_encoder"] == 1


def test_mesh_is_used_without_checkpoints(fake_engines: tuple[Path, list[FakeEngineSet]]) -> None:
    _, opened = fake_engines
    stages = stage_factory(load_config(), None, None, None)()
    assert not opened and not any(isinstance(s, NeuralRenderStage) for s in stages)


def test_still_keeps_the_source_pose_in_the_drive_rows(
    fake_engines: tuple[Path, list[FakeEngineSet]],
) -> None:
    checkpoints, _ = fake_engines
    config = load_config(overrides={"render.still": True, "pipeline.lookahead_ms": 0})
    stages = stage_factory(config, None, checkpoints, None)()
    frames: list[Any] = list(Pipeline(stages[:-1]).run(_speech(10)))
    assert all((f.pose.pitch, f.pose.yaw, f.pose.roll) == (0.0, 0.0, 0.0) for f in frames)
    assert all(f.kp_driving is not None and np.isfinite(f.kp_driving).all() for f in frames)
