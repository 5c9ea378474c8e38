"""py-spy under load: where one authz worker spends its time, as self and inclusive tops."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from bench import procstat
from bench.load import wrk_saturation
from bench.stack import Stack

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def _short(frame: str) -> str:
    """'fn (path/to/module.py:12)' -> 'fn (module.py)'; line numbers split hot spots needlessly."""
    match = re.match(r"^(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$", frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['fn']} ({path})"


def summarize(raw: str, top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        found = _LINE.match(line.strip())
        if found is None:
            continue
        count = int(found["count"])
        frames = [_short(f) for f in found["stack"].split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(top), inclusive.most_common(top)


def profile_authz(
    stack: Stack,
    config_key: str,
    seconds: float,
    connections: int,
    out_dir: Path,
    *,
    native: bool = False,
) -> Path | None:
    pids = stack.authz_pids.get(config_key)
    config = next((c for c in stack.configurations if c.key == config_key), None)
    if not pids or config is None or shutil.which("py-spy") is None:
        return None
    # a supervisor's workers are its children: profile the first worker, not the supervisor
    pids = sorted(procstat.tree(pids)[1:]) or pids
    raw = stack.workdir / f"profile-{config_key}.raw"
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pids[0]),
            "--duration",
            f"{seconds:.0f}",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            *(["--native"] if native else ["--nonblocking"]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    load = threading.Thread(
        target=wrk_saturation,
        args=(config.url, stack.tokens_file),
        kwargs={"seconds": seconds + 2, "connections": connections},
    )
    load.start()
    _, err = spy.communicate(timeout=seconds + 60)
    load.join(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        print(f"py-spy failed: {err.strip()}")
        return None
    total, own, inclusive = summarize(raw.read_text())
    lines = [
        f"# py-spy ({'native' if native else 'Python'} frames) of one {config_key} worker"
        f" (pid {pids[0]}) at saturation, {seconds:.0f}s,"
        f" {total} samples",
        "",
        "## self time",
        "",
    ]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own]
    lines += ["", "## inclusive time", ""]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"profile-{config_key}.txt"
    out.write_text("\n".join(lines) + "\n")
    shutil.copy(raw, out_dir / f"profile-{config_key}.folded")
    return out
