"""Synthetic checkpoints built once per machine, outside the work tree, checked on every use.

Location: ``$MSADTALKER_TEST_CACHE``, else ``$XDG_CACHE_HOME/msadtalker/test-checkpoints``, else
``~/.cache/msadtalker/test-checkpoints``. One entry (a folder) per seed, network set and render
size; its name ends with a key of the writer's source and the packaged layout, so a changed
recipe builds a new entry (older entries of the same request are removed then).

An entry is written into a temporary folder beside it and renamed into place under a file lock,
so concurrent test processes either build it once or wait, and never see half an entry. Its
``manifest.json`` records every file's size and sha256; ``open_entry`` checks them and raises
``CorruptFixtureError`` naming the file (and telling to delete the entry) on any difference.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from msadtalker.testing import synthetic_checkpoints
from msadtalker.testing.checksums import CorruptFixtureError, atomic_write, file_sha256
from msadtalker.testing.synthetic_checkpoints import ALL_NETWORKS, write_checkpoints

log = logging.getLogger(__name__)

CACHE_ENV = "MSADTALKER_TEST_CACHE"
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """``$MSADTALKER_TEST_CACHE`` or the XDG cache folder's ``msadtalker/test-checkpoints``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "msadtalker" / "test-checkpoints"


@dataclass(frozen=True)
class Request:
    """What an entry holds: seed, networks (canonical order), render size of the file name."""

    seed: int
    networks: tuple[str, ...]
    size: int = 256

    @classmethod
    def of(cls, seed: int, networks: Sequence[str] = ALL_NETWORKS, size: int = 256) -> Request:
        wanted = set(networks)
        return cls(seed, tuple(n for n in ALL_NETWORKS if n in wanted), size)

    @property
    def prefix(self) -> str:
        nets = "all" if self.networks == ALL_NETWORKS else "+".join(self.networks)
        return f"seed{self.seed}-{nets}-{self.size}-"

    @property
    def name(self) -> str:
        return self.prefix + recipe_key()


def recipe_key() -> str:
    """12 hex digits of sha256(writer source, packaged layout)."""
    digest = hashlib.sha256()
    digest.update(Path(synthetic_checkpoints.__file__).read_bytes())
    layout = resources.files("msadtalker").joinpath("assets/sadtalker_layout.json")
    digest.update(layout.read_bytes())
    return digest.hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fix(entry: Path) -> str:
    return f"delete {entry} (rm -r) and rerun: it is rebuilt"


def open_entry(entry: Path) -> dict[str, object]:
    """Check every file of ``entry`` against its manifest; return the manifest."""
    manifest_path = entry / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, object]] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptFixtureError(
            f"{manifest_path}: unreadable cache manifest ({exc}); {_fix(entry)}"
        ) from None
    present = {path.name for path in entry.iterdir()} - {MANIFEST}
    if present != set(files):
        extra = sorted(present - set(files))
        missing = sorted(set(files) - present)
        raise CorruptFixtureError(
            f"{entry}: files differ from {MANIFEST} (missing {missing}, unexpected {extra}); "
            f"{_fix(entry)}"
        )
    for name, info in files.items():
        path = entry / name
        size = path.stat().st_size
        if size != info["bytes"]:
            raise CorruptFixtureError(
                f"{path}: {size} bytes, {MANIFEST} records {info['bytes']} (truncated or "
                f"modified); {_fix(entry)}"
            )
        if file_sha256(path) != info["sha256"]:
            raise CorruptFixtureError(
                f"{path}: sha256 differs from {MANIFEST} (corrupted or modified); {_fix(entry)}"
            )
    return dict(manifest)


def cached_checkpoints(
    request: Request,
    expected: Mapping[str, Mapping[str, str]] | None = None,
    root: Path | None = None,
) -> Path:
    """The checked entry for ``request``, built first if absent.

    ``expected`` (network -> key -> tensor digest) checks every tensor while building
    (``RecipeMismatch``); a build that disagrees with the record leaves no entry behind.
    """
    root = cache_root() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    entry = root / request.name
    if not entry.is_dir():
        with _locked(root / f".{request.name}.lock"):
            if not entry.is_dir():
                _build(request, entry, expected)
    open_entry(entry)
    return entry


def _build(request: Request, entry: Path, expected: Mapping[str, Mapping[str, str]] | None) -> None:
    log.info("building synthetic checkpoints %s", entry)
    for leftover in entry.parent.glob(f".{entry.name}.*"):
        if leftover.is_dir():  # an interrupted build (we hold the lock: nobody else builds)
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        notes = write_checkpoints(tmp, request.seed, request.networks, request.size, expected)
        for note in notes:
            log.warning("%s", note)
        files = {
            path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(tmp.iterdir())
        }
        manifest = {
            "seed": request.seed,
            "networks": list(request.networks),
            "size": request.size,
            "recipe_key": recipe_key(),
            "tensors_checked": "every tensor against the recorded digests"
            if expected is not None
            else "not checked (no recorded digests given)",
            "platform_notes": notes,
            "files": files,
        }
        atomic_write(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        os.rename(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in entry.parent.glob(f"{request.prefix}*"):
        if stale != entry and stale.is_dir():
            log.info("removing stale synthetic checkpoints %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
            (entry.parent / f".{stale.name}.lock").unlink(missing_ok=True)
