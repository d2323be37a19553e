"""Cross-session batching, the synchronous core: when to close a batch and what goes in it.

Sessions of one process share an engine. Each per-frame call (a request: its inputs have
``rows`` rows on the batch axis and a ``deadline``, the time by which its session needs the
result) waits in a :class:`BatchCore`; the edge (``engines.batching_engine``) asks the core
when the next batch is due, takes it, runs it as one engine call and hands each caller its rows.

The rules, all decided from times passed in (``now``; no clock here, so tests inject one):

* a batch is due when it is full (``max_batch`` rows), when its oldest request has waited the
  gather window (``max_wait_s``, a few ms), or when waiting longer would make the earliest
  deadline unreachable (``deadline - estimated run time``), whichever comes first;
* requests go in earliest-deadline-first, and a batch grows only while its estimated run time
  still meets the earliest deadline in it: a session is never made late by others joining its
  batch (a request whose deadline cannot be met even alone still runs at once, alone or with
  whatever fits). Those left over form the next batch.

Run times come from :class:`CostModel`, a fixed plus per-row cost learnt from the batches run
(exponentially weighted), so the rule adapts to the engine and machine: on a GPU a batch of 8
costs little more than 1 and batches grow; on a CPU a row costs the same in any batch and they
stay small when deadlines are tight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BatchPolicy:
    """How long a request may wait for company, and how large a batch may grow.

    ``budget_s``: the frame budget a request gets when its caller names no deadline (40 ms =
    one 25-fps frame)."""

    max_batch: int = 8
    max_wait_s: float = 0.004
    budget_s: float = 0.040

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not (self.max_wait_s >= 0 and math.isfinite(self.max_wait_s)):
            raise ValueError(f"max_wait_s must be a finite number >= 0, got {self.max_wait_s}")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {self.budget_s}")


@dataclass
class CostModel:
    """Estimated seconds for a batch of ``rows`` rows: ``fixed + per_row * rows``.

    Learnt from observed batches (exponentially weighted, weight ``alpha`` for the newest);
    until then the prior values. Two observations of different sizes separate the fixed part
    from the per-row part; with one size only, the cost is attributed per row (the cautious
    choice: it predicts larger batches as slower)."""

    fixed_s: float = 0.0
    per_row_s: float = 0.0
    alpha: float = 0.2
    _by_rows: dict[int, float] = field(default_factory=dict, repr=False)

    def estimate(self, rows: int) -> float:
        return self.fixed_s + self.per_row_s * rows

    def observe(self, rows: int, seconds: float) -> None:
        if rows < 1 or not math.isfinite(seconds) or seconds < 0:
            return
        previous = self._by_rows.get(rows)
        self._by_rows[rows] = (
            seconds if previous is None else previous + self.alpha * (seconds - previous)
        )
        self._fit()

    def _fit(self) -> None:
        sizes = sorted(self._by_rows)
        if len(sizes) == 1:
            self.fixed_s, self.per_row_s = 0.0, self._by_rows[sizes[0]] / sizes[0]
            return
        # least squares over the sizes seen, each size once (so frequent sizes do not dominate)
        mean_n = sum(sizes) / len(sizes)
        mean_t = sum(self._by_rows[n] for n in sizes) / len(sizes)
        var = sum((n - mean_n) ** 2 for n in sizes)
        slope = sum((n - mean_n) * (self._by_rows[n] - mean_t) for n in sizes) / var
        slope = max(slope, 0.0)
        self.per_row_s = slope
        self.fixed_s = max(mean_t - slope * mean_n, 0.0)


@dataclass(frozen=True)
class Request:
    """One caller's call: ``payload`` is the edge's (inputs, reply slot); the core never reads
    it. ``group``: requests batch only with the same group (e.g. the same output placement)."""

    rows: int
    arrival: float
    deadline: float
    payload: Any = None
    group: Any = None


class BatchCore:
    """Pending requests of one engine and the batching rules (module docstring)."""

    def __init__(self, policy: BatchPolicy, cost: CostModel | None = None) -> None:
        self.policy = policy
        self.cost = cost if cost is not None else CostModel()
        self._pending: list[Request] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, request: Request) -> None:
        if request.rows < 1:
            raise ValueError(f"a request has at least one row, got {request.rows}")
        self._pending.append(request)

    def due(self) -> float | None:
        """When the next batch should start (may lie in the past); None when nothing waits."""
        if not self._pending:
            return None
        head = self._ordered()[0]
        batch = self._fitting(head.group, head.deadline)
        if sum(r.rows for r in batch) >= self.policy.max_batch:
            return min(r.arrival for r in batch)
        oldest = min(r.arrival for r in self._pending)
        latest_start = min(r.deadline for r in batch) - self.cost.estimate(
            sum(r.rows for r in batch)
        )
        return min(oldest + self.policy.max_wait_s, latest_start)

    def take(self, now: float) -> list[Request]:
        """The batch to run now (empty when none is due yet); taken requests leave the core."""
        due = self.due()
        if due is None or now < due:
            return []
        head = self._ordered()[0]
        batch = self._fitting(head.group, head.deadline, now)
        taken = {id(r) for r in batch}
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def drain(self) -> list[Request]:
        """Every pending request (the edge fails them when it closes)."""
        pending, self._pending = self._pending, []
        return pending

    def _ordered(self) -> list[Request]:
        return sorted(self._pending, key=lambda r: (r.deadline, r.arrival))

    def _fitting(self, group: Any, head_deadline: float, now: float | None = None) -> list[Request]:
        """Earliest-deadline-first requests of ``group`` while the batch stays within
        ``max_batch`` rows and (given a start time) its estimated end meets its earliest
        deadline; the head request always goes in."""
        batch: list[Request] = []
        rows = 0
        for request in self._ordered():
            if request.group != group:
                continue
            grown = rows + request.rows
            if batch:
                if grown > self.policy.max_batch:
                    break
                # EDF order: the head's deadline is the batch's earliest
                start = now if now is not None else _start_for(batch, self.policy)
                if start + self.cost.estimate(grown) > head_deadline:
                    break
            batch.append(request)
            rows = grown
        return batch


def _start_for(batch: Sequence[Request], policy: BatchPolicy) -> float:
    """The latest a batch would start by the gather rule alone (used before ``now`` is known)."""
    return min(r.arrival for r in batch) + policy.max_wait_s
