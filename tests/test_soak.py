"""``msadtalker bench soak``, short: one publisher and one viewer on ``serve --workers 2`` for
a few seconds: every frame the session published is accounted for on every track (sent,
dropped by the declared policy, or still queued), the clients received what was sent (up to
the frames in flight), the metrics agree, and the JSON has its fields. The 10-minute run's
figures are in docs/live.md ("Load, soak, faults, fuzz")."""

from __future__ import annotations

import pytest

from streamer.bench.soak import bench_soak

pytestmark = pytest.mark.slow
IN_FLIGHT = 4  # frames on their way at either reading, per video track


async def test_a_short_soak_accounts_for_every_frame() -> None:
    result = await bench_soak(1, 1, seconds=8.0, warmup_s=2.0, serve_argv=["--workers", "2"])
    balance = result["balance"]
    assert balance["offered"] > 4 * 8 * 25  # 2 peers x 2 tracks x ~8 s at 25 fps
    assert balance["residual"] == 0, balance
    assert abs(balance["video_lost_in_transport"]) <= 2 * IN_FLIGHT, balance
    sessions = result["per_session"]
    assert [s["role"] for s in sessions] == ["publisher", "viewer"]
    for session in sessions:
        assert {t["kind"] for t in session["tracks"]} == {"audio", "video"}
        assert all(t["residual"] == 0 for t in session["tracks"]), session
    # The metrics (all workers, read just after the sessions) tell the same story.
    metrics = result["metrics"]
    published = sessions[0]["published"]
    assert abs(metrics["frames_published"] - published) <= 3, (metrics, published)
    assert abs(metrics["frames_sent_video"] - balance["video_sent"]) <= 2 * IN_FLIGHT
    assert set(metrics["frames_dropped"]) == {
        "render_busy",
        "render_late",
        "subscriber_queue_full",
        "interrupt_purge",
    }
    assert set(result["rss_by_worker"]) == {"0", "1"}
    for worker in result["rss_by_worker"].values():
        assert worker["at_a_mb"] > 0 and isinstance(worker["growth_percent"], float)
    assert result["window_s"] >= 8.0 and len(result["load_average_at_b"]) == 3
