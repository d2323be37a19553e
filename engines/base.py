"""The one interface every inference backend implements.

A network is run through an :class:`Engine`: positional inputs in the order of its
``ExportContract`` (see ``msadtalker.models.contract``), a dict of named outputs back. Inputs
and outputs are numpy arrays at this boundary so that torch, onnxruntime and TensorRT are
interchangeable; a backend may also accept its own device tensors (the torch engine takes
``torch.Tensor``) and return them when asked (``keep_on_device``) so that per-avatar state (the
generator's source feature volume) stays on the GPU between calls.

An :class:`EngineSet` is what a pipeline receives: it hands out one engine per network name
(``msadtalker.catalog.NETWORKS``: the checkpoint networks and the split generator views).
Pipelines never build engines; the command line builds the set
(``engines.registry.open_engines``) and passes it in.

Lifecycle: load (weights or an exported file) -> ``run`` many times -> ``close``.

Every backend does the set-level work the same way, so it lives in :class:`BaseEngineSet`:
the requested names are checked, whatever the backend can verify is verified when the set is
opened (so a bad checkpoint or export fails before any stream starts), each network is opened
on first use, once, under the set's lock (sessions of the live server ask from their own
threads), and load errors become one-line :class:`EngineUnavailable`. A backend says only how
it opens one network (``_open``) and, in its :class:`BaseEngine`, how it runs it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from msadtalker.catalog import NETWORKS

if TYPE_CHECKING:  # torch is only needed by the backends themselves
    from msadtalker.models.contract import ExportContract

BACKENDS = ("torch", "onnxruntime", "tensorrt", "triton")


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


def first_line(exc: BaseException) -> str:
    """An exception as one line (libraries' load errors can span a page)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class BaseEngine(ABC):
    """One network of a backend: names, contract and the input count check; the backend's
    ``run`` does the rest. Engines own nothing to release: their set does."""

    BACKEND: ClassVar[str]

    def __init__(self, network: str, contract: ExportContract) -> None:
        self._network = network
        self._contract = contract

    @property
    def backend(self) -> str:
        return self.BACKEND

    @property
    def network(self) -> str:
        return self._network

    @property
    def contract(self) -> ExportContract:
        return self._contract

    @abstractmethod
    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]: ...

    def close(self) -> None:
        """Nothing to release per engine: the set owns what the engines use."""
        return None

    def _check_count(self, inputs: Sequence[Any]) -> None:
        expected = self._contract.input_names
        if len(inputs) != len(expected):
            raise ValueError(
                f"{self._network}: got {len(inputs)} inputs, expected {len(expected)} "
                f"({', '.join(expected)})"
            )


EngineT = TypeVar("EngineT", bound=BaseEngine)


class BaseEngineSet(ABC, Generic[EngineT]):
    """The engines of one checkpoint set and render size on one backend (module docstring).

    A subclass calls ``super().__init__`` first (it rejects unknown names before any backend
    work), then opens what it reads once and checks every requested network, and implements
    ``_open``. ``_load_errors`` names the exceptions of its library that mean "this file
    cannot be loaded"; they reach the caller as one-line :class:`EngineUnavailable`."""

    BACKEND: ClassVar[str]

    def __init__(self, networks: Iterable[str], size: int) -> None:
        wanted = list(dict.fromkeys(networks))
        unknown = [name for name in wanted if name not in NETWORKS]
        if unknown:
            raise ValueError(
                f"unknown networks {unknown}; {self.BACKEND} serves {', '.join(NETWORKS)}"
            )
        self._networks = tuple(wanted)
        self._size = size
        self._engines: dict[str, EngineT] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def backend(self) -> str:
        return self.BACKEND

    @property
    @abstractmethod
    def device(self) -> str: ...

    @property
    def size(self) -> int:
        return self._size

    @property
    def networks(self) -> tuple[str, ...]:
        return self._networks

    def engine(self, network: str) -> EngineT:
        """The engine of ``network``, opened on first use; EngineUnavailable if it was not
        requested at open, the set is closed or it cannot be loaded."""
        if network not in self._networks:
            raise EngineUnavailable(
                f"{self.BACKEND}: network {network} was not opened "
                f"(opened: {', '.join(self._networks)})"
            )
        with self._lock:
            if self._closed:
                raise EngineUnavailable(f"{self.BACKEND}: the engine set is closed")
            engine = self._engines.get(network)
            if engine is None:
                try:
                    engine = self._open(network)
                except self._load_errors() as exc:
                    raise EngineUnavailable(
                        f"{self.BACKEND}: cannot load {self._source(network)}: {first_line(exc)}"
                    ) from None
                self._engines[network] = engine
            return engine

    def close(self) -> None:
        """Drop every engine and what the backend holds; later ``engine`` calls fail."""
        with self._lock:
            self._closed = True
            self._engines.clear()
            self._release()

    @abstractmethod
    def _open(self, network: str) -> EngineT:
        """Load ``network`` (called once, under the set's lock)."""

    def _load_errors(self) -> tuple[type[BaseException], ...]:
        """The backend library's exceptions for a file it cannot load."""
        return ()

    def _source(self, network: str) -> str:
        """What ``_open`` reads for ``network``, for error messages."""
        return network

    def _release(self) -> None:
        """Release what the set holds besides its engines (called under the lock)."""
