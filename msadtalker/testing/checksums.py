"""sha256 bookkeeping for fixture files: a ``SHA256SUMS`` file (``sha256sum`` format, so
``sha256sum -c SHA256SUMS`` works too) and checks whose failure names the file and the fix."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

SUMS_NAME = "SHA256SUMS"
_CHUNK = 1 << 20


class CorruptFixtureError(RuntimeError):
    """A fixture file is missing, truncated or modified; the message names it and the fix."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_sums(path: Path) -> dict[str, str]:
    """``name -> sha256`` from a ``SHA256SUMS`` file (``<hex>  <name>`` per line)."""
    sums: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise CorruptFixtureError(f"{path}:{number}: not a '<sha256>  <name>' line")
        sums[name] = digest
    return sums


def write_sums(path: Path, sums: Mapping[str, str]) -> None:
    """Write ``sums`` sorted by name, atomically."""
    text = "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))
    atomic_write(path, text.encode())


def atomic_write(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename."""
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are shared fixture files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verify_file(path: Path, expected: str, recorded_in: Path, fix: str) -> None:
    """Raise ``CorruptFixtureError`` unless ``path`` exists and hashes to ``expected``."""
    if not path.is_file():
        raise CorruptFixtureError(f"{path}: missing (recorded in {recorded_in}); {fix}")
    actual = file_sha256(path)
    if actual != expected:
        raise CorruptFixtureError(
            f"{path}: sha256 {actual[:16]}... differs from {expected[:16]}... recorded in "
            f"{recorded_in} (truncated or modified); {fix}"
        )


def verify_listed(folder: Path, name: str, fix: str) -> Path:
    """``folder / name`` after checking it against ``folder / SHA256SUMS``."""
    sums_path = folder / SUMS_NAME
    sums = read_sums(sums_path)
    if name not in sums:
        raise CorruptFixtureError(f"{folder / name}: not listed in {sums_path}; {fix}")
    verify_file(folder / name, sums[name], sums_path, fix)
    return folder / name
