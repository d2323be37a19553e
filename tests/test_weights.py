"""Strict checkpoint loading: file discovery, every kind of bad file, other seeds, fingerprint.

Bad files are tiny crafted safetensors / torch files in tmp_path; where a test needs a valid
725 MB safetensors next to a crafted mapping file, it links the cached synthetic one. The other
seed (7) holds only audio2exp and mapping: a safetensors file with some of the networks loads
those strictly and names the file and network when asked for another.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import save_file  # noqa: E402
from torch import Tensor  # noqa: E402

from msadtalker.catalog import MAPPING_FILES  # noqa: E402
from msadtalker.errors import CheckpointError  # noqa: E402
from msadtalker.weights import (  # noqa: E402
    ENV_VAR,
    build_expnet,
    build_face_recon,
    build_mapping,
    build_network,
    checkpoint_dir,
    checkpoint_fingerprint,
    load_weights,
    locate_checkpoints,
    official_layout,
    safetensors_layout,
)

pytestmark = pytest.mark.neural

ST_256 = "SadTalker_V0.0.2_256.safetensors"
ST_512 = "SadTalker_V0.0.2_512.safetensors"
MAP70 = MAPPING_FILES["mapping"]
MAP73 = MAPPING_FILES["mapping_full"]
FIRST_KEY, SECOND_KEY = list(safetensors_layout())[:2]


def _zeros(shape: tuple[int, ...], dtype: str = "float32") -> Tensor:
    zeros: Tensor = torch.zeros(shape, dtype=getattr(torch, dtype))
    return zeros


def _first_tensor() -> dict[str, Tensor]:
    shape, dtype = safetensors_layout()[FIRST_KEY]
    return {FIRST_KEY: _zeros(shape, dtype)}


def _mapping_state(coeff_nc: int = 70) -> dict[str, Tensor]:
    name = "mapping" if coeff_nc == 70 else "mapping_full"
    return {key: _zeros(shape, dtype) for key, (shape, dtype) in official_layout()[name].items()}


def _with_real_safetensors(tmp_path: Path, synthetic: Path) -> Path:
    (tmp_path / ST_256).symlink_to(synthetic / ST_256)
    return tmp_path


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- locating files -----------------------------------------------------------------------------


def test_directory_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert checkpoint_dir(None) == tmp_path
    monkeypatch.delenv(ENV_VAR)
    assert ENV_VAR in _error(lambda: checkpoint_dir(None))
    assert "does not exist" in _error(lambda: checkpoint_dir(tmp_path / "nope"))
    (tmp_path / "file").write_bytes(b"x")
    assert "not a directory" in _error(lambda: checkpoint_dir(tmp_path / "file"))


def test_empty_directory_lists_expected_files(tmp_path: Path) -> None:
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp", "mapping"]))
    assert "empty" in message and ST_256 in message and MAP70 in message


def test_missing_files_are_named(tmp_path: Path) -> None:
    save_file(_first_tensor(), str(tmp_path / "other.safetensors"))
    message = _error(lambda: locate_checkpoints(tmp_path, 256, ["mapping_full"]))
    assert f"missing {ST_256}" in message and MAP73 in message and "other.safetensors" in message
    save_file(_first_tensor(), str(tmp_path / ST_256))
    message = _error(lambda: locate_checkpoints(tmp_path, 256, ["mapping_full"]))
    assert f"missing {MAP73}" in message


def test_512_file_for_size_256_is_refused_by_name(tmp_path: Path) -> None:
    save_file(_first_tensor(), str(tmp_path / ST_512))
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    assert ST_512 in message and "256" in message and ST_256 in message
    assert locate_checkpoints(tmp_path, 512, []).safetensors.name == ST_512


def test_size_512_uses_the_512_file_with_the_same_layout(
    tmp_path: Path, synthetic_checkpoints: Path
) -> None:
    from msadtalker.models.config import render_config

    assert render_config(512).safetensors_file == ST_512
    assert render_config(512).motion_volume == (16, 128, 128)
    (tmp_path / ST_512).symlink_to(synthetic_checkpoints / ST_256)
    weights = load_weights(tmp_path, 512, ["audio2exp"])
    assert weights.files.safetensors.name == ST_512 and weights.files.size == 512
    assert "size 256" in _error(lambda: locate_checkpoints(tmp_path, 256, []))
    with pytest.raises(CheckpointError, match="unsupported render size 384"):
        locate_checkpoints(tmp_path, 384, [])


def test_only_legacy_files_are_refused(tmp_path: Path) -> None:
    torch.save({"net_recon": {}}, tmp_path / "epoch_20.pth")
    message = _error(lambda: load_weights(tmp_path, 256, ["face_3drecon"]))
    assert "legacy" in message and "epoch_20.pth" in message and ST_256 in message


def test_legacy_files_beside_safetensors_are_ignored_with_a_warning(
    tmp_path: Path, synthetic_checkpoints: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _with_real_safetensors(tmp_path, synthetic_checkpoints)
    (tmp_path / MAP70).symlink_to(synthetic_checkpoints / MAP70)
    torch.save({"model": {}}, tmp_path / "auido2exp_00300-model.pth")
    with caplog.at_level(logging.WARNING, logger="msadtalker.weights"):
        weights = load_weights(tmp_path, 256, ["mapping"])
    assert [p.name for p in weights.files.ignored] == ["auido2exp_00300-model.pth"]
    assert "auido2exp_00300-model.pth" in caplog.text and ST_256 in caplog.text


# --- bad safetensors ----------------------------------------------------------------------------


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / ST_256).write_bytes(os.urandom(4096))
    assert "not a safetensors file" in _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    (tmp_path / ST_256).write_bytes(b"abc")
    assert "not a safetensors file" in _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / ST_256
    save_file(_first_tensor(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    assert "truncated" in message and str(path) in message
    path.write_bytes(data[:20])  # cut inside the header
    assert "truncated" in _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))


def test_foreign_safetensors_is_not_sadtalker(tmp_path: Path) -> None:
    save_file({"model.layers.0.weight": torch.zeros(2)}, str(tmp_path / ST_256))
    assert "not a SadTalker checkpoint" in _error(
        lambda: load_weights(tmp_path, 256, ["audio2exp"])
    )


def test_missing_key_names_the_first_one(tmp_path: Path) -> None:
    # FIRST_KEY starts kp_extractor: the network is in the file, so it must be complete.
    save_file(_first_tensor(), str(tmp_path / ST_256))
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    assert f"missing key {SECOND_KEY}" in message and ST_256 in message
    assert f"{len(official_layout()['kp_extractor']) - 1} keys missing" in message


def test_unexpected_key(tmp_path: Path) -> None:
    save_file({**_first_tensor(), "generator.extra.weight": torch.zeros(1)}, str(tmp_path / ST_256))
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    assert "unexpected key generator.extra.weight" in message


def test_shape_and_dtype_mismatch(tmp_path: Path) -> None:
    shape, _ = safetensors_layout()[FIRST_KEY]
    wrong = (*shape[:-1], shape[-1] + 1)
    save_file({FIRST_KEY: torch.zeros(wrong)}, str(tmp_path / ST_256))
    message = _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))
    assert f"shape mismatch for key {FIRST_KEY}" in message
    assert f"file has {wrong}, expected {shape}" in message
    save_file({FIRST_KEY: torch.zeros(shape, dtype=torch.float16)}, str(tmp_path / ST_256))
    assert "dtype mismatch" in _error(lambda: load_weights(tmp_path, 256, ["audio2exp"]))


# --- bad mapping files --------------------------------------------------------------------------


class _RunsCode:
    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return (os.getcwd, ())


@pytest.fixture
def mapping_dir(tmp_path: Path, synthetic_checkpoints: Path) -> Path:
    return _with_real_safetensors(tmp_path, synthetic_checkpoints)


def test_pickle_with_code_is_refused(mapping_dir: Path) -> None:
    path = mapping_dir / MAP70
    torch.save({"mapping": _mapping_state(), "epoch": _RunsCode()}, path)
    message = _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))
    assert f"refusing to unpickle code from {path}" in message


def test_truncated_and_random_mapping_files(mapping_dir: Path) -> None:
    path = mapping_dir / MAP70
    torch.save({"mapping": {"first.0.bias": torch.zeros(1024)}}, path)
    path.write_bytes(path.read_bytes()[:-200])
    assert "truncated or corrupt" in _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))
    path.write_bytes(os.urandom(2048).replace(b"\x80", b"\x00").replace(b"PK", b"pk"))
    assert "not a torch checkpoint" in _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))


def test_mapping_file_without_mapping_entry(mapping_dir: Path) -> None:
    torch.save({"model": _mapping_state()}, mapping_dir / MAP70)
    assert "no 'mapping'" in _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))


def test_swapped_mapping_files_are_caught_by_shape(mapping_dir: Path) -> None:
    torch.save({"mapping": _mapping_state(73), "epoch": 109}, mapping_dir / MAP70)
    message = _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))
    assert (
        "shape mismatch for key first.0.weight: file has (1024, 73, 7), expected "
        "(1024, 70, 7)" in message
    )


def test_mapping_missing_and_unexpected_keys(mapping_dir: Path) -> None:
    state = _mapping_state()
    del state["fc_exp.bias"]
    torch.save({"mapping": state}, mapping_dir / MAP70)
    assert "missing key fc_exp.bias" in _error(lambda: load_weights(mapping_dir, 256, ["mapping"]))
    state = {**_mapping_state(), "fc_extra.weight": torch.zeros(1)}
    torch.save({"mapping": state}, mapping_dir / MAP70)
    assert "unexpected key fc_extra.weight" in _error(
        lambda: load_weights(mapping_dir, 256, ["mapping"])
    )


def test_crafted_mapping_loads_into_the_network(mapping_dir: Path) -> None:
    state = _mapping_state()
    state["fc_t.bias"] = torch.tensor([1.0, 2.0, 3.0])
    torch.save({"mapping": state, "epoch": 229}, mapping_dir / MAP70)
    net = build_mapping(load_weights(mapping_dir, 256, ["mapping"]))
    assert torch.equal(net.fc_t.bias, torch.tensor([1.0, 2.0, 3.0]))


# --- real (synthetic) checkpoints ---------------------------------------------------------------


def test_seed0_loads_strictly_without_copies(synthetic_checkpoints: Path) -> None:
    weights = load_weights(
        synthetic_checkpoints, 256, ["audio2exp", "face_3drecon", "mapping", "mapping_full"]
    )
    assert set(weights.skipped) == {"audio2pose"}
    expnet = build_expnet(weights)
    assert not expnet.training
    parameter = expnet.mapping1.weight
    assert parameter.dtype == torch.float32 and not parameter.requires_grad
    assert parameter.data_ptr() == weights.state_dict("audio2exp")["mapping1.weight"].data_ptr()
    recon = build_face_recon(weights)
    assert recon.final_layers[0].weight.shape == (80, 2048, 1, 1)
    assert build_mapping(weights, 73).coeff_nc == 73
    with pytest.raises(KeyError, match="not loaded"):
        weights.state_dict("generator")


def test_other_seed_loads_strictly(
    synthetic_checkpoints_for_seed: Callable[[int], Path], synthetic_checkpoints: Path
) -> None:
    seed7 = synthetic_checkpoints_for_seed(7)
    weights7 = load_weights(seed7, 256, ["audio2exp", "mapping"])
    weights0 = load_weights(synthetic_checkpoints, 256, ["audio2exp", "mapping"])
    for name in ("audio2exp", "mapping"):
        assert not build_network(name, weights7).training
        for key, value in weights7.state_dict(name).items():
            if value.is_floating_point() and value.numel() > 1:
                assert not torch.equal(value, weights0.state_dict(name)[key]), key


def test_a_network_missing_from_the_file_is_named(
    synthetic_checkpoints_for_seed: Callable[[int], Path], tmp_path: Path
) -> None:
    seed7 = synthetic_checkpoints_for_seed(7)  # its safetensors file holds only audio2exp
    for name in ("generator", "face_3drecon"):
        message = _error(partial(load_weights, seed7, 256, [name]))
        assert f"{seed7 / ST_256}: holds no {name} tensors (it holds audio2exp)" in message
    assert "missing " + MAP73 in _error(lambda: load_weights(seed7, 256, ["mapping_full"]))
    # A network that is in the file but incomplete is refused, whichever network is asked for.
    layout = official_layout()["audio2exp"]
    incomplete = {f"audio2exp.{key}": _zeros(*spec) for key, spec in list(layout.items())[:-1]}
    save_file(incomplete, str(tmp_path / ST_256))
    last = list(layout)[-1]
    assert f"missing key audio2exp.{last}" in _error(
        lambda: load_weights(tmp_path, 256, ["audio2exp"])
    )


def test_fingerprint_follows_content_not_location(
    tmp_path: Path,
    synthetic_checkpoints_for_seed: Callable[[int], Path],
    synthetic_checkpoints: Path,
) -> None:
    seed0 = checkpoint_fingerprint(synthetic_checkpoints)
    assert seed0 == checkpoint_fingerprint(synthetic_checkpoints)
    assert seed0 != checkpoint_fingerprint(synthetic_checkpoints_for_seed(7))
    for name in (ST_256, MAP70, MAP73):
        (tmp_path / name).symlink_to(synthetic_checkpoints / name)
    assert checkpoint_fingerprint(tmp_path) == seed0
    (tmp_path / MAP73).unlink()
    assert checkpoint_fingerprint(tmp_path) != seed0
