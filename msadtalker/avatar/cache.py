"""On-disk cache of prepared avatars: one ``.npz`` per key, no pickles, atomic writes.

Location: ``$MSADTALKER_CACHE`` or ``~/.cache/msadtalker``, under ``avatars/``. A file is
written to a temporary name in the same directory and renamed into place, so readers never
see a half-written entry and concurrent writers of the same key simply race to an identical
file. Unreadable entries are treated as misses (and overwritten).
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cache_root() -> Path:
    env = os.environ.get("MSADTALKER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "msadtalker"


def entry_path(key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "avatars" / f"{key}.npz"


def read_entry(key: str, root: Path | None = None) -> dict[str, np.ndarray] | None:
    path = entry_path(key, root)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        log.warning("ignoring unreadable avatar cache entry %s (%s)", path, exc)
        return None


def write_entry(key: str, arrays: dict[str, np.ndarray], root: Path | None = None) -> Path | None:
    """Store ``arrays`` under ``key``; returns the path, or None if the cache is not writable."""
    path = entry_path(key, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot write avatar cache %s (%s); continuing without it", path, exc)
        return None
    return path
