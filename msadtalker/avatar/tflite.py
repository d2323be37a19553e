"""Loading the shipped TFLite models with LiteRT (``ai-edge-litert``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msadtalker.errors import CheckpointError


def load_interpreter(path: Path, num_threads: int = 1) -> Any:
    """A ready LiteRT interpreter for ``path`` (tensors allocated)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - a packaging error, not a user one
        raise CheckpointError(
            "the face landmarker needs the 'ai-edge-litert' package (pip install ai-edge-litert)"
        ) from exc
    if not path.is_file():
        raise CheckpointError(f"bundled face model missing: {path} (reinstall msadtalker)")
    with _native_stderr_silenced():
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    return interpreter


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration.

    LiteRT's C++ runtime writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to
    fd 2 when an interpreter is built, and no log level or environment variable reaches that
    logger; it would sit in front of the CLI's one-line error messages. Interpreters are built
    once per process (avatar preparation), so the window in which other stderr output could
    be lost is a few milliseconds at start-up.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (detached process): nothing to silence
        yield
        return
    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
