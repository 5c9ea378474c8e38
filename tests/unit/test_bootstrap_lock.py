"""tools/bootstrap.sh runs once at a time per checkout: a second run waits for the first."""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / ".cache" / "bootstrap.lock"


def test_a_second_bootstrap_waits_for_the_first_to_finish() -> None:
    """Two make targets at once must not race two `pip install -e` into one .venv."""
    LOCK.parent.mkdir(exist_ok=True)
    with LOCK.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running bootstrap holds
        second = subprocess.Popen(
            ["bash", str(REPO / "tools" / "bootstrap.sh")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert second.stderr is not None
            first_line = second.stderr.readline()  # printed before it blocks on the lock
            assert "waiting" in first_line, first_line
            assert second.poll() is None, "it went on while the lock was held"
        except BaseException:
            second.kill()
            second.wait()
            raise
        fcntl.flock(held, fcntl.LOCK_UN)
    _rest, errors = second.communicate(timeout=600)
    assert second.returncode == 0, errors
