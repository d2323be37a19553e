"""Cross-session batching, the thread edge: an :class:`~engines.base.Engine` that batches.

:class:`BatchingEngine` wraps one engine. Callers (session threads) call ``run`` as on any
engine, or ``submit`` for a ``concurrent.futures.Future`` (``run_async`` awaits one from
asyncio); a worker thread takes the batches that ``engines.batching.BatchCore`` says are due,
concatenates the callers' inputs on the batch axis, runs the engine once and gives each caller
its rows. Requests batch only with requests of the same input shapes (past the batch axis) and
output placement (``keep_on_device``). A batch that fails is retried request by request, so
one session's bad input fails that session alone.

:class:`BatchingEngineSet` wraps an :class:`~engines.base.EngineSet`: the per-frame networks
(``BATCHED_NETWORKS``) get a shared batching engine, the others pass through. Pipelines need
no change: sessions that share the set share its batchers.

The pending requests are bounded (``max_pending``): past it ``submit`` raises
:class:`BatcherFull` instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from engines.base import Engine, EngineSet, EngineUnavailable
from engines.batching import BatchCore, BatchPolicy, CostModel, Request

log = logging.getLogger(__name__)

# Networks a session calls per frame (or per few frames): worth batching across sessions.
BATCHED_NETWORKS = ("generator_render", "mapping", "mapping_full", "audio2exp")

Clock = Callable[[], float]
Outputs = Mapping[str, Any]


class BatcherFull(RuntimeError):
    """Too many requests wait for one engine; the caller should drop or retry the frame."""


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def _rows_of(inputs: Sequence[Any]) -> int:
    if not inputs:
        raise ValueError("a batched call needs at least one input")
    rows = {int(x.shape[0]) for x in inputs}
    if len(rows) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(rows)}")
    return rows.pop()


def _group(inputs: Sequence[Any], keep_on_device: bool) -> tuple[Any, ...]:
    shapes = tuple(tuple(int(n) for n in x.shape[1:]) for x in inputs)
    kinds = tuple(_is_torch(x) for x in inputs)
    return keep_on_device, shapes, kinds


def concat_rows(values: Sequence[Any]) -> Any:
    """Values of one input position from several callers, joined on axis 0."""
    if len(values) == 1:
        return values[0]
    if any(_is_torch(v) for v in values):
        import torch

        device = next(v.device for v in values if _is_torch(v))
        return torch.cat([torch.as_tensor(v, device=device) for v in values])
    return np.concatenate([np.asarray(v) for v in values])


def split_rows(outputs: Outputs, counts: Sequence[int]) -> list[dict[str, Any]]:
    """Batched outputs -> one dict per caller (its ``counts[i]`` rows, in order)."""
    parts: list[dict[str, Any]] = [{} for _ in counts]
    for name, value in outputs.items():
        start = 0
        for part, count in zip(parts, counts, strict=True):
            part[name] = value[start : start + count]
            start += count
        if start != value.shape[0]:
            raise RuntimeError(f"output {name} has {value.shape[0]} rows, the batch had {start}")
    return parts


class BatchingEngine:
    """One engine shared by many callers through batches; see the module docstring.

    ``start=False`` runs no worker thread: the owner calls :meth:`pump` (deterministic tests
    with an injected clock)."""

    def __init__(
        self,
        engine: Engine,
        policy: BatchPolicy | None = None,
        *,
        clock: Clock = time.monotonic,
        cost: CostModel | None = None,
        max_pending: int = 256,
        start: bool = True,
    ) -> None:
        self._engine = engine
        self.policy = policy if policy is not None else BatchPolicy()
        self._core = BatchCore(self.policy, cost)
        self._clock = clock
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._closed = False
        self._batches: dict[int, int] = {}  # rows -> batches run (benches, tests)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._serve, name=f"batch-{engine.network}", daemon=True
            )
            self._thread.start()

    @property
    def backend(self) -> str:
        return self._engine.backend

    @property
    def network(self) -> str:
        return self._engine.network

    @property
    def cost(self) -> CostModel:
        return self._core.cost

    def batch_sizes(self) -> dict[int, int]:
        """rows -> how many batches of that many rows ran."""
        with self._cond:
            return dict(self._batches)

    def submit(
        self, *inputs: Any, deadline: float | None = None, keep_on_device: bool = False
    ) -> Future[dict[str, Any]]:
        """Queue one call; its Future gets this caller's outputs. ``deadline``: on this
        engine's clock, default now + the policy's frame budget."""
        rows = _rows_of(inputs)
        future: Future[dict[str, Any]] = Future()
        with self._cond:
            if self._closed:
                raise EngineUnavailable(f"{self.backend}: batcher of {self.network} is closed")
            if len(self._core) >= self._max_pending:
                raise BatcherFull(
                    f"{self.network}: {len(self._core)} calls already wait for the engine "
                    f"(limit {self._max_pending})"
                )
            now = self._clock()
            self._core.add(
                Request(
                    rows=rows,
                    arrival=now,
                    deadline=now + self.policy.budget_s if deadline is None else deadline,
                    payload=(inputs, keep_on_device, future),
                    group=_group(inputs, keep_on_device),
                )
            )
            self._cond.notify()
        return future

    def run(self, *inputs: Any, keep_on_device: bool = False) -> dict[str, Any]:
        """The Engine interface: blocks until this caller's rows are back."""
        return self.submit(*inputs, keep_on_device=keep_on_device).result()

    async def run_async(
        self, *inputs: Any, deadline: float | None = None, keep_on_device: bool = False
    ) -> dict[str, Any]:
        """``run`` for asyncio callers (the loop is not blocked while the batch runs)."""
        future = self.submit(*inputs, deadline=deadline, keep_on_device=keep_on_device)
        return await asyncio.wrap_future(future)

    def pump(self) -> int:
        """Run every batch due now in the calling thread; the number of batches run."""
        count = 0
        while True:
            with self._cond:
                batch = self._core.take(self._clock())
            if not batch:
                return count
            self._run(batch)
            count += 1

    def close(self) -> None:
        """Stop the worker; calls still waiting fail with EngineUnavailable."""
        with self._cond:
            self._closed = True
            pending = self._core.drain()
            self._cond.notify_all()
        for request in pending:
            _inputs, _keep, future = request.payload
            future.set_exception(
                EngineUnavailable(f"{self.backend}: batcher of {self.network} closed")
            )
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = self._clock()
                    batch = self._core.take(now)
                    if batch:
                        break
                    due = self._core.due()
                    self._cond.wait(None if due is None else max(due - now, 0.0))
            self._run(batch)

    def _run(self, batch: list[Request]) -> None:
        payloads = [request.payload for request in batch]
        live = [
            (inputs, keep, fut)
            for inputs, keep, fut in payloads
            if fut.set_running_or_notify_cancel()
        ]
        if not live:
            return
        counts = [int(_rows_of(inputs)) for inputs, _, _ in live]
        keep_on_device = live[0][1]
        started = self._clock()
        try:
            joined = [concat_rows(values) for values in zip(*(p[0] for p in live), strict=True)]
            outputs = self._engine.run(*joined, keep_on_device=keep_on_device)
            parts = split_rows(outputs, counts)
        except Exception as exc:  # handed to the callers: theirs to report
            if len(live) == 1:
                live[0][2].set_exception(exc)
                return
            log.warning(
                "%s: a batch of %d calls failed (%s); running them one by one",
                self.network,
                len(live),
                exc,
            )
            for inputs, keep, future in live:
                try:
                    future.set_result(dict(self._engine.run(*inputs, keep_on_device=keep)))
                except Exception as one:  # this caller's own failure
                    future.set_exception(one)
            return
        rows = sum(counts)
        with self._cond:
            self._core.cost.observe(rows, self._clock() - started)
            self._batches[rows] = self._batches.get(rows, 0) + 1
        for (_, _, future), part in zip(live, parts, strict=True):
            future.set_result(part)


