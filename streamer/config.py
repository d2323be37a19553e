"""The one configuration tree.

Every tunable lives in exactly one frozen dataclass field with its default. Method parameters
(pose, silence, articulator, blinks, renderer) are defined next to the code that uses them in
``msadtalker`` and composed here; the pipeline, render and server sections are ours. A TOML
file mirrors the tree (``[pose]``, ``[silence]``, ...); CLI flags override single dotted keys.
Unknown keys and wrongly typed values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msadtalker.blink import BlinkConfig
from msadtalker.errors import ConfigError
from msadtalker.pose import CosinePoseConfig
from msadtalker.silence import SilenceConfig


@dataclass(frozen=True)
class PipelineConfig:
    """How far the streaming pipeline may look ahead, and the seed of everything random."""

    # Lookahead granted to stages that can use it (silence window, neural mapping window),
    # offline (render, motion, the offline benches). 80 ms = 2 frames reproduces the paper's
    # centred W = 5 window exactly. Live sessions never read it: ``server.lookahead_ms``.
    lookahead_ms: int = 80
    seed: int = 0

    def validate(self) -> None:
        if self.lookahead_ms < 0:
            raise ValueError("lookahead_ms must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")


@dataclass(frozen=True)
class RenderConfig:
    renderer: Literal["auto", "mesh", "neural"] = "auto"
    size: Literal[256, 512] = 256
    mode: Literal["crop", "full"] = "crop"
    still: bool = False
    # Neural renderer only: inference backend (``engines.registry``) and device.
    engine: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class ServerConfig:
    """The live server and its sessions (``streamer.server``, ``streamer.session``)."""

    host: str = "127.0.0.1"
    port: int = 8080
    # Lookahead of live sessions (serve, kiosk, the live benches), passed to the stage
    # builder explicitly; ``pipeline.lookahead_ms`` is the offline one and does not apply.
    # 0 makes the silence window fully causal: mouth-visible latency p95 ~140 ms on the mesh
    # path instead of ~220 ms with the paper's centred window (80 ms), see docs/live.md.
    lookahead_ms: int = 0
    max_sessions: int = 16
    max_viewers_per_room: int = 64
    max_sdp_bytes: int = 64_000
    # Ingest jitter allowance: a video frame is made as soon as its audio is in, and at the
    # latest this long after that audio was due; mic packets later than that are replaced by
    # silence. Costs latency only while packets are late.
    jitter_ms: int = 60
    # Frames each subscriber (video track, audio track, viewer) may hold; when full the
    # oldest frame is dropped and counted.
    queue_frames: int = 4
    # Drop threshold: when the pipeline is more than this many frames behind real time, frames
    # are not rendered (motion still advances, the last image is repeated) until it catches up.
    behind_frames: int = 2
    # ICE host candidates on 127.0.0.1, which aioice does not gather by itself: "only" offers
    # loopback alone (hermetic), "add" adds it to the interfaces' addresses, "off" leaves
    # aioice alone, "auto" = "only" when ``host`` is a loopback address, else "off".
    ice_loopback: Literal["auto", "only", "add", "off"] = "auto"
    stun_url: str = ""  # e.g. "stun:stun.l.google.com:19302"; empty = host candidates only
    connect_timeout_s: float = 20.0  # a peer that has not connected by then is closed
    # A connected peer that sends no RTCP for this long has vanished (ICE consent alone takes
    # 30 s to notice); browsers and aiortc send receiver reports about every second.
    peer_timeout_s: float = 8.0
    drain_timeout_s: float = 5.0  # SIGTERM: time allowed to flush sessions before closing
    record_dir: str = ""  # when set, every publisher session's motion trace is written here
    # Server processes sharing the port (``msadtalker serve --workers``, docs/live.md): 1 = one
    # process, as always; N > 1 = a supervising parent and N workers, limits per worker.
    workers: int = 1

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in 0..65535")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if min(self.max_sessions, self.max_viewers_per_room, self.queue_frames) < 1:
            raise ValueError("session, viewer and queue limits must be >= 1")
        if self.max_sdp_bytes < 256:
            raise ValueError("max_sdp_bytes must be >= 256")
        if self.lookahead_ms < 0:
            raise ValueError("lookahead_ms must be >= 0")
        if self.jitter_ms < 0 or self.behind_frames < 0:
            raise ValueError("jitter_ms and behind_frames must be >= 0")
        if min(self.connect_timeout_s, self.peer_timeout_s) <= 0 or self.drain_timeout_s < 0:
            raise ValueError("connect/peer timeouts must be > 0 and drain_timeout_s >= 0")


@dataclass(frozen=True)
class Config:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pose: CosinePoseConfig = field(default_factory=CosinePoseConfig)
    silence: SilenceConfig = field(default_factory=SilenceConfig)
    blink: BlinkConfig = field(default_factory=BlinkConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then dotted-key overrides (``{"pose.seed": 3}``)."""
    config = Config()
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        config = _merge(config, raw, prefix="")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        config = _set(config, key.split("."), value, prefix="")
    _validate(config)
    return config


def file_sets(path: str | Path, key: str) -> bool:
    """Whether the TOML config file at ``path`` (one ``load_config`` has read) sets the dotted
    ``key``; for notices about keys that do not apply to a command."""
    node: Any = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _validate(config: Config) -> None:
    for section in dataclasses.fields(config):
        node = getattr(config, section.name)
        check = getattr(node, "validate", None)
        if check is None:
            continue
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"[{section.name}] {exc}") from None


def _merge(node: Any, raw: dict[str, Any], prefix: str) -> Any:
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(node))
    names = {f.name for f in dataclasses.fields(node)}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{dotted}'")
        current = getattr(node, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a table")
            changes[key] = _merge(current, value, prefix=f"{dotted}.")
        else:
            changes[key] = _coerce(value, hints[key], dotted)
    return dataclasses.replace(node, **changes)


def _set(node: Any, path: list[str], value: Any, prefix: str) -> Any:
    head, rest = path[0], path[1:]
    dotted = f"{prefix}{head}"
    is_section = dataclasses.is_dataclass(node) and not isinstance(node, type)
    if not is_section or head not in {f.name for f in dataclasses.fields(node)}:
        raise ConfigError(f"unknown config key '{dotted}'")
    if rest:
        return dataclasses.replace(
            node, **{head: _set(getattr(node, head), rest, value, f"{dotted}.")}
        )
    hint = typing.get_type_hints(type(node))[head]
    return dataclasses.replace(node, **{head: _coerce(value, hint, dotted)})


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the field's annotation; ints may stand for floats."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"config key '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has an unusable value {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"config key '{key}' must be a list of {len(args)} values")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value
