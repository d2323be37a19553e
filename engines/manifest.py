"""The manifest of an export directory: what was exported, from which checkpoints, how well.

``msadtalker export`` writes ``manifest.json`` beside the exported files (``export.manifest``
builds it); the onnxruntime and TensorRT backends read it here and refuse to serve a file
that does not belong to the checkpoint set and render size they were opened for, whose
tensors differ from the network's current ``ExportContract``, that failed its parity check
at export, or whose bytes changed since (sha256). It lives in ``engines`` because the
backends consume it (imports go export -> engines, never back).

Layout (``format_version`` 1)::

    {"format_version": 1, "size": 256, "checkpoint_fingerprint": "<16 hex>",
     "checkpoint_files": ["SadTalker_V0.0.2_256.safetensors", ...], "created": "<ISO time>",
     "versions": {"torch": "...", "onnx": "...", "onnxruntime": "...", "msadtalker": "..."},
     "networks": {"audio2exp": {
         "file": "audio2exp.onnx", "sha256": "...", "bytes": 11443210, "opset": 20,
         "contract": "expnet",
         "inputs": [{"name": "mel", "shape": [10, 1, 80, 16], "dynamic": {"0": "batch"},
                     "dtype": "float32"}, ...],
         "outputs": [...],
         "parity": {"max_abs_diff": 4e-06, "reference_scale": 3.2, "tolerance": 3.2e-04,
                    "ok": true, "batch_sizes": [10, 11], "mean_abs_diff": 5e-07,
                    "mean_tolerance": null, "frac_off": 0.0, "frac_tolerance": null},
         "plan": null}}}

``plan`` is filled by a TensorRT build: file, sha256, bytes, TensorRT version, GPU name and
compute capability, precision, the optimisation profile per input and its parity against
onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from engines.base import EngineUnavailable
from msadtalker.models.contract import ExportContract, TensorSpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
EXPORTS_ENV = "MSADTALKER_EXPORTS"
_HASH_BLOCK = 1 << 20


class ManifestError(EngineUnavailable):
    """An export directory's manifest is missing, unreadable or does not fit; one line."""


def export_dir(exports: str | Path | None, checkpoints: Path, size: int) -> Path:
    """Where exported files live: ``exports``, else ``$MSADTALKER_EXPORTS``, else
    ``<checkpoints>/export_<size>`` (the default of ``msadtalker export --out``).

    The registry's opener signature carries no export directory, hence the environment
    variable and the default beside the checkpoints."""
    if exports is None or str(exports) == "":
        exports = os.environ.get(EXPORTS_ENV) or None
    if exports is None:
        return checkpoints / f"export_{size}"
    return Path(exports).expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _shape_text(shape: Sequence[int], dynamic: Mapping[int, str]) -> str:
    return "(" + ", ".join(dynamic.get(i, str(n)) for i, n in enumerate(shape)) + ")"


def _bounded(label: str, value: float, bound: float) -> str:
    return f"{label} {value:.3g} {'<=' if value <= bound else '>'} {bound:.3g}"


