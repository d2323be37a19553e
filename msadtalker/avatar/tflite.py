"""Loading the shipped TFLite models with LiteRT (``ai-edge-litert``)."""

from __future__ import annotations

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
    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter
