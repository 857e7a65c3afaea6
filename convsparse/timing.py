"""`elapsed_ms`: the milliseconds since a `time.perf_counter()` reading, the one way library
code measures a latency (the client's timings, the evaluation harness, the tuner, the workers)."""

from __future__ import annotations

import time

__all__ = ["elapsed_ms"]


def elapsed_ms(start: float) -> float:
    """Milliseconds elapsed since ``start``, a value of `time.perf_counter()`."""
    return (time.perf_counter() - start) * 1000.0
