"""Strict loading of the official SadTalker checkpoints.

File names and the networks in each come from ``msadtalker.catalog``; how the official code
reads them: OpenTalker/SadTalker ``src/utils/safetensor_helper.py`` (safetensors),
``src/facerender/animate.py`` (mapping files).

Files in the checkpoint directory (``--checkpoints DIR`` or ``$MSADTALKER_CHECKPOINTS``):

* ``SadTalker_V0.0.2_<S>.safetensors`` (S = 256 or 512; same keys and shapes, different
  values): networks ``kp_extractor``, ``generator``, ``audio2exp``, ``audio2pose``,
  ``face_3drecon``. As upstream, a network receives every key that *contains* its name, with
  ``"<name>."`` removed.
* ``mapping_00229-model.pth.tar`` (MappingNet 70-d, network ``mapping``; preprocess crop /
  extcrop / resize) and ``mapping_00109-model.pth.tar`` (73-d, ``mapping_full``; full /
  extfull): ``torch.load(weights_only=True)["mapping"]``. Pickles that need code are refused.

Every key of every file is checked against the official layout (the packaged
``assets/sadtalker_layout.json``: key, shape and dtype of every tensor of the release): a wrong,
truncated, mismatched or partial file raises ``CheckpointError`` with one line naming the file
and the first offending key. The check is per network: a safetensors file may hold only some of
the five networks (the tests' small checkpoints do), each of them complete; asking for one it
does not hold is a ``CheckpointError`` naming the file and the network. ``audio2pose``
(PoseVAE, replaced by our cosine pose) is checked like the rest and then deliberately not
loaded. HEEstimator is not in these files.

Decisions:
* Legacy ``--old_version`` files (``facevid2vid_00189-model.pth.tar`` ...) next to the
  safetensors are ignored with a warning, as upstream does (safetensors win); a directory with
  only legacy files is refused (this loader reads the V0.0.2 safetensors release only).
* The size is chosen by file name (the 256 and 512 files cannot be told apart by content): a
  ``_512`` file with size 256 is refused with a message saying so.
* Tensors must have the layout's dtype (float32, int64 counters); nothing is cast silently.
* Spectral norm (generator SPADE convs: ``weight_orig``, ``weight_u``, ``weight_v``) is folded
  at load into a plain ``weight`` (``fold_spectral_norm``), so modules have plain convs.

Memory: the safetensors header is parsed directly and tensors are read one at a time with
``safe_open`` only for the requested networks; ``build_network`` constructs modules without
allocating their parameters and adopts the loaded tensors (``assign=True``), so a network's
weights exist once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from msadtalker.catalog import (
    CHECKPOINTS_ENV,
    COEFF_NC,
    LEGACY_FILES,
    LOADABLE_NETWORKS,
    MAPPING_FILES,
    MAPPING_FOR_MODE,
    MAPPING_STATE_KEY,
    RENDER_SIZES,
    SAFETENSORS_NETWORKS,
    SKIPPED_NETWORKS,
    VIEWS,
    mapping_network,
    safetensors_file,
)
from msadtalker.errors import CheckpointError
from msadtalker.models.expnet import ExpNet
from msadtalker.models.face_recon import FaceReconNet
from msadtalker.models.mapping import MappingNet

log = logging.getLogger(__name__)

ENV_VAR = CHECKPOINTS_ENV
SIZES = RENDER_SIZES
# What ``load_weights`` reads unless told: everything the crop render mode uses.
DEFAULT_NETWORKS = tuple(name for name in LOADABLE_NETWORKS if name != "mapping_full")
_SN_SUFFIXES = ("weight_orig", "weight_u", "weight_v")
_SAFETENSORS_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024

Shape = tuple[int, ...]
TensorLayout = Mapping[str, tuple[Shape, str]]  # key -> (shape, dtype name)


# --- official layout ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def official_layout() -> Mapping[str, TensorLayout]:
    """Network -> module key -> (shape, dtype) of the official files, in official key order."""
    text = resources.files("msadtalker").joinpath("assets/sadtalker_layout.json").read_text()
    networks = json.loads(text)["networks"]
    return MappingProxyType(
        {
            name: MappingProxyType(
                {key: (tuple(shape), dtype) for key, (shape, dtype) in tensors.items()}
            )
            for name, tensors in networks.items()
        }
    )


def safetensors_layout() -> dict[str, tuple[Shape, str]]:
    """Every key of the official safetensors file (with prefixes), in official order."""
    layout = official_layout()
    return {
        f"{network}.{key}": spec
        for network in SAFETENSORS_NETWORKS
        for key, spec in layout[network].items()
    }


def folded_layout(layout: TensorLayout) -> dict[str, tuple[Shape, str]]:
    """The layout after ``fold_spectral_norm``: ``X.weight_orig`` -> ``X.weight``, no u / v."""
    folded: dict[str, tuple[Shape, str]] = {}
    for key, spec in layout.items():
        stem, _, leaf = key.rpartition(".")
        if leaf == "weight_orig":
            folded[f"{stem}.weight" if stem else "weight"] = spec
        elif leaf not in ("weight_u", "weight_v"):
            folded[key] = spec
    return folded


# --- locating files -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointFiles:
    """The files of one checkpoint set (one render size, the requested mapping nets)."""

    directory: Path
    size: int
    safetensors: Path
    mapping: Mapping[str, Path]
    ignored: tuple[Path, ...] = ()

    def describe(self) -> str:
        names = [self.safetensors.name, *(path.name for path in self.mapping.values())]
        return f"{self.directory}: " + ", ".join(names)


def checkpoint_dir(value: str | Path | None) -> Path:
    """``--checkpoints`` value, else ``$MSADTALKER_CHECKPOINTS``, as an existing directory."""
    if value is None or str(value) == "":
        value = os.environ.get(ENV_VAR) or None
    if value is None:
        raise CheckpointError(f"no checkpoint directory: pass --checkpoints DIR or set {ENV_VAR}")
    path = Path(value).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint path {path} is not a directory (give the folder holding "
            f"{safetensors_file(256)} and the mapping files)"
        )
    return path


def expected_files(size: int, mapping_networks: Iterable[str]) -> list[str]:
    return [safetensors_file(size), *(MAPPING_FILES[name] for name in mapping_networks)]


def locate_checkpoints(
    directory: str | Path | None,
    size: int = 256,
    mapping_networks: Iterable[str] = (MAPPING_FOR_MODE["crop"],),
) -> CheckpointFiles:
    """Find the files for ``size`` and the mapping networks, or explain what is wrong."""
    if size not in SIZES:
        raise CheckpointError(f"unsupported render size {size}: choose one of {SIZES}")
    mapping_networks = tuple(mapping_networks)
    for name in mapping_networks:
        if name not in MAPPING_FILES:
            raise ValueError(f"unknown mapping network {name!r}")
    root = checkpoint_dir(directory)
    wanted = expected_files(size, mapping_networks)
    present = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    if not present:
        raise CheckpointError(f"checkpoint directory {root} is empty; expected {', '.join(wanted)}")

    safetensors = root / safetensors_file(size)
    legacy = [root / name for name in LEGACY_FILES if (root / name).exists()]
    if not safetensors.is_file():
        other_size = next(s for s in SIZES if s != size)
        if (root / safetensors_file(other_size)).is_file():
            raise CheckpointError(
                f"{root} has {safetensors_file(other_size)} but render size {size} needs "
                f"{safetensors_file(size)} (the {other_size} file only serves size {other_size})"
            )
        if legacy:
            raise CheckpointError(
                f"{root} has only legacy (--old_version) SadTalker checkpoints "
                f"({', '.join(p.name for p in legacy)}); this loader reads the V0.0.2 release: "
                f"{', '.join(wanted)}"
            )
        others = [name for name in present if name.endswith(".safetensors")]
        hint = f" (found {', '.join(others)})" if others else ""
        raise CheckpointError(
            f"missing {safetensors.name} in {root}{hint}; expected {', '.join(wanted)}"
        )

    mapping: dict[str, Path] = {}
    for name in mapping_networks:
        path = root / MAPPING_FILES[name]
        if not path.is_file():
            others = [n for n in present if n.startswith("mapping_") and n.endswith(".pth.tar")]
            hint = f" (found {', '.join(others)})" if others else ""
            raise CheckpointError(
                f"missing {path.name} in {root}{hint}; expected {', '.join(wanted)}"
            )
        mapping[name] = path

    if legacy:
        log.warning(
            "ignoring legacy (--old_version) checkpoint files %s in %s: using %s",
            ", ".join(p.name for p in legacy),
            root,
            safetensors.name,
        )
    return CheckpointFiles(root, size, safetensors, MappingProxyType(mapping), tuple(legacy))


# --- validation ---------------------------------------------------------------------------------


def _shape_text(shape: Shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def validate_layout(source: Path, found: TensorLayout, expected: TensorLayout) -> None:
    """Raise ``CheckpointError`` for the first unexpected, missing, mis-shaped or mis-typed key.

    Unexpected keys are reported first (in file order), then expected keys in official order.
    """
    unexpected = [key for key in found if key not in expected]
    if unexpected:
        more = f" ({len(unexpected)} unexpected keys in total)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{source}: unexpected key {unexpected[0]}{more}")
    missing = [key for key in expected if key not in found]
    for key, (shape, dtype) in expected.items():
        if key not in found:
            more = f" ({len(missing)} keys missing in total)" if len(missing) > 1 else ""
            raise CheckpointError(f"{source}: missing key {key}{more}")
        file_shape, file_dtype = found[key]
        if tuple(file_shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: shape mismatch for key {key}: file has {_shape_text(file_shape)}, "
                f"expected {_shape_text(shape)}"
            )
        if file_dtype != dtype:
            raise CheckpointError(
                f"{source}: dtype mismatch for key {key}: file has {file_dtype}, expected {dtype}"
            )


def read_safetensors_header(path: Path) -> dict[str, tuple[Shape, str]]:
    """Key -> (shape, dtype) from a safetensors header, checking the file is complete."""
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a safetensors file ({file_size} bytes)")
        header_size = int.from_bytes(prefix, "little")
        if header_size == 0 or header_size > _MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: not a safetensors file (implausible header length)")
        if 8 + header_size > file_size:
            raise CheckpointError(
                f"{path}: truncated file: header needs {8 + header_size} bytes, file has "
                f"{file_size}"
            )
        raw = handle.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")

    tensors: dict[str, tuple[Shape, str]] = {}
    payload_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype_name, itemsize = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header at key {key}") from None
        if end - begin != math.prod(shape) * itemsize or begin < 0:
            raise CheckpointError(f"{path}: corrupt safetensors header at key {key}")
        tensors[key] = (shape, dtype_name)
        payload_end = max(payload_end, end)
    if 8 + header_size + payload_end > file_size:
        raise CheckpointError(
            f"{path}: truncated file: needs {8 + header_size + payload_end} bytes, has {file_size}"
        )
    return tensors


def _owner(key: str) -> str | None:
    """The network a safetensors key belongs to (upstream: the name is contained in the key)."""
    owners = [name for name in SAFETENSORS_NETWORKS if name in key]
    return owners[0] if len(owners) == 1 else None


def validate_safetensors(path: Path) -> dict[str, tuple[Shape, str]]:
    """Check every key of the safetensors file against the official layout, network by network
    (every network with a key in the file must be complete); return the header."""
    found = read_safetensors_header(path)
    present = {_owner(key) for key in found} - {None}
    if not present:
        raise CheckpointError(
            f"{path}: not a SadTalker checkpoint (no key contains any of "
            f"{', '.join(SAFETENSORS_NETWORKS)})"
        )
    expected = {key: spec for key, spec in safetensors_layout().items() if _owner(key) in present}
    validate_layout(path, found, expected)
    return found


# --- reading ------------------------------------------------------------------------------------


def fold_spectral_norm(
    state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_orig`` / ``X.weight_u`` / ``X.weight_v`` by ``X.weight``.

    ``weight = weight_orig / sigma`` with ``sigma = u . (W v)``, W = weight_orig reshaped to
    (out, -1), using the stored u and v (what spectral norm computes in eval: no power
    iteration). Computed in float64, stored as float32. Other keys pass through, in order.
    """
    folded: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        stem, _, leaf = key.rpartition(".")
        if leaf in ("weight_u", "weight_v"):
            continue
        if leaf != "weight_orig":
            folded[key] = tensor
            continue
        prefix = f"{stem}." if stem else ""
        try:
            u = state[prefix + "weight_u"].double()
            v = state[prefix + "weight_v"].double()
        except KeyError as missing:
            raise CheckpointError(
                f"{source}: spectral norm of {key} lacks {missing.args[0]}"
            ) from None
        matrix = tensor.double().reshape(tensor.shape[0], -1)
        if u.shape != (matrix.shape[0],) or v.shape != (matrix.shape[1],):
            raise CheckpointError(f"{source}: spectral-norm vectors of {key} do not fit its shape")
        sigma = torch.dot(u, matrix @ v)
        folded[prefix + "weight"] = (tensor.double() / sigma).to(torch.float32)
    for key in state:
        stem, _, leaf = key.rpartition(".")
        prefix = f"{stem}." if stem else ""
        if leaf in ("weight_u", "weight_v") and prefix + "weight_orig" not in state:
            raise CheckpointError(f"{source}: {key} without {prefix}weight_orig")
    return folded