class BatchingEngineSet:
    """An EngineSet whose per-frame networks are batched across the sessions sharing it."""

    def __init__(
        self,
        engines: EngineSet,
        policy: BatchPolicy | None = None,
        networks: Iterable[str] = BATCHED_NETWORKS,
    ) -> None:
        self._engines = engines
        self.policy = policy if policy is not None else BatchPolicy()
        self._batched = frozenset(networks)
        self._batchers: dict[str, BatchingEngine] = {}
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self._engines.backend

    @property
    def device(self) -> str:
        return self._engines.device

    @property
    def inner(self) -> EngineSet:
        return self._engines

    def engine(self, network: str) -> Engine:
        inner = self._engines.engine(network)
        if network not in self._batched:
            return inner
        with self._lock:
            batcher = self._batchers.get(network)
            if batcher is None:
                batcher = BatchingEngine(inner, self.policy)
                self._batchers[network] = batcher
                log.info(
                    "%s: %s batched across sessions (up to %d rows, %.1f ms gather)",
                    self.backend,
                    network,
                    self.policy.max_batch,
                    self.policy.max_wait_s * 1e3,
                )
            return batcher

    def batch_counts(self) -> dict[str, dict[int, int]]:
        """network -> {rows: batches run}."""
        with self._lock:
            batchers = dict(self._batchers)
        return {name: batcher.batch_sizes() for name, batcher in batchers.items()}

    def close(self) -> None:
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for batcher in batchers:
            batcher.close()
        self._engines.close()
