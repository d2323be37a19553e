"""Cross-session batching (engines.batching, engines.batching_engine, engines.source_cache).

The rules are tested on the synchronous core and on the engine with ``start=False`` under an
injected clock (a fake engine advances it by its modelled cost), so nothing here depends on
wall-clock time; one test runs the worker thread for real, asserting only results and batch
sizes. Parity of batched with batch-1 calls on the real networks: tests/test_batching_parity.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np
import pytest

from engines.base import EngineUnavailable
from engines.batching import BatchCore, BatchPolicy, CostModel, Request
from engines.batching_engine import (
    BatcherFull,
    BatchingEngine,
    BatchingEngineSet,
    concat_rows,
    split_rows,
)
from engines.source_cache import SourceCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Doubles its input; costs ``fixed + per_row * rows`` seconds of the fake clock."""

    backend = "fake"
    network = "generator_render"

    def __init__(self, clock: FakeClock, fixed: float = 0.0, per_row: float = 0.0) -> None:
        self.clock = clock
        self.fixed = fixed
        self.per_row = per_row
        self.batches: list[int] = []
        self.fail_rows_above: float | None = None  # a "bad input" marker

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Mapping[str, Any]:
        rows = inputs[0].shape[0]
        self.batches.append(rows)
        self.clock.now += self.fixed + self.per_row * rows
        if self.fail_rows_above is not None and float(np.max(inputs[0])) > self.fail_rows_above:
            raise ValueError("input out of range")
        return {"out": inputs[0] * 2, "sum": inputs[0].sum(axis=1, keepdims=True) + inputs[1]}

    def close(self) -> None:
        return None


def _req(rows: int, arrival: float, deadline: float, group: Any = None) -> Request:
    return Request(rows=rows, arrival=arrival, deadline=deadline, group=group)


# --- the core -----------------------------------------------------------------------------------


