"""Pin this process to one CPU core, every thread of it: the budget the latency benchmarks
measure ("one core").

`os.sched_setaffinity(0, ...)` pins only the calling thread; threads started before it (a
tokenizer's or a runtime's pool) keep every core and would do part of the work in parallel,
so a stage's CPU time would exceed its wall time. Threads started later inherit the mask.
"""

from __future__ import annotations

import os


def pin_to_one_core() -> int:
    """Pin every thread of this process to its lowest allowed core; return the core."""
    core = min(os.sched_getaffinity(0))
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            pass
    return core
