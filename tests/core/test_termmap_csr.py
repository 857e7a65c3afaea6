"""The CSR form of a term-map batch: same contract as `TermMap`, vectorised pruning equal to
`PruningPolicy.apply` exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convsparse.errors import InvalidTermMapError
from convsparse.pruning import PruningPolicy
from convsparse.termmap import (
    FLOAT_MIN_NORMAL,
    CsrRows,
    CsrTermMap,
    TermMap,
    TermMapBatch,
    Vocabulary,
    term_map_from_vector,
)

VOCAB = ["[PAD]", "paris", "u.s", "50%", "b", "a", "zz", "capital", "france", "city"]


def dense_rows():
    d = np.zeros((4, len(VOCAB)), dtype=np.float32)
    d[0, [1, 2, 3]] = [1.5, 0.25, 2.0]
    d[1, [4, 5, 6]] = [1.0, 1.0, 1.0]  # ties, broken by token
    d[3, [7, 8]] = [0.5, 1e-40]  # a subnormal is dropped, as TermMap.from_scores does
    return d


def test_csr_batch_equals_dense_path_and_is_lazy():
    dense = dense_rows()
    batch = TermMapBatch.from_csr(CsrRows.from_dense(dense), VOCAB, "fp", ["d0", "d1", "d2", "d3"])
    old = [term_map_from_vector(v, VOCAB) for v in dense]
    assert list(batch) == old and len(batch) == 4 and batch.ids == ["d0", "d1", "d2", "d3"]
    tm = batch[0]
    assert isinstance(tm, CsrTermMap) and isinstance(tm, TermMap)
    # the forms backends need come from the arrays, equal to the dict-based ones
    assert tm.to_rank_features() == {"paris": 1.5, "u%2Es": 0.25, "50%25": 2.0}
    assert tm.tokens_and_weights() == (["paris", "u.s", "50%"], [1.5, 0.25, 2.0])
    assert len(batch[2]) == 0 and batch[3].to_dict() == {"capital": 0.5}
    assert tm.top(1) == [("50%", 2.0)] and tm.total() == old[0].total()
    copy = pickle.loads(pickle.dumps(tm))
    assert type(copy) is TermMap and copy == tm and hash(copy) == hash(tm)


@pytest.mark.parametrize("bad, reason", [(np.nan, "nan"), (np.inf, "inf")])
def test_non_finite_weight_names_record_and_token(bad, reason):
    dense = dense_rows()
    dense[1, 8] = bad
    with pytest.raises(InvalidTermMapError, match=reason) as e:
        TermMapBatch.from_csr(CsrRows.from_dense(dense), VOCAB, "fp", ["d0", "d1", "d2", "d3"])
    assert e.value.record_id == "d1" and e.value.token == "france"


def test_invalid_vocabulary_token_is_rejected():
    vocab = list(VOCAB)
    vocab[9] = ""  # a hole in the vocabulary
    dense = dense_rows()
    dense[2, 9] = 1.0
    with pytest.raises(InvalidTermMapError, match="non-empty") as e:
        TermMapBatch.from_csr(CsrRows.from_dense(dense), vocab, "fp", list("abcd"))
    assert e.value.record_id == "c"


def test_take_rows_and_concat_round_trip():
    rows = CsrRows.from_dense(dense_rows())
    perm = np.array([3, 1, 0, 2])
    back = rows.take_rows(perm).take_rows(np.argsort(perm))
    for name in ("indptr", "indices", "values"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(back, name))
    both = CsrRows.concat([rows, CsrRows.empty(2), rows])
    assert both.n_rows == 10 and both.nnz == 2 * rows.nnz


POLICIES = [
    PruningPolicy(top_k=1), PruningPolicy(top_k=3), PruningPolicy(min_weight=0.5),
    PruningPolicy(max_ratio=0.5), PruningPolicy(alpha_mass=0.5), PruningPolicy(alpha_mass=1.0),
    PruningPolicy(top_k=4, min_weight=0.1, max_ratio=0.2, alpha_mass=0.9),
]


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 1.0, 2.5, 0.3333333]),
                           min_size=len(VOCAB), max_size=len(VOCAB)), min_size=1, max_size=6),
    policy=st.sampled_from(POLICIES),
)
def test_apply_csr_equals_apply(data, policy):
    """Ties (repeated weights) included: the top-k boundary is broken by token both ways."""
    dense = np.asarray(data, dtype=np.float32)
    dense[:, 0] = 0.0
    vocab = Vocabulary(VOCAB)
    pruned = policy.apply_csr(CsrRows.from_dense(dense), vocab)
    new = TermMapBatch.from_csr(pruned, vocab, "fp")
    old = [policy.apply(term_map_from_vector(v, VOCAB)) for v in dense]
    assert list(new) == old


def test_min_normal_weight_is_kept():
    dense = np.zeros((1, len(VOCAB)), dtype=np.float32)
    dense[0, 1] = FLOAT_MIN_NORMAL
    assert TermMapBatch.from_csr(CsrRows.from_dense(dense), VOCAB, "fp")[0].to_dict() == {
        "paris": FLOAT_MIN_NORMAL}


def test_batch_rank_features_equal_per_map():
    batch = TermMapBatch.from_csr(CsrRows.from_dense(dense_rows()), VOCAB, "fp")
    assert batch.rank_features() == [tm.to_rank_features() for tm in batch]
    plain = TermMapBatch([TermMap(tm) for tm in batch], "fp")
    assert plain.rank_features() == batch.rank_features()
