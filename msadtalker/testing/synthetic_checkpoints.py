"""Synthetic SadTalker checkpoints: official file names, keys, shapes and dtypes, seeded values.

The values follow the recipe of the official golden data (the ``make_synthetic_checkpoint.py``
that produced the golden outputs with the official SadTalker code, commit cd4c0465): with the
same seed, every tensor written here is bit-identical to the recipe's, which
``tests/data/synthetic_checkpoint_hashes.json`` records per tensor and the tests check. So the
golden outputs of the official code are reproducible from these files.

Recipe (a pure function of the seed and the tensor's name):

* Each tensor has its own generator ``PCG64(SeedSequence([seed, crc32(tag)]))``; ``tag`` is
  ``sadtalker/<network>.<key>`` for the networks of the safetensors file and
  ``mapping_00229/<key>`` / ``mapping_00109/<key>`` for the two MappingNets (the file's stem).
* Conv / Linear / ConvTranspose weights (``weight`` or ``weight_orig``, 2+ dims): float32
  standard normals times ``gain / sqrt(fan_in)`` (``GAINS``, default sqrt 2); the PoseVAE's
  ConvTranspose ``upsample`` layers take one tap per input channel (fan_in = shape[0]); then
  ``COLUMN_SCALES`` (the 73-d MappingNet's s, tx, ty input columns, ~128 px, times 0.01).
* Biases: ``0.02 N``. BatchNorm (a 1-D ``weight`` with a sibling ``running_mean``): weight
  ``1 + 0.05 N``, bias ``0.05 N``, running_mean ``0.05 N``, running_var ``U[0.5, 1.5)`` (float64
  draws cast to float32), ``num_batches_tracked`` int64 0 (0-dim). PoseVAE ``classbias``:
  ``0.1 N``.
* ``kp_extractor.down.weight``: the exact anti-alias Gaussian (sigma 1.5, 13 taps) that the
  official KPDetector computes itself, in float32 with torch, one copy per channel.
* Spectral norm: ``weight_u`` / ``weight_v`` are the leading left / right singular vectors of
  ``weight_orig.reshape(out, -1)`` (float64 SVD, sign such that v's largest-magnitude entry is
  positive), stored as float32, so sigma = u . (W v) is the true spectral norm.

The gains keep every network's outputs finite, varied and unsaturated with the official code.
Two kinds of tensor come out of library reductions whose last bits may differ between BLAS /
CPU builds (the SVD vectors and the Gaussian's normalising sum); ``check_digests`` accepts those
when their bits differ but their defining property holds, and says so.

torch (the Gaussian, writing files) and safetensors are imported only where needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np

from msadtalker.catalog import MAPPING_FILES, MAPPING_STATE_KEY, SAFETENSORS_NETWORKS
from msadtalker.catalog import safetensors_file as safetensors_name

ALL_NETWORKS = (*SAFETENSORS_NETWORKS, *MAPPING_FILES)

SQRT2 = math.sqrt(2.0)
BIAS_STD = 0.02
BN_NOISE = 0.05
CLASSBIAS_STD = 0.1
RUNNING_VAR_RANGE = (0.5, 1.5)
AA_SCALE = 0.25  # KPDetector's anti-alias downsampling factor (sigma 1.5, 13 taps)
SAFETENSORS_METADATA = MappingProxyType({"format": "pt"})

# Conv / Linear gains per network: (pattern fully matching the key without the network prefix,
# gain); the first match wins, default sqrt 2 (He gain for ReLU nets).
_MAPPING_GAINS = (
    (r"fc_(yaw|pitch|roll)\.weight", 0.7),
    (r"fc_t\.weight", 0.1),
    (r"fc_exp\.weight", 0.1),
    (r"first\.0\.weight", 1.0),
    (r"encoder\d\.1\.weight", 1.0),
)
GAINS: Mapping[str, tuple[tuple[str, float], ...]] = MappingProxyType(
    {
        # ResNet-50 with eval-mode BN: damp the last conv of each bottleneck (the residual
        # stream would grow ~2x per block) and the 1x1 output heads (angles most).
        "face_3drecon": (
            (r"backbone\.layer\d\.\d+\.conv3\.weight", 0.3),
            (r"final_layers\.3\.weight", 0.2),
            (r"final_layers\.\d\.weight", 0.5),
        ),
        # wav2lip-style audio encoders: the residual 3x3 convs; ExpNet's linear head.
        "audio2exp": (
            (r"audio_encoder\.(1|2|4|5|7|8|10)\.conv_block\.0\.weight", 0.3),
            (r"mapping1\.weight", 0.35),
        ),
        "audio2pose": (
            (r"audio_encoder\.audio_encoder\.(1|2|4|5|7|8|10)\.conv_block\.0\.weight", 0.3),
            (r".*(linear_audio|pose_linear|linear_means|linear_logvar)\.weight", 1.0),
        ),
        # Keypoint heat-map logits (softmax with temperature 0.1 over 16x64x64).
        "kp_extractor": ((r"kp\.weight", 1.0),),
        # Heads and non-ReLU 1x1 convs.
        "generator": (
            (r"dense_motion_network\.mask\.weight", 1.0),
            (r"dense_motion_network\.occlusion\.weight", 0.25),
            (r"decoder\.conv_img\.weight", 1.0),
            (r"decoder\..*mlp_(gamma|beta)\.weight", 0.3),
            (r"(second|fourth)\.weight", 1.0),
        ),
        "mapping": _MAPPING_GAINS,
        "mapping_full": _MAPPING_GAINS,
    }
)
# (key, first column, end column, factor) applied after the gain: the 73-d MappingNet gets the
# alignment (s, tx, ty) in input channels 70..72 and tx, ty are pixel coordinates (~128).
COLUMN_SCALES: Mapping[str, tuple[tuple[str, int, int, float], ...]] = MappingProxyType(
    {"mapping_full": (("first.0.weight", 70, 73, 0.01),)}
)


class Kind(StrEnum):
    """How a tensor's values are made."""

    COUNTER = "num_batches_tracked"
    AA_KERNEL = "anti-alias Gaussian"
    CLASSBIAS = "classbias"
    BN_WEIGHT = "batch-norm weight"
    BN_BIAS = "batch-norm bias"
    BN_MEAN = "batch-norm running_mean"
    BN_VAR = "batch-norm running_var"
    BIAS = "bias"
    WEIGHT = "weight"
    SPECTRAL_U = "spectral-norm u"
    SPECTRAL_V = "spectral-norm v"