def test_policy_and_cost_model_checks() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchPolicy(max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        BatchPolicy(max_wait_s=-1)
    cost = CostModel()
    cost.observe(1, 0.010)
    assert cost.estimate(4) == pytest.approx(0.040)  # one size seen: all of it per row
    cost.observe(4, 0.016)
    assert cost.per_row_s == pytest.approx(0.002) and cost.fixed_s == pytest.approx(0.008)
    assert cost.estimate(8) == pytest.approx(0.024)


def test_a_lone_request_waits_only_the_gather_window() -> None:
    core = BatchCore(BatchPolicy(max_batch=8, max_wait_s=0.004))
    core.add(_req(1, arrival=1.0, deadline=1.040))
    assert core.due() == pytest.approx(1.004)
    assert core.take(1.003) == []
    assert len(core.take(1.004)) == 1 and core.due() is None


def test_a_full_batch_goes_at_once() -> None:
    core = BatchCore(BatchPolicy(max_batch=3, max_wait_s=0.004))
    for i in range(3):
        core.add(_req(1, arrival=1.0 + i * 1e-4, deadline=2.0))
    assert core.due() == pytest.approx(1.0)
    assert len(core.take(1.0002)) == 3


def test_a_tight_deadline_cuts_the_gather_window() -> None:
    cost = CostModel(fixed_s=0.0, per_row_s=0.010)
    core = BatchCore(BatchPolicy(max_batch=8, max_wait_s=0.004), cost)
    core.add(_req(1, arrival=1.0, deadline=1.012))  # 12 ms left, 10 ms of work
    assert core.due() == pytest.approx(1.002)
    assert len(core.take(1.002)) == 1


def test_a_batch_grows_only_while_its_earliest_deadline_is_met() -> None:
    cost = CostModel(fixed_s=0.005, per_row_s=0.005)
    core = BatchCore(BatchPolicy(max_batch=8, max_wait_s=0.004), cost)
    core.add(_req(1, arrival=0.0, deadline=0.030))  # needs the batch done by 30 ms
    for i in range(5):
        core.add(_req(1, arrival=0.001, deadline=0.100 + i))
    batch = core.take(0.004)
    # start 4 ms + 5 ms fixed + 5 ms per row <= 30 ms: at most 4 rows
    assert len(batch) == 4 and batch[0].deadline == 0.030
    assert len(core) == 2


def test_requests_batch_only_within_their_group() -> None:
    core = BatchCore(BatchPolicy(max_batch=8, max_wait_s=0.0))
    core.add(_req(1, 0.0, 1.0, group="a"))
    core.add(_req(1, 0.0, 1.1, group="b"))
    core.add(_req(2, 0.0, 1.2, group="a"))
    first = core.take(0.0)
    assert [r.group for r in first] == ["a", "a"] and sum(r.rows for r in first) == 3
    assert [r.group for r in core.take(0.0)] == ["b"]


# --- the engine under an injected clock ---------------------------------------------------------


def _record(finished: dict[int, float], request: int, clock: FakeClock, _: object) -> None:
    finished[request] = clock.now


@pytest.mark.parametrize("sessions", [1, 3, 8])
def test_no_session_is_made_late_by_others(sessions: int) -> None:
    """GPU-like costs (8 ms + 1 ms per row): every frame meets its 40 ms budget, in batches."""
    clock = FakeClock()
    engine = FakeEngine(clock, fixed=0.008, per_row=0.001)
    finished: dict[int, float] = {}
    deadlines: dict[int, float] = {}
    batcher = BatchingEngine(
        engine,
        BatchPolicy(max_batch=8, max_wait_s=0.004, budget_s=0.040),
        clock=clock,
        cost=CostModel(fixed_s=0.008, per_row_s=0.001),
        start=False,
    )
    request_id = 0
    for frame in range(20):
        tick = frame * 0.040
        pending = []
        for s in range(sessions):
            clock.now = max(clock.now, tick + s * 0.0005)
            x = np.full((1, 4), float(s), np.float32)
            future = batcher.submit(x, np.zeros((1, 1), np.float32))
            deadlines[request_id] = clock.now + 0.040
            future.add_done_callback(partial(_record, finished, request_id, clock))
            pending.append((future, s))
            request_id += 1
            batcher.pump()
        while len(batcher._core):  # noqa: SLF001 - the edge's worker loop, by hand
            due = batcher._core.due()  # noqa: SLF001
            assert due is not None
            clock.now = max(clock.now, due)
            batcher.pump()
        for future, s in pending:
            np.testing.assert_array_equal(
                future.result(timeout=0)["out"], np.full((1, 4), 2.0 * s, np.float32)
            )
    late = [i for i in finished if finished[i] > deadlines[i] + 1e-12]
    assert not late
    if sessions > 1:
        assert max(engine.batches) > 1  # they did share batches
    assert sum(engine.batches) == 20 * sessions


def test_a_cpu_like_engine_keeps_batches_small_for_tight_deadlines() -> None:
    """A row costs 15 ms whatever the batch: a batch of 3 (45 ms) would miss the 40 ms budget,
    so requests go at most two together and the first is never held for the others."""
    clock = FakeClock()
    engine = FakeEngine(clock, fixed=0.0, per_row=0.015)
    batcher = BatchingEngine(
        engine,
        BatchPolicy(max_batch=8, max_wait_s=0.004),
        clock=clock,
        cost=CostModel(per_row_s=0.015),
        start=False,
    )
    futures = [batcher.submit(np.ones((1, 4), np.float32), np.zeros((1, 1))) for _ in range(3)]
    clock.now = 0.004
    batcher.pump()
    assert engine.batches[0] == 2  # 4 ms + 2 x 15 ms <= 40 ms; 3 rows would end at 49 ms
    assert all(f.done() for f in futures)  # the third ran right after (its own deadline)


def test_outputs_split_by_caller_rows_and_inputs_by_shape() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    batcher = BatchingEngine(engine, BatchPolicy(max_wait_s=0.0), clock=clock, start=False)
    a = batcher.submit(np.arange(8, dtype=np.float32).reshape(2, 4), np.ones((2, 1)))
    b = batcher.submit(np.ones((1, 4), np.float32), np.zeros((1, 1)))
    c = batcher.submit(np.ones((1, 5), np.float32), np.zeros((1, 1)))  # other shape: alone
    assert batcher.pump() == 2
    assert engine.batches == [3, 1]
    np.testing.assert_array_equal(a.result()["out"], np.arange(8).reshape(2, 4) * 2)
    np.testing.assert_array_equal(a.result()["sum"], [[7.0], [23.0]])
    np.testing.assert_array_equal(b.result()["sum"], [[4.0]])
    assert c.result()["out"].shape == (1, 5)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        batcher.submit(np.ones((2, 4)), np.ones((1, 1)))


def test_a_bad_input_fails_its_caller_alone() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    engine.fail_rows_above = 100.0
    batcher = BatchingEngine(engine, BatchPolicy(max_wait_s=0.0), clock=clock, start=False)
    good = batcher.submit(np.ones((1, 4), np.float32), np.zeros((1, 1)))
    bad = batcher.submit(np.full((1, 4), 1e3, np.float32), np.zeros((1, 1)))
    batcher.pump()
    assert good.result()["out"].shape == (1, 4)
    with pytest.raises(ValueError, match="out of range"):
        bad.result()


def test_pending_calls_are_bounded_and_fail_on_close() -> None:
    clock = FakeClock()
    batcher = BatchingEngine(
        FakeEngine(clock), BatchPolicy(max_wait_s=1.0), clock=clock, max_pending=2, start=False
    )
    first = batcher.submit(np.ones((1, 4)), np.zeros((1, 1)))
    batcher.submit(np.ones((1, 4)), np.zeros((1, 1)))
    with pytest.raises(BatcherFull, match="limit 2"):
        batcher.submit(np.ones((1, 4)), np.zeros((1, 1)))
    batcher.close()
    with pytest.raises(EngineUnavailable, match="closed"):
        first.result()
    with pytest.raises(EngineUnavailable, match="closed"):
        batcher.submit(np.ones((1, 4)), np.zeros((1, 1)))


def test_concat_and_split_helpers() -> None:
    torch = pytest.importorskip("torch")
    joined = concat_rows([torch.ones(1, 2), np.zeros((2, 2), np.float32)])
    assert isinstance(joined, torch.Tensor) and joined.shape == (3, 2)
    parts = split_rows({"y": np.arange(3)}, [1, 2])
    assert [p["y"].tolist() for p in parts] == [[0], [1, 2]]
    with pytest.raises(RuntimeError, match="had 2"):
        split_rows({"y": np.arange(3)}, [1, 1])


class _Barrier:
    """A fake engine whose batches are checked by the test; real threads, no timing asserts."""

    backend = "fake"
    network = "mapping"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, *inputs: Any, keep_on_device: bool = False) -> Mapping[str, Any]:
        self.batches.append(inputs[0].shape[0])
        return {"y": inputs[0] + 1}

    def close(self) -> None:
        return None


