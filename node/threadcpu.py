"""CPU time of this process by thread role, for ``/metrics`` (Linux ``/proc``).

A validator's CPU splits across threads with distinct jobs - the consensus thread, the
block writer, peer-tx admission, waitress's request threads, peer senders - and where it
goes is the first question about its speed. The kernel knows each thread's CPU
(``/proc/self/task/<tid>/stat``) but not its name: ``threading`` does. So each live
Python thread's CPU is read under its name with the instance suffix dropped
(``waitress-3`` -> ``waitress``, ``peer-sender-node-2`` -> ``peer-sender``,
``chain-write_0`` -> ``chain-write``), and the rest of the process's CPU - threads that
have ended, and threads Python never started, such as LevelDB's compaction - is
``other``. A thread that ends moves its time from its role to ``other``, so the values
are gauges, not counters; their sum is the process's CPU. Where ``/proc`` is missing
the answer is empty and the metric has no samples.
"""

from __future__ import annotations

import os
import re
import threading

_SUFFIX = re.compile(r"(?:-node)?[-_]\d+$")


def role(thread_name: str) -> str:
    """The role of a thread: its name without a trailing instance number."""
    if thread_name.startswith("Thread-"):  # threading's default name: nobody named it
        return "unnamed"
    return _SUFFIX.sub("", thread_name) or thread_name


def stat_cpu_seconds(path: str) -> float:
    """User + system CPU seconds from a ``/proc/.../stat`` file (a process or a thread);
    raises OSError, ValueError or IndexError where there is none to read."""
    with open(path, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds so far of this process's threads by role, plus ``other``."""
    try:
        total = stat_cpu_seconds("/proc/self/stat")
    except (OSError, ValueError, IndexError):
        return {}
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        try:
            cpu = stat_cpu_seconds(f"/proc/self/task/{t.native_id}/stat")
        except (OSError, ValueError, IndexError):
            continue  # it ended between the listing and the read: its time is in "other"
        name = role(t.name)
        out[name] = out.get(name, 0.0) + cpu
    out["other"] = max(0.0, total - sum(out.values()))
    return out
