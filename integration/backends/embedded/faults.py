"""The embedded backend's fault points: where tests inject an error or a SIGKILL.

Every write, compaction, format-1 conversion and ANN build calls `fault_point` with the name of
the step it reached (``write:begin`` ... ``write:commit``, ``write:applied``, ``compact:*``,
``migrate:*``, ``vectors:put``, ``ann:*``). A fault-injection test sets `fault_hook` to a
function that raises an `OSError` or kills the process at the point it names. None (the
default) costs one attribute read per point.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["fault_hook", "fault_point"]

#: Test hook: called with the name of each fault point reached; None in production.
fault_hook: Callable[[str], None] | None = None


def fault_point(name: str) -> None:
    """The step `name` is reached: call `fault_hook` with it, if a test set one."""
    hook = fault_hook
    if hook is not None:
        hook(name)