def test_worker_thread_batches_concurrent_sessions() -> None:
    engine = _Barrier()
    # The gather window is long, so the batch closes when full: 8 sessions -> one batch of 8.
    batcher = BatchingEngine(engine, BatchPolicy(max_batch=8, max_wait_s=30.0, budget_s=60.0))
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(8)

    def session(i: int) -> None:
        start.wait()
        results[i] = batcher.run(np.full((1, 3), float(i)))["y"]

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.batches == [8] and batcher.batch_sizes() == {8: 1}
    for i in range(8):
        np.testing.assert_array_equal(results[i], np.full((1, 3), i + 1.0))

    async def from_asyncio() -> list[dict[str, Any]]:
        calls = [batcher.run_async(np.full((1, 3), float(i))) for i in range(8)]
        return list(await asyncio.gather(*calls))

    outs = asyncio.run(from_asyncio())
    assert [float(o["y"][0, 0]) for o in outs] == [i + 1.0 for i in range(8)]
    batcher.close()


def test_engine_set_batches_only_per_frame_networks() -> None:
    class _Set:
        backend = "fake"
        device = "cpu"
        closed = False

        def engine(self, network: str) -> Any:
            return _Barrier()

        def close(self) -> None:
            self.closed = True

    inner = _Set()
    engines = BatchingEngineSet(inner, BatchPolicy(max_batch=4))
    batched = engines.engine("generator_render")
    assert isinstance(batched, BatchingEngine) and engines.engine("generator_render") is batched
    assert not isinstance(engines.engine("kp_extractor"), BatchingEngine)
    engines.close()
    assert inner.closed


# --- per-avatar source cache --------------------------------------------------------------------


def test_source_cache_computes_once_and_stays_bounded() -> None:
    cache: SourceCache[str] = SourceCache(capacity=2)
    calls: list[str] = []
    gate = threading.Event()

    def compute(key: str) -> str:
        calls.append(key)
        gate.wait(timeout=10)
        return key.upper()

    out: list[str] = []
    threads = [
        threading.Thread(target=lambda: out.append(cache.get("a", lambda: compute("a"))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()
    assert out == ["A"] * 4 and calls == ["a"]
    cache.get("b", lambda: "B")
    cache.get("a", lambda: "never")  # refreshes a
    cache.get("c", lambda: "C")  # evicts b, the least recently used
    assert "a" in cache and "b" not in cache and len(cache) == 2

    def boom() -> str:
        raise OSError("disk")

    with pytest.raises(OSError):
        cache.get("d", boom)
    assert "d" not in cache and cache.get("d", lambda: "D") == "D"


def test_render_config_batching_keys_are_checked() -> None:
    from streamer.config import RenderConfig

    RenderConfig(batch_max=8, batch_wait_ms=4.0).validate()
    with pytest.raises(ValueError, match="batch_max must be 1 .. 64"):
        RenderConfig(batch_max=0).validate()
    with pytest.raises(ValueError, match="batch_wait_ms"):
        RenderConfig(batch_wait_ms=100.0).validate()
    with pytest.raises(ValueError, match="engine 'triton' needs engine_url"):
        RenderConfig(engine="triton").validate()
