"""Batched calls equal batch-1 calls on the real networks (torch, CPU, synthetic weights).

1, 3 and 8 sessions call through one :class:`~engines.batching_engine.BatchingEngine` from
their own threads; the gather window is long and the batch size is the session count, so they
form exactly one batch, and each session's rows must equal what it gets alone, within the
export tolerances (``export.onnx.TOLERANCES``). The generator runs at 128² (the smallest size
its layers allow; ~4x cheaper than 256²) from the 256 checkpoint (the weights do not depend on
the size), with two avatars whose source features come from a :class:`SourceCache`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.batching import BatchPolicy  # noqa: E402
from engines.batching_engine import BatchingEngine  # noqa: E402
from engines.contracts import contract_for  # noqa: E402
from engines.source_cache import SourceCache  # noqa: E402
from engines.torch_engine import TorchEngine, TorchEngineSet  # noqa: E402
from export.onnx import TOLERANCES  # noqa: E402
from export.tolerance import Tolerance  # noqa: E402

pytestmark = pytest.mark.neural

SESSIONS = (1, 3, 8)


def _concurrently(batcher: BatchingEngine, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Each call from its own thread, all released together."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def session(i: int) -> None:
        start.wait()
        results[i] = batcher.run(*calls[i])

    threads = [threading.Thread(target=session, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _one_batch(sessions: int) -> BatchPolicy:
    # A batch closes when all sessions are in (the window is only a bound here).
    return BatchPolicy(max_batch=sessions, max_wait_s=120.0, budget_s=600.0)


def _assert_close(got: dict[str, Any], want: dict[str, Any], tolerance: Tolerance) -> None:
    for name, expected in want.items():
        diff = np.abs(np.asarray(got[name], np.float64) - expected)
        scale = float(np.abs(expected).max())
        frac = float((diff > tolerance.off).mean())
        assert tolerance.allows(float(diff.max()), float(diff.mean()), frac, scale), (
            name,
            float(diff.max()),
        )


def _check(
    engine: Any,
    inputs: Callable[[int], tuple[Any, ...]],
    tolerance: Tolerance,
) -> dict[int, dict[int, int]]:
    """Batch-1 references for every session, then 1, 3 and 8 sessions batched."""
    references = [dict(engine.run(*inputs(i))) for i in range(max(SESSIONS))]
    sizes = {}
    for sessions in SESSIONS:
        batcher = BatchingEngine(engine, _one_batch(sessions))
        try:
            results = _concurrently(batcher, [inputs(i) for i in range(sessions)])
            sizes[sessions] = batcher.batch_sizes()
        finally:
            batcher.close()
        for i in range(sessions):
            _assert_close(results[i], references[i], tolerance)
    return sizes


def test_mapping_batched_equals_batch_one(synthetic_checkpoints: Path) -> None:
    engines = TorchEngineSet(synthetic_checkpoints, 256, ["mapping"], "cpu")
    contract = contract_for("mapping", 256)
    rng = np.random.default_rng(0)
    (example,) = (t.numpy() for t in contract.example_inputs())
    windows = [
        (example[:1] + 0.05 * rng.standard_normal(example[:1].shape)).astype(np.float32)
        for _ in range(max(SESSIONS))
    ]
    sizes = _check(engines.engine("mapping"), lambda i: (windows[i],), TOLERANCES["mapping"])
    assert sizes == {1: {1: 1}, 3: {3: 1}, 8: {8: 1}}
    engines.close()


@pytest.mark.slow
def test_generator_render_batched_equals_batch_one(synthetic_checkpoints: Path) -> None:
    """~20 frames at 128² (a minute or two on 2 idle cores)."""
    from msadtalker.models.generator import (
        FrameRenderer,
        OcclusionAwareSPADEGenerator,
        SourceEncoder,
    )
    from msadtalker.weights import build_network, load_weights

    size = 128
    generator = build_network("generator", load_weights(synthetic_checkpoints, 256, ["generator"]))
    assert isinstance(generator, OcclusionAwareSPADEGenerator)
    device = torch.device("cpu")
    encoder = TorchEngine(
        "generator_source_encoder",
        SourceEncoder(generator),
        contract_for("generator_source_encoder", size),
        device,
    )
    renderer = TorchEngine(
        "generator_render", FrameRenderer(generator), contract_for("generator_render", size), device
    )
    rng = np.random.default_rng(1)
    images = {a: rng.random((1, 3, size, size), dtype=np.float32) for a in ("ann", "bob")}
    sources: SourceCache[dict[str, Any]] = SourceCache(capacity=2)

    def source(avatar: str) -> dict[str, Any]:
        return sources.get(avatar, lambda: dict(encoder.run(images[avatar])))

    kp_source = (rng.random((1, 15, 3), dtype=np.float32) * 1.6 - 0.8).astype(np.float32)
    driving = [
        (kp_source + 0.05 * rng.standard_normal((1, 15, 3))).astype(np.float32)
        for _ in range(max(SESSIONS))
    ]

    def inputs(session: int) -> tuple[Any, ...]:
        features = source("ann" if session % 2 == 0 else "bob")
        return (
            features["source_volume"],
            features["source_compressed"],
            kp_source,
            driving[session],
        )

    sizes = _check(renderer, inputs, TOLERANCES["generator_render"])
    assert sizes == {1: {1: 1}, 3: {3: 1}, 8: {8: 1}}
    assert sources.computed == 2  # once per avatar, not per session or frame
