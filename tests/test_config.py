"""The one config tree: defaults, TOML, dotted CLI overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from msadtalker.errors import ConfigError
from streamer.config import Config, load_config


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_dataclass_defaults() -> None:
    assert load_config() == Config()
    config = load_config()
    assert config.pipeline.lookahead_ms == 80 and config.silence.window == 5
    assert config.silence.threshold == 0.02 and config.pose.amplitude_deg == (10.0, 6.0, 8.0)


def test_toml_then_overrides(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        "[pipeline]\nseed = 3\nlookahead_ms = 40\n[pose]\nfreq_max_hz = 1.2\n"
        'noise = "iid"\n[silence]\nthreshold = 0.03\n',
    )
    config = load_config(path, {"pipeline.seed": 8, "silence.window": 3, "pose.noise": None})
    assert config.pipeline.seed == 8  # the override wins
    assert config.pipeline.lookahead_ms == 40  # the file's value is kept
    assert config.pose.freq_max_hz == 1.2 and config.pose.noise == "iid"  # None = not given
    assert config.silence.threshold == 0.03 and config.silence.window == 3


def test_ints_stand_for_floats_and_lists_for_tuples(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, "[pose]\namplitude_deg = [5, 4, 3]\ngain_min = 1\n"))
    assert config.pose.amplitude_deg == (5.0, 4.0, 3.0)
    assert isinstance(config.pose.gain_min, float)


@pytest.mark.parametrize(
    ("text", "overrides", "expect"),
    [
        ("[pose]\nwobble = 1\n", {}, "unknown config key 'pose.wobble'"),
        ("[nothing]\n", {}, "unknown config key 'nothing'"),
        ("pose = 3\n", {}, "'pose' must be a table"),
        ('[pipeline]\nseed = "x"\n', {}, "'pipeline.seed' must be an integer"),
        ("[pipeline]\nseed = 1.5\n", {}, "'pipeline.seed' must be an integer"),
        ("[silence]\nthreshold = true\n", {}, "'silence.threshold' must be a number"),
        ('[silence]\nsource = "ears"\n', {}, "'silence.source' must be one of"),
        ("[pose]\namplitude_deg = [1, 2]\n", {}, "list of 3 values"),
        ("[pipeline]\nseed = -2\n", {}, "[pipeline] seed must be >= 0"),
        ("[pipeline]\nlookahead_ms = -1\n", {}, "[pipeline] lookahead_ms must be >= 0"),
        ("[silence]\nwindow = 4\n", {}, "[silence] silence window"),
        ("[silence]\npose_ease_s = -1.0\n", {}, "[silence] silence pose_ease_s"),
        ("", {"pose.nope": 1}, "unknown config key 'pose.nope'"),
        ("", {"pipeline.seed.x": 1}, "unknown config key 'pipeline.seed.x'"),
    ],
)
def test_errors_name_the_key(
    tmp_path: Path, text: str, overrides: dict[str, Any], expect: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_toml(tmp_path, text), overrides)
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_toml(tmp_path, "[pose\n"))