# Kinds whose last bits depend on the numerical libraries (see the module docstring).
PLATFORM_DEPENDENT = frozenset({Kind.AA_KERNEL, Kind.SPECTRAL_U, Kind.SPECTRAL_V})


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a network: module key (no prefix), shape, dtype name."""

    network: str
    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def file_key(self) -> str:
        """The key in its file: prefixed in the safetensors file, bare in a mapping file."""
        return f"{self.network}.{self.key}" if self.network in SAFETENSORS_NETWORKS else self.key

    @property
    def tag(self) -> str:
        return f"{group_of(self.network)}/{self.file_key}"

    @property
    def stem(self) -> str:
        """The key up to and including its last dot ('' for a top-level key)."""
        return self.key[: len(self.key) - len(self.leaf)]

    @property
    def leaf(self) -> str:
        return self.key.rpartition(".")[2]


@dataclass(frozen=True)
class Rule:
    """The recipe for one tensor. ``gain_pattern`` is the ``GAINS`` entry that matched (None:
    the default gain); ``transposed`` marks a ConvTranspose fan-in."""

    kind: Kind
    gain: float | None = None
    gain_pattern: str | None = None
    fan_in: int | None = None
    transposed: bool = False
    columns: tuple[int, int, float] | None = None

    @property
    def label(self) -> str:
        """A name for the rule, distinct for every gain rule and fan-in / column variant."""
        if self.kind is not Kind.WEIGHT:
            return str(self.kind)
        parts = [f"weight gain {self.gain_pattern or 'default'}"]
        if self.transposed:
            parts.append("transposed fan-in")
        if self.columns is not None:
            parts.append("column scale")
        return ", ".join(parts)


class RecipeMismatch(AssertionError):
    """Tensors differ from the recorded digests of the recipe."""


# --- layout -------------------------------------------------------------------------------------


def group_of(network: str) -> str:
    """The tag group: ``sadtalker`` for the safetensors file, the file stem for a mapping net."""
    if network in SAFETENSORS_NETWORKS:
        return "sadtalker"
    if network in MAPPING_FILES:
        return MAPPING_FILES[network].split("-", 1)[0]
    raise ValueError(f"unknown network {network!r}; known: {', '.join(ALL_NETWORKS)}")


def mapping_epoch(network: str) -> int:
    """The epoch stored beside the mapping state dict: the number in the official file name."""
    match = re.fullmatch(r"mapping_(\d+)-model\.pth\.tar", MAPPING_FILES[network])
    if match is None:
        raise ValueError(f"unexpected mapping file name {MAPPING_FILES[network]}")
    return int(match.group(1))


@cache
def network_specs(network: str) -> tuple[TensorSpec, ...]:
    """Every tensor of ``network`` in the official key order (packaged layout)."""
    group_of(network)  # validates the name
    text = resources.files("msadtalker").joinpath("assets/sadtalker_layout.json").read_text()
    tensors = json.loads(text)["networks"][network]
    return tuple(
        TensorSpec(network, key, tuple(shape), dtype) for key, (shape, dtype) in tensors.items()
    )


@cache
def _keys(network: str) -> frozenset[str]:
    return frozenset(spec.key for spec in network_specs(network))


def _checked_networks(networks: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(networks))
    unknown = [name for name in wanted if name not in ALL_NETWORKS]
    if unknown or not wanted:
        raise ValueError(f"networks must be a non-empty subset of {ALL_NETWORKS}, got {wanted}")
    return tuple(name for name in ALL_NETWORKS if name in wanted)  # canonical order


# --- rules --------------------------------------------------------------------------------------


def _fan_in(spec: TensorSpec) -> tuple[int, bool]:
    """(fan_in, transposed) of a Conv1d/2d/3d, Linear or ConvTranspose2d weight."""
    if len(spec.shape) == 2:
        return spec.shape[1], False
    if spec.network == "audio2pose" and spec.key.endswith("upsample.weight"):
        return spec.shape[0], True  # kernel (2, 1), stride (2, 1): one tap per input channel
    return spec.shape[1] * math.prod(spec.shape[2:]), False


def rule_for(spec: TensorSpec) -> Rule:
    """The recipe rule of ``spec`` (decided from its name, shape and its siblings' names)."""
    leaf = spec.leaf
    batch_norm = f"{spec.stem}running_mean" in _keys(spec.network)
    if spec.dtype == "int64":
        if leaf != "num_batches_tracked":
            raise ValueError(f"{spec.tag}: int64 tensor that is not a BatchNorm counter")
        return Rule(Kind.COUNTER)
    if leaf == "weight_u":
        return Rule(Kind.SPECTRAL_U)
    if leaf == "weight_v":
        return Rule(Kind.SPECTRAL_V)
    if spec.network == "kp_extractor" and spec.key == "down.weight":
        return Rule(Kind.AA_KERNEL)
    if leaf == "classbias":
        return Rule(Kind.CLASSBIAS)
    if leaf == "running_mean":
        return Rule(Kind.BN_MEAN)
    if leaf == "running_var":
        return Rule(Kind.BN_VAR)
    if leaf == "weight" and len(spec.shape) == 1:
        if not batch_norm:
            raise ValueError(f"{spec.tag}: 1-D weight without a running_mean sibling")
        return Rule(Kind.BN_WEIGHT)
    if leaf == "bias":
        return Rule(Kind.BN_BIAS if batch_norm else Kind.BIAS)
    if leaf in ("weight", "weight_orig") and len(spec.shape) >= 2:
        pattern, gain = next(
            ((p, g) for p, g in GAINS.get(spec.network, ()) if re.fullmatch(p, spec.key)),
            (None, SQRT2),
        )
        fan_in, transposed = _fan_in(spec)
        columns = next(
            (
                (c0, c1, f)
                for key, c0, c1, f in COLUMN_SCALES.get(spec.network, ())
                if key == spec.key
            ),
            None,
        )
        return Rule(Kind.WEIGHT, gain, pattern, fan_in, transposed, columns)
    raise ValueError(f"{spec.tag}: no recipe rule for shape {spec.shape}")


# --- values -------------------------------------------------------------------------------------


def tensor_rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed), zlib.crc32(tag.encode("utf-8"))]))
    )


