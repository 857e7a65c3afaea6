"""The one progress hook: a labelled bar with a total and an ETA (`progress_bar`, tqdm underneath)
and the callable a long job reports its steps to (`Say`, e.g. ``print`` or ``typer.echo``).

tqdm is imported only when a bar shows: a query never shows one, and a hidden bar iterates and
ignores updates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

#: where a long job reports a line of progress (``print``, ``typer.echo``, a logger's ``info``)
Say = Callable[[str], None]


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str | None = None, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar labelled `desc` over `iterable` (or `total` steps, advanced by ``update``),
    showing the count, the rate and the ETA; a no-op bar when not `enabled`. Other tqdm
    options (``unit``, ``initial``, ``unit_scale``...) pass through."""
    if not enabled or options.pop("disable", False):
        return _HiddenBar(iterable)
    from tqdm.auto import tqdm  # type: ignore[import-untyped]  # no stubs in the core install

    return tqdm(iterable, total=total, desc=desc, **options)


class _HiddenBar:
    """What a hidden bar does: iterate, ignore updates."""

    def __init__(self, iterable: Iterable[Any] | None = None):
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _HiddenBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:
        # set_postfix, set_description, refresh...: nothing to show
        return lambda *args, **kwargs: None


__all__ = ["Say", "progress_bar"]
