"""`length_batches`: every row once, sorted by length, and little padding in any batch."""

from __future__ import annotations

import random

import pytest

from convsparse.encoders.student_encoder_base import MAX_PADDING, length_batches


def _padding_share(lengths: list[int], batch: list[int]) -> float:
    width = max(lengths[i] for i in batch)
    return 1 - sum(lengths[i] for i in batch) / (len(batch) * width)


@pytest.mark.parametrize("seed", range(5))
def test_every_row_once_in_length_order_with_bounded_padding(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 256) for _ in range(rng.randint(1, 500))]
    batches = length_batches(lengths, 32)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(1 <= len(b) <= 32 for b in batches)
    assert all(_padding_share(lengths, b) <= MAX_PADDING for b in batches)


def test_one_conversations_views_are_not_padded_to_the_longest():
    # current question, earlier questions, previous answer, context (word pieces)
    lengths = [12, 91, 47, 36]
    batches = length_batches(lengths, 8)
    assert batches == [[0], [3, 2], [1]]
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded <= 1.1 * sum(lengths)


def test_a_long_list_of_close_lengths_fills_whole_batches():
    lengths = [100 + i % 7 for i in range(4096)]
    assert [len(b) for b in length_batches(lengths, 64)] == [64] * 64


def test_empty_and_zero_length_rows():
    assert length_batches([], 8) == []
    assert [i for b in length_batches([0, 0, 3], 8) for i in b] == [0, 1, 2]
