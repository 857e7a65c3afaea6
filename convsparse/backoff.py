"""`Backoff`: how a transport waits between retries, one value object for every transport (the
bulk writer both engine backends share, and the LLM endpoint client), in the style of httpx's
`Timeout` and `Limits`.

Capped exponential backoff with equal jitter: retry ``n`` (1-based) waits a random time between
``cap / 2`` and ``cap``, where ``cap = min(max_s, initial_s * 2 ** (n - 1))``. Equal jitter
rather than full jitter because full jitter can draw 0 s and retry at once against a server that
just answered 429; the random half still spreads concurrent clients apart ("Exponential Backoff
And Jitter", AWS Architecture Blog, 2015).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Retries and the wait between them.

    - ``max_retries``: retries after the first attempt (0: never retry).
    - ``initial_s``: the cap of the first retry's wait; each retry doubles it.
    - ``max_s``: no wait is longer (a server's ``Retry-After`` is honoured up to it too).
    """

    max_retries: int = 4
    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"Backoff.max_retries must be >= 0, not {self.max_retries}")
        if not self.initial_s >= 0 or not self.max_s >= self.initial_s:
            raise ValueError(f"Backoff needs 0 <= initial_s <= max_s, not initial_s={self.initial_s}, "
                             f"max_s={self.max_s}")

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1, not {retry}")
        cap = min(self.max_s, self.initial_s * 2.0 ** (retry - 1))
        return cap / 2 + (rng or random).uniform(0, cap / 2)

    def retry_after(self, header: str | None) -> float | None:
        """A server's ``Retry-After`` in seconds, capped at ``max_s``; None when absent or not a
        number of seconds (an HTTP date is not honoured)."""
        if not header:
            return None
        try:
            seconds = float(header)
        except ValueError:
            return None
        return min(max(seconds, 0.0), self.max_s)