@dataclass(frozen=True)
class TensorEntry:
    """A contract tensor as recorded at export time."""

    name: str
    shape: tuple[int, ...]
    dynamic: Mapping[int, str]
    dtype: str

    @classmethod
    def from_spec(cls, spec: TensorSpec) -> TensorEntry:
        return cls(spec.name, tuple(spec.shape), MappingProxyType(dict(spec.dynamic)), spec.dtype)

    def describe(self) -> str:
        return f"{self.name} {_shape_text(self.shape, self.dynamic)} {self.dtype}"

    def same_as(self, other: TensorEntry) -> bool:
        # Example sizes on dynamic axes do not constrain the file, only fixed axes do.
        if (self.name, self.dtype, dict(self.dynamic)) != (
            other.name,
            other.dtype,
            dict(other.dynamic),
        ):
            return False
        if len(self.shape) != len(other.shape):
            return False
        return all(
            axis in self.dynamic or a == b
            for axis, (a, b) in enumerate(zip(self.shape, other.shape, strict=True))
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dynamic": {str(axis): name for axis, name in sorted(self.dynamic.items())},
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorEntry:
        dynamic = {int(axis): str(name) for axis, name in dict(data.get("dynamic", {})).items()}
        return cls(
            str(data["name"]),
            tuple(int(n) for n in data["shape"]),
            MappingProxyType(dynamic),
            str(data["dtype"]),
        )


@dataclass(frozen=True)
class ParityEntry:
    """onnxruntime vs our torch module on the contract's example inputs, at export.

    Figures are the worst over all outputs and over ``batch_sizes`` (the example batch and
    one more, which exercises the dynamic batch axis). ``ok``: ``max_abs_diff <= tolerance``
    and, where a bound is set, ``mean_abs_diff <= mean_tolerance`` and ``frac_off`` (share of
    values off by more than 1e-3) ``<= frac_tolerance``."""

    max_abs_diff: float
    reference_scale: float
    tolerance: float
    ok: bool
    batch_sizes: tuple[int, ...]
    mean_abs_diff: float | None = None
    mean_tolerance: float | None = None
    frac_off: float | None = None
    frac_tolerance: float | None = None

    def describe(self) -> str:
        """``max |diff| 4e-06 <= 0.00032`` (+ mean and fraction where bounded)."""
        parts = [_bounded("max |diff|", self.max_abs_diff, self.tolerance)]
        if self.mean_tolerance is not None and self.mean_abs_diff is not None:
            parts.append(_bounded("mean |diff|", self.mean_abs_diff, self.mean_tolerance))
        if self.frac_tolerance is not None and self.frac_off is not None:
            parts.append(_bounded("off by > 1e-3", self.frac_off, self.frac_tolerance))
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "reference_scale": self.reference_scale,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "batch_sizes": list(self.batch_sizes),
            "mean_abs_diff": self.mean_abs_diff,
            "mean_tolerance": self.mean_tolerance,
            "frac_off": self.frac_off,
            "frac_tolerance": self.frac_tolerance,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParityEntry:
        def optional(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            float(data["max_abs_diff"]),
            float(data["reference_scale"]),
            float(data["tolerance"]),
            bool(data["ok"]),
            tuple(int(n) for n in data["batch_sizes"]),
            optional("mean_abs_diff"),
            optional("mean_tolerance"),
            optional("frac_off"),
            optional("frac_tolerance"),
        )


@dataclass(frozen=True)
class PlanEntry:
    """A serialized TensorRT engine built from the network's ONNX file."""

    file: str
    sha256: str
    bytes: int
    tensorrt: str
    device_name: str
    compute_capability: str
    precision: str
    profiles: Mapping[str, Mapping[str, tuple[int, ...]]]  # input -> min / opt / max shape
    parity: ParityEntry | None = None  # vs onnxruntime on the contract's example inputs

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "tensorrt": self.tensorrt,
            "device_name": self.device_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "profiles": {
                name: {key: list(shape) for key, shape in ranges.items()}
                for name, ranges in self.profiles.items()
            },
            "parity": None if self.parity is None else self.parity.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanEntry:
        profiles = {
            str(name): MappingProxyType(
                {str(key): tuple(int(n) for n in shape) for key, shape in ranges.items()}
            )
            for name, ranges in dict(data["profiles"]).items()
        }
        return cls(
            str(data["file"]),
            str(data["sha256"]),
            int(data["bytes"]),
            str(data["tensorrt"]),
            str(data["device_name"]),
            str(data["compute_capability"]),
            str(data["precision"]),
            MappingProxyType(profiles),
            None if data.get("parity") is None else ParityEntry.from_json(data["parity"]),
        )


@dataclass(frozen=True)
class NetworkEntry:
    """One exported network."""

    network: str
    file: str
    sha256: str
    bytes: int
    opset: int
    contract: str
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]
    parity: ParityEntry | None = None
    plan: PlanEntry | None = None
    # How the generator's volume warps were exported: "volumetric" (5-D GridSample, opset
    # 20) or "sliced" (2-D GridSample over depth slices; msadtalker.models.volume_sampling).
    warp: str = "volumetric"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "warp": self.warp,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "opset": self.opset,
            "contract": self.contract,
            "inputs": [entry.to_json() for entry in self.inputs],
            "outputs": [entry.to_json() for entry in self.outputs],
            "parity": None if self.parity is None else self.parity.to_json(),
            "plan": None if self.plan is None else self.plan.to_json(),
        }

    @classmethod
    def from_json(cls, network: str, data: Mapping[str, Any]) -> NetworkEntry:
        parity = data.get("parity")
        plan = data.get("plan")
        return cls(
            network=network,
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            opset=int(data["opset"]),
            contract=str(data["contract"]),
            inputs=tuple(TensorEntry.from_json(item) for item in data["inputs"]),
            outputs=tuple(TensorEntry.from_json(item) for item in data["outputs"]),
            parity=None if parity is None else ParityEntry.from_json(parity),
            plan=None if plan is None else PlanEntry.from_json(plan),
            warp=str(data.get("warp", "volumetric")),
        )


