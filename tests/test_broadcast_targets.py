"""Output targets: which RTMP URLs are accepted, how a stream key is hidden everywhere it
could show (answers, logs, the configuration's repr), and the ``[broadcast]`` checks."""

from __future__ import annotations

import random

import pytest

from msadtalker.errors import ConfigError
from streamer.broadcast.output import Backoff
from streamer.broadcast.targets import OutputTargetError, check_rtmp_url, redact, scrub
from streamer.config import BroadcastConfig, load_config

KEY = "live_987654321_SecretKey"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"rtmp://a.rtmp.youtube.com/live2/{KEY}", "rtmp://a.rtmp.youtube.com/live2/<redacted>"),
        (f"rtmps://ingest.example:443/app/{KEY}", "rtmps://ingest.example:443/app/<redacted>"),
        (
            f"rtmp://live.twitch.tv/app/{KEY}?bandwidthtest=true",
            "rtmp://live.twitch.tv/app/<redacted>?<redacted>",
        ),
        (f"rtmp://user:{KEY}@host/app/x", "rtmp://<redacted>@host/app/<redacted>"),
        ("rtmp://[::1]:1935/live", "rtmp://[::1]:1935/live"),
    ],
)
def test_urls_are_accepted_and_shown_without_their_secrets(url: str, shown: str) -> None:
    assert check_rtmp_url(url) == url
    assert redact(url) == shown
    assert KEY not in redact(url)


def test_an_error_message_is_scrubbed_of_the_key_wherever_it_appears() -> None:
    url = f"rtmp://user:pass-{KEY}@host/app/{KEY}?auth={KEY}"
    message = f"Server error: cannot publish {KEY} to '{url}' (rtmp://host/app/{KEY})"
    scrubbed = scrub(message, url)
    assert KEY not in scrubbed and "pass-" not in scrubbed
    assert scrubbed.startswith("Server error: cannot publish <redacted> to 'rtmp://<redacted>@")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://host/app/{KEY}", "scheme must be rtmp:// or rtmps://"),
        (f"file:///etc/{KEY}", "scheme must be"),
        ("rtmp:///app/key", "no host"),
        ("rtmp://host", "no application name"),
        ("rtmp://host:99999/app/key", "not a URL"),
        (f"rtmp://host/app/{KEY} -f", "spaces"),
        ("", "URL is required"),
    ],
)
def test_unusable_urls_are_one_clear_line_without_the_key(url: str, message: str) -> None:
    with pytest.raises(OutputTargetError, match=message) as caught:
        check_rtmp_url(url)
    assert KEY not in str(caught.value)


def test_the_configuration_hides_its_urls_and_checks_them() -> None:
    config = load_config(None, {"broadcast.rtmp_urls": [f"rtmp://host/app/{KEY}-{{room}}"]})
    assert KEY not in repr(config) and "rtmp_urls=<1 hidden>" in repr(config.broadcast)
    with pytest.raises(ConfigError, match=r"\[broadcast\] rtmp_urls\[0\]: .*scheme") as caught:
        load_config(None, {"broadcast.rtmp_urls": [f"srt://host/app/{KEY}"]})
    assert KEY not in str(caught.value)
    with pytest.raises(ConfigError, match="audio_rate"):
        load_config(None, {"broadcast.audio_rate": 22050})
    with pytest.raises(ConfigError, match="reconnect_max_s"):
        load_config(None, {"broadcast.reconnect_min_s": 5.0, "broadcast.reconnect_max_s": 1.0})


def test_back_off_doubles_up_to_its_bound_with_jitter() -> None:
    backoff = Backoff.of(BroadcastConfig(reconnect_min_s=1.0, reconnect_max_s=8.0))
    rng = random.Random(1)
    delays = [backoff.delay(attempt, rng) for attempt in range(1, 8)]
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bounds, strict=True)), delays
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not in lockstep
