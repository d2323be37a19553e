"""Prometheus figures of the rooms' outputs, read at scrape time (nothing on the hot path).

``msadtalker_broadcast_outputs{kind,state}`` (state: connecting, live, error, finished),
``msadtalker_broadcast_frames_encoded_total{kind}``,
``msadtalker_broadcast_frames_dropped_total{kind,reason}`` (queue_full, encoder_busy,
offline) and ``msadtalker_broadcast_reconnects_total{kind}``. Outputs that were forgotten
live on in ``BroadcastTotals``, so the counters never go backwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "msadtalker_broadcast"
STATES = ("connecting", "live", "error", "finished")
DROP_REASONS = ("queue_full", "encoder_busy", "offline")


class BroadcastTotals:
    """Running sums of the outputs that are gone (bounded: one number per kind and figure)."""

    def __init__(self) -> None:
        self.encoded: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.reconnects: Counter[str] = Counter()

    def add(self, status: dict[str, Any]) -> None:
        kind = str(status.get("kind", ""))
        self.encoded[kind] += int(status.get("frames_encoded", 0))
        self.reconnects[kind] += int(status.get("reconnects", 0))
        for reason, count in dict(status.get("dropped", {})).items():
            self.dropped[(kind, reason)] += int(count)


def coarse_state(state: str) -> str:
    """``error: refused`` -> ``error``; ``finished after error: ...`` -> ``finished``."""
    for name in STATES:
        if state.startswith(name):
            return name
    return "error"


class BroadcastCollector(Collector):
    def __init__(
        self, statuses: Callable[[], Iterable[dict[str, Any]]], totals: BroadcastTotals
    ) -> None:
        self._statuses = statuses
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        outputs = GaugeMetricFamily(
            f"{PREFIX}_outputs", "Outputs of the rooms by kind and state.", labels=["kind", "state"]
        )
        encoded = CounterMetricFamily(
            f"{PREFIX}_frames_encoded", "Frames the outputs' encoders encoded.", labels=["kind"]
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_frames_dropped",
            "Frames an output lost: its queue was full, its encoder was behind, or it was "
            "waiting to reconnect.",
            labels=["kind", "reason"],
        )
        reconnects = CounterMetricFamily(
            f"{PREFIX}_reconnects", "Attempts to reach an output's far end again.", labels=["kind"]
        )
        t = self._totals
        states: Counter[tuple[str, str]] = Counter()
        enc, drop, again = Counter(t.encoded), Counter(t.dropped), Counter(t.reconnects)
        for status in self._statuses():
            kind = str(status.get("kind", ""))
            states[(kind, coarse_state(str(status.get("state", ""))))] += 1
            enc[kind] += int(status.get("frames_encoded", 0))
            again[kind] += int(status.get("reconnects", 0))
            for reason, count in dict(status.get("dropped", {})).items():
                drop[(kind, reason)] += int(count)
        for (kind, state), count in sorted(states.items()):
            outputs.add_metric([kind, state], count)
        for kind, count in sorted(enc.items()):
            encoded.add_metric([kind], count)
        for (kind, reason), count in sorted(drop.items()):
            dropped.add_metric([kind, reason], count)
        for kind, count in sorted(again.items()):
            reconnects.add_metric([kind], count)
        yield from (outputs, encoded, dropped, reconnects)
