"""The set-up script (.ci/bootstrap.sh): what it installs when, and its log on a pipe.

Runs the real script in a scratch copy of the repository whose ``.venv/bin/python`` is a fake
that records its arguments, so nothing is installed and the test takes a fraction of a second.
The system packages the script checks are the ones ``bash .ci/run`` itself installs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
exit 0
"""
# Stands in for scripts/install-pytriton.sh (a 125 MB download): records that it ran.
FAKE_PYTRITON = """#!/usr/bin/env bash
echo ran >> "$(dirname "$0")/../.venv/pytriton.log"
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci" / "bootstrap.sh", tmp_path / ".ci" / "bootstrap.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "install-pytriton.sh").write_text(FAKE_PYTRITON)
    return tmp_path


def _bootstrap(repo: Path, profile: str) -> tuple[list[str], str]:
    """Source the script for ``profile``; the fake python's calls and the script's stderr."""
    log = repo / ".venv" / "calls.log"
    log.unlink(missing_ok=True)
    result = subprocess.run(
        ["bash", "-c", f'source "{repo}/.ci/bootstrap.sh" {profile}'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines() if log.exists() else []
    return [c for c in calls if c.startswith("-m pip")], result.stderr


def test_serve_after_the_tests_installs_nothing(scratch: Path) -> None:
    installs, _ = _bootstrap(scratch, "test")
    assert any("[live,neural,export,triton,dev]" in call for call in installs)
    installs, _ = _bootstrap(scratch, "serve")
    assert installs == []


def test_tests_after_serve_install_the_missing_extras(scratch: Path) -> None:
    installs, _ = _bootstrap(scratch, "serve")
    assert any("[live]" in call for call in installs)
    installs, _ = _bootstrap(scratch, "test")
    assert any("[live,neural,export,triton,dev]" in call for call in installs)
    assert _bootstrap(scratch, "test")[0] == []


def test_only_the_test_profile_makes_the_pytriton_venv(scratch: Path) -> None:
    ran = scratch / ".venv" / "pytriton.log"
    _bootstrap(scratch, "serve")
    assert not ran.exists()
    _bootstrap(scratch, "test")
    _bootstrap(scratch, "test")  # the script itself decides that a ready venv needs nothing
    assert ran.read_text().splitlines() == ["ran", "ran"]


def test_a_failed_pytriton_install_stops_the_bootstrap(scratch: Path) -> None:
    script = scratch / "scripts" / "install-pytriton.sh"
    script.write_text("#!/usr/bin/env bash\necho 'pip: no such version' >&2\nexit 1\n")
    result = subprocess.run(
        ["bash", "-c", f'source "{scratch}/.ci/bootstrap.sh" test && echo went-on'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "went-on" not in result.stdout
    assert "pip: no such version" in result.stderr


def test_a_changed_pyproject_installs_again(scratch: Path) -> None:
    _bootstrap(scratch, "serve")
    with (scratch / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    installs, _ = _bootstrap(scratch, "serve")
    assert any("[live]" in call for call in installs)


def test_log_has_no_colour_codes_on_a_pipe(scratch: Path) -> None:
    _, stderr = _bootstrap(scratch, "serve")
    assert "[bootstrap] installing msadtalker[live]" in stderr
    assert "\x1b[" not in stderr