def anti_alias_kernel(channels: int, scale: float = AA_SCALE) -> np.ndarray:
    """The official KPDetector's Gaussian (channels, 1, k, k), float32, computed with torch in
    the official operation order (so the bits match the official module's own buffer)."""
    import torch

    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    taps = torch.arange(size, dtype=torch.float32)
    mean = (size - 1) / 2
    gauss = torch.exp(-((taps - mean) ** 2) / (2 * sigma**2))
    kernel = gauss[:, None] * gauss[None, :]
    kernel = kernel / torch.sum(kernel)
    values: np.ndarray = kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1).numpy()
    return values.astype(np.float32)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _drawn(spec: TensorSpec, rule: Rule, seed: int) -> np.ndarray:
    """A tensor that is not derived from another one."""
    rng = tensor_rng(seed, spec.tag)
    shape = spec.shape
    if rule.kind is Kind.COUNTER:
        return np.zeros(shape, dtype=np.int64)
    if rule.kind is Kind.AA_KERNEL:
        return anti_alias_kernel(shape[0])
    if rule.kind is Kind.CLASSBIAS:
        return _normal(rng, shape, CLASSBIAS_STD)
    if rule.kind in (Kind.BN_MEAN, Kind.BN_BIAS):
        return _normal(rng, shape, BN_NOISE)
    if rule.kind is Kind.BN_VAR:
        return rng.uniform(*RUNNING_VAR_RANGE, size=shape).astype(np.float32)
    if rule.kind is Kind.BN_WEIGHT:
        return np.float32(1.0) + _normal(rng, shape, BN_NOISE)
    if rule.kind is Kind.BIAS:
        return _normal(rng, shape, BIAS_STD)
    if rule.kind is Kind.WEIGHT:
        assert rule.gain is not None and rule.fan_in is not None
        values = _normal(rng, shape, rule.gain / math.sqrt(rule.fan_in))
        if rule.columns is not None:
            first, end, factor = rule.columns
            values[:, first:end] *= np.float32(factor)
        return values
    raise ValueError(f"{spec.tag}: {rule.kind} is derived, not drawn")


def singular_vectors(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) float32: leading singular vectors of ``weight.reshape(out, -1)`` in float64, with
    v's largest-magnitude entry positive."""
    matrix = weight.reshape(weight.shape[0], -1).astype(np.float64)
    left, _, right = np.linalg.svd(matrix, full_matrices=False)
    u, v = left[:, 0], right[0]
    if v[np.argmax(np.abs(v))] < 0:
        u, v = -u, -v
    return u.astype(np.float32), v.astype(np.float32)


def network_tensors(
    network: str, seed: int, keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """``network``'s tensors for ``seed`` (module keys, official order); ``keys`` limits them
    to a subset (a spectral-norm vector draws its ``weight_orig`` too, without keeping it)."""
    specs = network_specs(network)
    wanted = None if keys is None else set(keys)
    if wanted is not None:
        unknown = wanted - {spec.key for spec in specs}
        if unknown:
            raise KeyError(f"{network} has no tensor {sorted(unknown)[0]}")
    by_key = {spec.key: spec for spec in specs}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if wanted is not None and spec.key not in wanted:
            continue
        rule = rule_for(spec)
        if rule.kind in (Kind.SPECTRAL_U, Kind.SPECTRAL_V):
            continue  # made with their weight_orig below
        out[spec.key] = _drawn(spec, rule, seed)
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # stem -> (u, v), one SVD each
    for spec in specs:
        if wanted is not None and spec.key not in wanted:
            continue
        if rule_for(spec).kind not in (Kind.SPECTRAL_U, Kind.SPECTRAL_V):
            continue
        if spec.stem not in vectors:
            orig_key = f"{spec.stem}weight_orig"
            if orig_key in out:
                weight = out[orig_key]
            else:
                orig = by_key[orig_key]
                weight = _drawn(orig, rule_for(orig), seed)
            vectors[spec.stem] = singular_vectors(weight)
        u, v = vectors[spec.stem]
        out[spec.key] = u if spec.leaf == "weight_u" else v
    return {spec.key: out[spec.key] for spec in specs if spec.key in out}


# --- digests ------------------------------------------------------------------------------------


def tensor_digest(array: np.ndarray) -> str:
    """sha256 of ``"<dtype> <shape as a JSON list>\\n"`` followed by the raw little-endian,
    C-order bytes, e.g. ``b"float32 [64, 3, 3, 3]\\n" + data`` (0-dim: ``"int64 []"``)."""
    array = np.asarray(array)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
    header = f"{array.dtype.name} {json.dumps(list(array.shape))}\n".encode()
    return hashlib.sha256(header + data).hexdigest()


def _property_holds(spec: TensorSpec, value: np.ndarray, tensors: Mapping[str, np.ndarray]) -> bool:
    """For a platform-dependent tensor whose bits differ: does it satisfy its definition?"""
    kind = rule_for(spec).kind
    if kind is Kind.AA_KERNEL:
        size = value.shape[-1]
        sigma = (1.0 / AA_SCALE - 1.0) / 2.0
        gauss = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
        exact = np.outer(gauss, gauss) / np.outer(gauss, gauss).sum()
        return bool(np.abs(value.astype(np.float64) - exact).max() <= 1e-7)
    orig_key = f"{spec.stem}weight_orig"
    weight = tensors.get(orig_key)
    if weight is None:  # the caller checks the triple together
        return False
    matrix = weight.reshape(weight.shape[0], -1).astype(np.float64)
    u_key, v_key = f"{spec.stem}weight_u", f"{spec.stem}weight_v"
    if u_key not in tensors or v_key not in tensors:
        return False
    u = tensors[u_key].astype(np.float64)
    v = tensors[v_key].astype(np.float64)
    top = float(np.linalg.svd(matrix, compute_uv=False)[0])
    unit = abs(np.linalg.norm(u) - 1.0) <= 1e-6 and abs(np.linalg.norm(v) - 1.0) <= 1e-6
    sigma = float(u @ (matrix @ v))
    return bool(unit and abs(sigma - top) <= 1e-6 * top and v[np.argmax(np.abs(v))] > 0)


def check_digests(
    network: str, tensors: Mapping[str, np.ndarray], expected: Mapping[str, str]
) -> list[str]:
    """Compare ``tensors`` (module keys) with recorded digests; every key of ``tensors`` must be
    recorded. Raises ``RecipeMismatch`` naming the first differing tensors; returns notes for
    platform-dependent tensors accepted by their defining property instead of their bits."""
    specs = {spec.key: spec for spec in network_specs(network)}
    notes: list[str] = []
    wrong: list[str] = []
    for key, value in tensors.items():
        if key not in expected:
            raise RecipeMismatch(f"{network}.{key}: no recorded digest")
        if tensor_digest(value) == expected[key]:
            continue
        spec = specs[key]
        if rule_for(spec).kind in PLATFORM_DEPENDENT and _property_holds(spec, value, tensors):
            notes.append(
                f"{network}.{key} ({rule_for(spec).kind}): bits differ from the recorded "
                "recipe output (numerical library build), defining property holds"
            )
            continue
        wrong.append(key)
    if wrong:
        more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        raise RecipeMismatch(
            f"{network}: tensor {wrong[0]}{more} differ from the recorded recipe digests"
        )
    return notes


# --- files --------------------------------------------------------------------------------------


def checkpoint_files(networks: Iterable[str], size: int = 256) -> list[str]:
    """The file names ``write_checkpoints`` produces for ``networks``."""
    wanted = _checked_networks(networks)
    names = [safetensors_name(size)] if any(n in SAFETENSORS_NETWORKS for n in wanted) else []
    return names + [MAPPING_FILES[n] for n in wanted if n in MAPPING_FILES]


def write_checkpoints(
    out_dir: Path,
    seed: int,
    networks: Sequence[str] = ALL_NETWORKS,
    size: int = 256,
    expected: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Write the official files for ``networks`` into ``out_dir`` (which must exist).

    ``SadTalker_V0.0.2_<size>.safetensors`` holds the chosen safetensors networks under their
    prefixes (all five make the official file; the tensors do not depend on ``size``, only the
    name does); ``mapping_00229-model.pth.tar`` / ``mapping_00109-model.pth.tar`` are
    ``torch.save({"mapping": OrderedDict, "epoch": N})``. With ``expected`` (network -> key ->
    digest), every tensor is checked before its file is written (``RecipeMismatch``).
    Returns the notes of ``check_digests``.
    """
    import torch
    from safetensors.torch import save_file

    wanted = _checked_networks(networks)
    notes: list[str] = []

    def made(network: str) -> dict[str, np.ndarray]:
        tensors = network_tensors(network, seed)
        if expected is not None:
            if network not in expected:
                raise RecipeMismatch(f"no recorded digests for {network} (seed {seed})")
            notes.extend(check_digests(network, tensors, expected[network]))
        return tensors

    flat: dict[str, torch.Tensor] = {}
    for network in wanted:
        if network in SAFETENSORS_NETWORKS:
            for key, value in made(network).items():
                flat[f"{network}.{key}"] = torch.from_numpy(value)
    if flat:
        save_file(flat, str(out_dir / safetensors_name(size)), metadata=dict(SAFETENSORS_METADATA))
        flat.clear()
    for network in wanted:
        if network in MAPPING_FILES:
            state = {key: torch.from_numpy(value) for key, value in made(network).items()}
            checkpoint = {MAPPING_STATE_KEY: OrderedDict(state), "epoch": mapping_epoch(network)}
            torch.save(checkpoint, out_dir / MAPPING_FILES[network])
    return notes
