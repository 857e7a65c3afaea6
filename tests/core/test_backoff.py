"""`Backoff`: the one retry policy of the bulk writer and the LLM endpoint."""

from __future__ import annotations

import random

import pytest

from convsparse.backoff import Backoff


def test_waits_double_up_to_the_cap_with_equal_jitter():
    b = Backoff(max_retries=6, initial_s=0.5, max_s=3.0)
    rng = random.Random(0)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)]:
        waits = [b.delay(retry, rng) for _ in range(200)]
        assert cap / 2 <= min(waits) and max(waits) <= cap  # never 0 s: a retry never fires at once


def test_retry_after_is_honoured_up_to_the_cap():
    b = Backoff(initial_s=0.1, max_s=5.0)
    assert b.retry_after("2") == 2.0
    assert b.retry_after("120") == 5.0
    assert b.retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert b.retry_after(None) is None


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"initial_s": -1.0}, {"initial_s": 2.0, "max_s": 1.0}])
def test_bad_values_are_refused_when_built(kwargs):
    with pytest.raises(ValueError, match="Backoff"):
        Backoff(**kwargs)
