"""CPU time and resident memory of process trees, read from /proc (utime+stime, VmRSS)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    return text[text.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree(pids: Iterable[int]) -> list[int]:
    """The given processes and all their descendants."""
    children = _children_map()
    seen: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(children.get(pid, []))
    return seen


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes (children already reaped are not counted)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds and RSS per component at one instant."""

    cpu: dict[str, float]
    rss: dict[str, int]


def snapshot(components: Mapping[str, Iterable[int]]) -> Snapshot:
    cpu: dict[str, float] = {}
    rss: dict[str, int] = {}
    for name, roots in components.items():
        pids = tree(roots)
        cpu[name] = cpu_seconds(pids)
        rss[name] = rss_bytes(pids)
    return Snapshot(cpu, rss)


def cpu_delta(before: Snapshot, after: Snapshot) -> dict[str, float]:
    return {name: max(0.0, after.cpu[name] - before.cpu.get(name, 0.0)) for name in after.cpu}
