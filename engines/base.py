"""The one interface every inference backend implements.

A network is run through an :class:`Engine`: positional inputs in the order of its
``ExportContract`` (see ``msadtalker.models.contract``), a dict of named outputs back. Inputs
and outputs are numpy arrays at this boundary so that torch, onnxruntime and TensorRT are
interchangeable; a backend may also accept its own device tensors (the torch engine takes
``torch.Tensor``) and return them when asked (``keep_on_device``) so that per-avatar state (the
generator's source feature volume) stays on the GPU between calls.

An :class:`EngineSet` is what a pipeline receives: it hands out one engine per network name
("face_3drecon", "audio2exp", "mapping", "mapping_full", "kp_extractor", "generator" and the
split generator views). Pipelines never build engines; the command line builds the set
(``engines.registry.open_engines``) and passes it in.

Lifecycle: load (weights or an exported file) -> ``run`` many times -> ``close``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class EngineUnavailable(RuntimeError):
    """The backend cannot serve this network here (package missing, no GPU, no exported file).

    The message names the backend, the network and what is missing, in one line."""


@runtime_checkable
class Engine(Protocol):
    """One network on one backend."""

    @property
    def backend(self) -> str: ...

    @property
    def network(self) -> str: ...

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Mapping[str, Any]:
        """Inputs in contract order -> outputs by contract name (numpy unless
        ``keep_on_device`` and the backend has device tensors)."""
        ...

    def close(self) -> None: ...


class EngineSet(Protocol):
    """The engines of one checkpoint set on one backend."""

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> str: ...

    def engine(self, network: str) -> Engine:
        """The engine for ``network``; raises :class:`EngineUnavailable`."""
        ...

    def close(self) -> None: ...