@dataclass(frozen=True)
class ExportManifest:
    """Everything in one export directory (one checkpoint set, one render size)."""

    size: int
    checkpoint_fingerprint: str
    checkpoint_files: tuple[str, ...]
    created: str
    versions: Mapping[str, str]
    networks: Mapping[str, NetworkEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def with_network(self, entry: NetworkEntry) -> ExportManifest:
        networks = dict(self.networks)
        networks[entry.network] = entry
        return replace(self, networks=MappingProxyType(networks))

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "size": self.size,
            "checkpoint_fingerprint": self.checkpoint_fingerprint,
            "checkpoint_files": list(self.checkpoint_files),
            "created": self.created,
            "versions": dict(self.versions),
            "networks": {name: entry.to_json() for name, entry in self.networks.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportManifest:
        networks = {
            str(name): NetworkEntry.from_json(str(name), entry)
            for name, entry in dict(data["networks"]).items()
        }
        return cls(
            size=int(data["size"]),
            checkpoint_fingerprint=str(data["checkpoint_fingerprint"]),
            checkpoint_files=tuple(str(name) for name in data["checkpoint_files"]),
            created=str(data["created"]),
            versions=MappingProxyType({str(k): str(v) for k, v in dict(data["versions"]).items()}),
            networks=MappingProxyType(networks),
            format_version=int(data["format_version"]),
        )


def read_manifest(directory: Path, backend: str = "export") -> ExportManifest:
    """The manifest of ``directory``; ManifestError (one line) if missing or unreadable."""
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise ManifestError(f"{backend}: export directory {directory} does not exist")
    if not path.is_file():
        raise ManifestError(
            f"{backend}: no {MANIFEST_NAME} in {directory} (make one with msadtalker export)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{backend}: {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        found = data.get("format_version") if isinstance(data, dict) else type(data).__name__
        raise ManifestError(
            f"{backend}: {path} has format version {found!r}, this build reads "
            f"{FORMAT_VERSION}; re-run msadtalker export"
        )
    try:
        return ExportManifest.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(
            f"{backend}: {path} is malformed ({type(exc).__name__}: {exc})"
        ) from None


def write_manifest(directory: Path, manifest: ExportManifest) -> Path:
    """Write ``manifest.json`` atomically (a reader never sees half a file)."""
    path = directory / MANIFEST_NAME
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the manifest is as public as the files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_source(
    manifest: ExportManifest, directory: Path, fingerprint: str, size: int, backend: str
) -> None:
    """Refuse a directory exported from other checkpoints or for another render size."""
    if manifest.size != size:
        raise ManifestError(
            f"{backend}: {directory} was exported for render size {manifest.size}, not {size}"
        )
    if manifest.checkpoint_fingerprint != fingerprint:
        raise ManifestError(
            f"{backend}: {directory} was exported from other checkpoints (manifest fingerprint "
            f"{manifest.checkpoint_fingerprint}, these checkpoints {fingerprint}); re-run "
            "msadtalker export"
        )


def check_network(
    manifest: ExportManifest,
    directory: Path,
    network: str,
    contract: ExportContract,
    backend: str,
) -> NetworkEntry:
    """The entry of ``network``, checked against ``contract``, its parity and file size."""
    entry = manifest.networks.get(network)
    if entry is None:
        exported = ", ".join(manifest.networks) or "none"
        raise ManifestError(
            f"{backend}: {network} is not exported in {directory} (exported: {exported}); "
            f"run msadtalker export --networks {network}"
        )
    _check_tensors(entry.inputs, contract.inputs, "input", directory, network, backend)
    _check_tensors(entry.outputs, contract.outputs, "output", directory, network, backend)
    if entry.parity is not None and not entry.parity.ok:
        raise ManifestError(
            f"{backend}: {directory / entry.file} failed its parity check at export "
            f"({entry.parity.describe()})"
        )
    _check_file(directory / entry.file, entry.bytes, backend)
    return entry


def _check_tensors(
    recorded: tuple[TensorEntry, ...],
    specs: tuple[TensorSpec, ...],
    kind: str,
    directory: Path,
    network: str,
    backend: str,
) -> None:
    expected = tuple(TensorEntry.from_spec(spec) for spec in specs)
    for have, want in zip(recorded, expected, strict=False):
        if not have.same_as(want):
            raise ManifestError(
                f"{backend}: {network} in {directory} was exported with {kind} "
                f"{have.describe()}, the contract now has {want.describe()}; re-run "
                "msadtalker export"
            )
    if len(recorded) != len(expected):
        raise ManifestError(
            f"{backend}: {network} in {directory} was exported with {len(recorded)} {kind}s, "
            f"the contract now has {len(expected)}; re-run msadtalker export"
        )


def _check_file(path: Path, expected_bytes: int, backend: str) -> None:
    if not path.is_file():
        raise ManifestError(f"{backend}: {path} is missing (listed in {MANIFEST_NAME})")
    actual = path.stat().st_size
    if actual != expected_bytes:
        raise ManifestError(
            f"{backend}: {path} is corrupt: {actual} bytes, the manifest says {expected_bytes}"
        )


def check_digest(path: Path, sha256: str, backend: str) -> None:
    """Refuse a file whose bytes changed since export (read in full: done once per open)."""
    actual = file_sha256(path)
    if actual != sha256:
        raise ManifestError(
            f"{backend}: {path} is corrupt or was replaced (sha256 {actual[:12]}..., the "
            f"manifest says {sha256[:12]}...)"
        )