def _read_safetensors_network(
    path: Path, network: str, keys: Iterable[str]
) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    prefix = f"{network}."
    source = f"{path} ({network})"
    state: dict[str, torch.Tensor] = {}
    # Spectral-norm triples are folded as soon as they are complete, so the unfolded
    # weight_orig tensors never accumulate next to the folded ones.
    pending: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in keys:
                module_key = key.replace(prefix, "", 1)
                stem, _, leaf = module_key.rpartition(".")
                tensor = handle.get_tensor(key)
                if leaf not in _SN_SUFFIXES:
                    state[module_key] = tensor
                    continue
                group = pending.setdefault(stem, {})
                group[module_key] = tensor
                if len(group) == len(_SN_SUFFIXES):
                    state.update(fold_spectral_norm(pending.pop(stem), source=source))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read {network} tensors: {exc}") from None
    for group in pending.values():
        fold_spectral_norm(group, source=source)  # raises: an incomplete triple
    return state


def load_mapping_state(path: Path, expected: TensorLayout) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)["mapping"]``, checked against ``expected``."""
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint") from None
    elif magic[:1] != b"\x80":
        raise CheckpointError(f"{path}: not a torch checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        if reason and reason[0].startswith("Weights only load failed"):
            detail = next((line for line in reason if "Unsupported" in line), "")
            suffix = f" ({detail.strip()})" if detail else ""
            raise CheckpointError(f"refusing to unpickle code from {path}{suffix}") from None
        first = reason[0] if reason else type(exc).__name__
        raise CheckpointError(f"{path}: not a torch checkpoint ({first})") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint ({first})") from None
    state_dict = checkpoint.get(MAPPING_STATE_KEY) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state_dict, Mapping):
        keys = list(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path}: no {MAPPING_STATE_KEY!r} state dict in the checkpoint (found {keys})"
        )
    state = dict(state_dict)
    bad = next((key for key, value in state.items() if not isinstance(value, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: mapping entry {bad} is not a tensor")
    found = {key: (tuple(value.shape), _dtype_name(value.dtype)) for key, value in state.items()}
    validate_layout(path, found, expected)
    return state


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class SadTalkerWeights:
    """Validated state dicts (module keys, spectral norm folded) per network.

    ``state_dicts`` holds the requested networks (names as in ``LOADABLE_NETWORKS``);
    ``skipped`` names the networks that were validated but deliberately not loaded.
    """

    files: CheckpointFiles
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]]
    skipped: Mapping[str, str] = field(default_factory=dict)

    def state_dict(self, network: str) -> Mapping[str, torch.Tensor]:
        try:
            return self.state_dicts[network]
        except KeyError:
            raise KeyError(
                f"network {network!r} was not loaded (loaded: {', '.join(self.state_dicts)})"
            ) from None


def load_weights(
    directory: str | Path | None,
    size: int = 256,
    networks: Iterable[str] = DEFAULT_NETWORKS,
) -> SadTalkerWeights:
    """Validate the whole checkpoint set, then read the requested networks' tensors."""
    networks = tuple(dict.fromkeys(networks))
    unknown = [name for name in networks if name not in LOADABLE_NETWORKS]
    if unknown:
        raise ValueError(f"unknown networks {unknown}; loadable: {LOADABLE_NETWORKS}")
    mapping_networks = [name for name in networks if name in MAPPING_FILES]
    files = locate_checkpoints(directory, size, mapping_networks)
    header = validate_safetensors(files.safetensors)

    layout = official_layout()
    mapping_states = {
        name: load_mapping_state(files.mapping[name], layout[name]) for name in mapping_networks
    }
    state_dicts: dict[str, Mapping[str, torch.Tensor]] = {}
    for name in networks:
        if name in mapping_states:
            state_dicts[name] = MappingProxyType(mapping_states[name])
        else:
            keys = [key for key in header if _owner(key) == name]
            if not keys:
                held = [
                    net for net in SAFETENSORS_NETWORKS if any(_owner(k) == net for k in header)
                ]
                raise CheckpointError(
                    f"{files.safetensors}: holds no {name} tensors (it holds {', '.join(held)})"
                )
            state_dicts[name] = MappingProxyType(
                _read_safetensors_network(files.safetensors, name, keys)
            )
    log.info("loaded %s from %s", ", ".join(networks), files.describe())
    return SadTalkerWeights(files, MappingProxyType(state_dicts), SKIPPED_NETWORKS)


