"""Build and update ``manifest.json`` of an export directory (format: ``engines.manifest``).

The manifest ties every exported file to the checkpoint set it came from
(``msadtalker.weights.checkpoint_fingerprint``), the render size, the network's contract
tensors, its sha256 and the parity figures measured at export, plus the torch / onnx /
onnxruntime (/ TensorRT) versions that made it. It is rewritten after each network, so an
interrupted export leaves a manifest that lists exactly the files that were completed.

Re-exporting into a directory keeps the entries of other networks when the fingerprint and
size match (``--networks`` adds to a directory); otherwise the old manifest is replaced and its
entries are dropped (their files stay on disk, unlisted, and are never served).
"""

from __future__ import annotations

import logging
import platform
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from engines.manifest import (
    ExportManifest,
    ManifestError,
    NetworkEntry,
    ParityEntry,
    PlanEntry,
    TensorEntry,
    file_sha256,
    read_manifest,
    write_manifest,
)
from msadtalker.models.contract import ExportContract

log = logging.getLogger(__name__)

_VERSIONED = ("msadtalker", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt")


def library_versions() -> dict[str, str]:
    """Versions of the packages that shape an exported file (installed ones only)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_manifest(
    directory: Path, fingerprint: str, checkpoint_files: tuple[str, ...], size: int
) -> ExportManifest:
    """The directory's manifest to extend, or a new one if it belongs to other checkpoints."""
    try:
        existing = read_manifest(directory)
    except ManifestError as exc:
        if (directory / "manifest.json").exists():
            log.warning("replacing unreadable manifest: %s", exc)
        existing = None
    if existing is not None:
        if existing.checkpoint_fingerprint == fingerprint and existing.size == size:
            return ExportManifest(
                size=size,
                checkpoint_fingerprint=fingerprint,
                checkpoint_files=checkpoint_files,
                created=_now(),
                versions=MappingProxyType(library_versions()),
                networks=existing.networks,
            )
        log.warning(
            "%s held an export of other checkpoints or size %d (fingerprint %s); replacing its "
            "manifest, dropping %s",
            directory,
            existing.size,
            existing.checkpoint_fingerprint,
            ", ".join(existing.networks) or "no entries",
        )
    return ExportManifest(
        size=size,
        checkpoint_fingerprint=fingerprint,
        checkpoint_files=checkpoint_files,
        created=_now(),
        versions=MappingProxyType(library_versions()),
    )


def network_entry(
    network: str,
    path: Path,
    opset: int,
    contract: ExportContract,
    parity: ParityEntry | None,
    warp: str = "volumetric",
) -> NetworkEntry:
    return NetworkEntry(
        network=network,
        file=path.name,
        sha256=file_sha256(path),
        bytes=path.stat().st_size,
        opset=opset,
        contract=contract.name,
        inputs=tuple(TensorEntry.from_spec(spec) for spec in contract.inputs),
        outputs=tuple(TensorEntry.from_spec(spec) for spec in contract.outputs),
        parity=parity,
        plan=None,
        warp=warp,
    )


def record(directory: Path, manifest: ExportManifest, entry: NetworkEntry) -> ExportManifest:
    """Add or replace ``entry`` and write the manifest now."""
    updated = manifest.with_network(entry)
    write_manifest(directory, updated)
    return updated


def with_plan(entry: NetworkEntry, plan: PlanEntry) -> NetworkEntry:
    return replace(entry, plan=plan)
