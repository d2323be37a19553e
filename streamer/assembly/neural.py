"""The neural path's per-process preparation and its stage factories.

``neural_factory`` (renderer = neural; chosen by ``streamer.assembly.stage_factory``, i.e. render,
serve, kiosk and the benches) and ``neural_motion_factory`` (``msadtalker motion
--checkpoints``: the neural lip source, no generator) do, once per process:

1. open the engines (``engines.registry.open_engines``, backend, device and server URL from
   ``render.engine`` / ``render.device`` / ``render.engine_url``): the checkpoint set is
   validated here, so a bad directory is one clear error before any stream starts; with
   ``render.batch_max`` > 1 the per-frame networks are batched across the sessions that share
   them (``engines.batching_engine``);
2. prepare the avatar (``msadtalker.avatar``) and the neural source (cached on disk by avatar
   + checkpoint fingerprint), derive the per-checkpoint constants (blink column, lip
   keypoints; cached by fingerprint), encode the generator source (kept in memory);

and return a callable that builds one stream's stages around these shared, stateless
objects:

    features -> NeuralLipStage -> silence -> motion [-> NeuralKeypointStage -> NeuralRenderStage]

The mapping lookahead of both neural stages is the stages' lookahead (``pipeline.lookahead_ms``,
or the ``lookahead_ms`` a live caller passes) in frames, at most
13 (the official window radius); the feature stage takes up to 3 of it, the silence stage up
to 2 (``streamer.assembly.motion``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engines.base import EngineSet, EngineUnavailable
from engines.batching import BatchPolicy
from engines.batching_engine import BatchingEngineSet
from engines.registry import open_engines
from msadtalker.avatar import PreparedAvatar, prepare_avatar
from msadtalker.catalog import MOTION_NETWORKS, RENDER_NETWORKS, mapping_for_mode
from msadtalker.errors import ConfigError
from msadtalker.neural.coeffs import RADIUS
from msadtalker.neural.motion import NeuralMotion, checkpoint_constants
from msadtalker.neural.render import NeuralRenderer
from msadtalker.neural.source import prepare_neural_source
from msadtalker.weights import checkpoint_dir, checkpoint_fingerprint
from streamer.assembly.motion import StageFactory, build_motion_stages, lookahead_frames
from streamer.config import Config
from streamer.stages.contract import Stage
from streamer.stages.neural_keypoints import NeuralKeypointStage
from streamer.stages.neural_lips import NeuralLipStage
from streamer.stages.neural_render import NeuralRenderStage

log = logging.getLogger(__name__)


class EngineRunner:
    """``msadtalker.neural.runner.NetworkRunner`` over an EngineSet."""

    def __init__(self, engines: EngineSet) -> None:
        self.engines = engines

    def __call__(
        self, network: str, *inputs: Any, keep_on_device: bool = False
    ) -> Mapping[str, Any]:
        return self.engines.engine(network).run(*inputs, keep_on_device=keep_on_device)


def mapping_lookahead(config: Config, lookahead_ms: int | None = None) -> int:
    """Frames of lookahead the neural mapping windows get (0 ... 13)."""
    return min(lookahead_frames(config, lookahead_ms), RADIUS)


def _open_engines(config: Config, directory: Path, networks: list[str]) -> EngineSet:
    """The configured backend; torch with ``precision`` / ``cuda_graphs`` set is the fast GPU
    path (engines.fast_path), and only a remote backend takes a server URL."""
    render = config.render
    if render.engine == "torch" and (render.precision != "fp32" or render.cuda_graphs):
        from engines.fast_path import FastPathOptions, open_fast_torch_engines

        options = FastPathOptions(render.precision, cuda_graphs=render.cuda_graphs)
        return open_fast_torch_engines(directory, render.size, networks, render.device, options)
    remote = {"url": render.engine_url} if render.engine_url else {}
    return open_engines(render.engine, directory, render.size, networks, render.device, **remote)


class NeuralAvatar:
    """Everything the neural stages of one avatar share (built once per process)."""

    def __init__(
        self,
        config: Config,
        photo: Path,
        checkpoints: Path | None,
        face_index: int | None,
        render: bool,
    ) -> None:
        size, mode = config.render.size, config.render.mode
        mapping_network, coeff_nc = mapping_for_mode(mode)
        directory = checkpoint_dir(checkpoints)  # --checkpoints, else $MSADTALKER_CHECKPOINTS
        networks = [*MOTION_NETWORKS, mapping_network, *(RENDER_NETWORKS if render else ())]
        try:
            engines: EngineSet = _open_engines(config, directory, networks)
        except EngineUnavailable as exc:
            raise ConfigError(f"neural renderer: {exc}") from None
        # Triton batches on the server, across every process's sessions.
        if config.render.batch_max > 1 and config.render.engine != "triton":
            policy = BatchPolicy(config.render.batch_max, config.render.batch_wait_ms / 1e3)
            engines = BatchingEngineSet(engines, policy)
        self.engines = engines
        run = EngineRunner(engines)
        self.avatar: PreparedAvatar = prepare_avatar(photo, size, face_index)
        fingerprint = checkpoint_fingerprint(directory, size)
        source = prepare_neural_source(self.avatar, run, mapping_network, coeff_nc, fingerprint)
        constants = checkpoint_constants(run, mapping_network, coeff_nc, size, fingerprint)
        self.motion = NeuralMotion(run, source, constants)
        self.renderer = NeuralRenderer(run, source, self.avatar) if render else None
        log.info(
            "neural path ready: %s at %d (%s, %s on %s), lips = keypoints %d/%d",
            photo.name,
            size,
            mode,
            engines.backend,
            engines.device,
            constants.lips.upper,
            constants.lips.lower,
        )


def neural_factory(
    config: Config,
    photo: Path,
    checkpoints: Path | None,
    face_index: int | None,
    lookahead_ms: int | None = None,
) -> StageFactory:
    """Stage factory of the full neural path (see the module docstring)."""
    shared = NeuralAvatar(config, photo, checkpoints, face_index, render=True)
    assert shared.renderer is not None
    renderer = shared.renderer
    lookahead = mapping_lookahead(config, lookahead_ms)

    def stages() -> Sequence[Stage[Any, Any]]:
        lips = NeuralLipStage(shared.motion, lookahead)
        return [
            *build_motion_stages(config, lips=lips, lookahead_ms=lookahead_ms),
            NeuralKeypointStage(shared.motion, lookahead),
            NeuralRenderStage(renderer, config.render.mode),
        ]

    return stages


def neural_motion_factory(
    config: Config, photo: Path, checkpoints: Path | None, face_index: int | None
) -> StageFactory:
    """Stage factory up to ``MotionFrame`` with the neural lip source (no generator)."""
    shared = NeuralAvatar(config, photo, checkpoints, face_index, render=False)
    lookahead = mapping_lookahead(config)

    def stages() -> Sequence[Stage[Any, Any]]:
        return build_motion_stages(config, lips=NeuralLipStage(shared.motion, lookahead))

    return stages
