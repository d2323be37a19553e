"""SFU fan-out (issue 12, item 5): a room published over WHIP to Janus' VideoRoom behind
simple-whip-server, watched by a subscriber that joined through Janus' HTTP API.

Everything runs in a network namespace of its own (tests/sfu_scenario.py, under
``unshare -rn``): Janus gathers no loopback candidates, so it gets a veth pair on 10.203.0.x
there. Janus comes from Debian and simple-whip-server from scripts/install-whip-server.sh
(both via scripts/install-media-servers.sh, which CI runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
WHIP_SERVER = Path(
    os.environ.get("MSADTALKER_WHIP_SERVER_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "msadtalker"
    / "simple-whip-server"
)
SCENARIO_S = 150  # Janus, the WHIP server, our pipeline, a publish, a second of video


def _missing() -> str:
    if shutil.which("janus") is None:
        return "janus not installed (scripts/install-media-servers.sh)"
    if not (WHIP_SERVER / ".installed").exists():
        return f"simple-whip-server not in {WHIP_SERVER} (scripts/install-whip-server.sh)"
    for tool in ("node", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return ""


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_missing()), reason=_missing())]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("sfu")
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "sfu_scenario.py", str(workdir), str(WHIP_SERVER)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=SCENARIO_S,
    )
    logs = "".join(
        f"\n--- {name}\n{(workdir / name).read_text(errors='replace')[-3000:]}"
        for name in ("janus.log", "whip.log")
        if (workdir / name).exists()
    )
    assert done.returncode == 0, f"{done.stderr[-6000:]}{logs}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_janus_viewer_receives_the_avatar_published_over_whip(seen: dict[str, Any]) -> None:
    assert seen["received"] >= 25
    height, width, _ = seen["size"]
    assert (height, width) == (256, 256)  # the SFU forwards, it does not transcode
    # The avatar, not a test pattern or a black frame: like the avatar at rest (the mouth
    # moves with the speech, the rest of the face does not).
    assert seen["similarity"] > 0.6, seen["similarity"]


def test_stopping_the_output_deletes_the_whip_resource(seen: dict[str, Any]) -> None:
    output = seen["output"]
    assert output["state"] == "finished", output
    assert output["frames_encoded"] >= 25 and output["reconnects"] == 0, output
    (endpoint,) = seen["endpoints"]
    assert endpoint["enabled"] is False  # the DELETE reached simple-whip-server


def test_a_refused_publish_is_an_error_state_and_no_retry(seen: dict[str, Any]) -> None:
    refused = seen["refused"]
    assert refused["state"] == "error: the WHIP endpoint answered 403: Unauthorized (gave up)"
    assert refused["frames_encoded"] == 0
    assert "nope" not in json.dumps(refused)  # the token never shows
