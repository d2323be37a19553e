"""Open an :class:`~engines.base.EngineSet` by backend name.

Each backend lives in its own module with an opener
``open_<backend>_engines(checkpoints, size, networks, device) -> EngineSet``; the table below
names them, so adding a backend is adding its module (and its row if it is a new name). A
backend whose module is not in this checkout, or that cannot run here, raises
:class:`~engines.base.EngineUnavailable` with one line saying what is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from types import MappingProxyType

from engines.base import BACKENDS, EngineSet, EngineUnavailable
from msadtalker.errors import ConfigError

# backend -> (module, opener function)
OPENERS = MappingProxyType(
    {
        "torch": ("engines.torch_engine", "open_torch_engines"),
        "onnxruntime": ("engines.onnx_engine", "open_onnxruntime_engines"),
        "tensorrt": ("engines.tensorrt_engine", "open_tensorrt_engines"),
        "triton": ("engines.triton_engine", "open_triton_engines"),
    }
)
DEVICES = ("auto", "cpu", "cuda")


def open_engines(
    backend: str,
    checkpoints: str | Path | None,
    size: int,
    networks: Iterable[str],
    device: str = "auto",
    url: str | None = None,
) -> EngineSet:
    """The engines of ``networks`` for render size ``size`` on ``backend``.

    ``url``: the inference server of a remote backend (``triton``); local backends take none.

    Raises ``ConfigError`` for an unknown backend name, ``CheckpointError`` for a bad
    checkpoint directory and ``EngineUnavailable`` when the backend cannot serve here.
    """
    if backend not in OPENERS:
        raise ConfigError(f"unknown engine backend {backend!r} (choose from {', '.join(BACKENDS)})")
    module_name, opener = OPENERS[backend]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise EngineUnavailable(
                f"{backend}: this backend is not built in this checkout yet (no {module_name}); "
                "use the torch backend"
            ) from None
        raise EngineUnavailable(
            f"{backend}: needs the Python package {exc.name!r}, which is not installed"
        ) from None
    options = {} if url is None else {"url": url}
    if url is not None and backend != "triton":
        raise ConfigError(f"--engine-url is for the triton backend, not {backend}")
    engine_set: EngineSet = getattr(module, opener)(
        checkpoints, size, list(networks), device, **options
    )
    return engine_set