# --- building modules ---------------------------------------------------------------------------


def _kp_detector() -> nn.Module:
    from msadtalker.models.kp_detector import KPDetector

    return KPDetector()


def _generator() -> nn.Module:
    from msadtalker.models.generator import OcclusionAwareSPADEGenerator

    return OcclusionAwareSPADEGenerator()


# name -> (factory, whether the factory may run on the meta device: only for modules that
# create no tensors other than parameters and persistent buffers)
_FACTORIES: Mapping[str, tuple[Callable[[], nn.Module], bool]] = MappingProxyType(
    {
        "audio2exp": (ExpNet, True),
        "face_3drecon": (FaceReconNet, True),
        "mapping": (lambda: MappingNet(COEFF_NC["mapping"]), True),
        "mapping_full": (lambda: MappingNet(COEFF_NC["mapping_full"]), True),
        "kp_extractor": (_kp_detector, False),
        "generator": (_generator, False),
    }
)


def new_network(network: str) -> nn.Module:
    """``network`` with random initial values, in eval mode (for benchmarks: the cost of a
    network does not depend on its values)."""
    factory, _ = _FACTORIES[network]
    return factory().eval()


def build_network(network: str, weights: SadTalkerWeights) -> nn.Module:
    """Construct ``network`` and load its weights strictly: eval mode, float32, no grad."""
    factory, on_meta = _FACTORIES[network]
    state = weights.state_dict(network)
    if on_meta:
        with torch.device("meta"):
            module = factory()
    else:
        module = factory()
    # assign=True adopts the loaded tensors instead of copying them (one copy in memory).
    module.load_state_dict(state, strict=True, assign=True)
    module.eval()
    module.requires_grad_(False)
    return module


def build_view(network: str, generator: nn.Module) -> nn.Module:
    """The generator view ``network`` (``catalog.VIEWS``) over a built generator; it shares the
    generator's weights (no copy)."""
    from msadtalker.models.generator import (
        FrameRenderer,
        OcclusionAwareSPADEGenerator,
        SourceEncoder,
    )

    views: Mapping[str, Callable[[OcclusionAwareSPADEGenerator], nn.Module]] = {
        "generator_source_encoder": SourceEncoder,
        "generator_render": FrameRenderer,
    }
    if network not in views:
        raise ValueError(f"{network!r} is not a generator view (views: {', '.join(VIEWS)})")
    if not isinstance(generator, OcclusionAwareSPADEGenerator):
        raise TypeError(f"{network} needs the generator, got {type(generator).__name__}")
    return views[network](generator).eval()


def build_expnet(weights: SadTalkerWeights) -> ExpNet:
    module = build_network("audio2exp", weights)
    assert isinstance(module, ExpNet)
    return module


def build_face_recon(weights: SadTalkerWeights) -> FaceReconNet:
    module = build_network("face_3drecon", weights)
    assert isinstance(module, FaceReconNet)
    return module


def build_mapping(weights: SadTalkerWeights, coeff_nc: int = 70) -> MappingNet:
    module = build_network(mapping_network(coeff_nc), weights)
    assert isinstance(module, MappingNet)
    return module


# --- fingerprint --------------------------------------------------------------------------------

_SAMPLE_BYTES = 64 * 1024
_SAMPLES = 32


def checkpoint_fingerprint(directory: str | Path | None, size: int = 256) -> str:
    """Content fingerprint of the checkpoint set for ``size`` (key for caching avatars).

    Hashes file names, sizes, and 32 evenly spaced 64 KiB samples of each file (the
    safetensors header included) of the safetensors file and the mapping files present. It
    does not depend on paths or modification times, so a copied checkpoint keeps its
    fingerprint, and reads about 2 MiB per file.
    """
    root = checkpoint_dir(directory)
    present = [name for name in MAPPING_FILES if (root / MAPPING_FILES[name]).is_file()]
    files = locate_checkpoints(root, size, present)
    digest = hashlib.sha256()
    for path in (files.safetensors, *files.mapping.values()):
        file_size = path.stat().st_size
        digest.update(f"{path.name}\0{file_size}\0".encode())
        step = max(file_size // _SAMPLES, 1)
        with path.open("rb") as handle:
            for offset in range(0, file_size, step)[:_SAMPLES]:
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE_BYTES))
            handle.seek(max(file_size - _SAMPLE_BYTES, 0))
            digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]
