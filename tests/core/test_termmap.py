import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convsparse.errors import InvalidTermMapError
from convsparse.termmap import FLOAT_MIN_NORMAL, TermMap, TermMapBatch, escape_token, unescape_token


@pytest.mark.parametrize(
    "weight, reason",
    [(float("nan"), "not finite"), (float("inf"), "not finite"), (0.0, "positive normal"),
     (-1.0, "positive normal"), (1e-40, "positive normal"), ("x", "not a number")],
)
def test_invalid_weights_are_rejected_with_record_and_token(weight, reason):
    with pytest.raises(InvalidTermMapError, match=reason) as e:
        TermMap({"ok": 1.0, "bad": weight}, record_id="doc-7")
    assert e.value.record_id == "doc-7" and e.value.token == "bad"
    assert "doc-7" in str(e.value) and "bad" in str(e.value)


def test_min_normal_is_accepted():
    assert TermMap({"a": FLOAT_MIN_NORMAL})["a"] == FLOAT_MIN_NORMAL


def test_empty_and_oversized_tokens_are_rejected():
    with pytest.raises(InvalidTermMapError, match="non-empty"):
        TermMap({"": 1.0})
    with pytest.raises(InvalidTermMapError, match="32766"):
        TermMap({"x" * 32767: 1.0})


def test_from_scores_drops_zeros_but_refuses_nan():
    tm = TermMap.from_scores(["a", "b", "c"], [0.0, 2.0, 1e-45])
    assert tm.to_dict() == {"b": 2.0}
    with pytest.raises(InvalidTermMapError, match="broken model"):
        TermMap.from_scores(["a"], [math.nan])


def test_dotted_tokens_are_escaped_reversibly():
    tm = TermMap({"u.s": 1.0, "100%": 2.0, "%2E": 3.0, "plain": 4.0})
    features = tm.to_rank_features()
    assert all("." not in k for k in features)
    assert features["u%2Es"] == 1.0 and features["plain"] == 4.0
    assert TermMap.from_rank_features(features) == tm


@given(st.text(min_size=1, max_size=20))
def test_escaping_round_trips_any_text(token):
    assert unescape_token(escape_token(token)) == token
    assert "." not in escape_token(token)


def test_token_ids_round_trip():
    vocab = ["[PAD]", "paris", "france"]
    tm = TermMap({"paris": 1.0, "france": 0.5})
    ids = tm.to_token_ids({t: i for i, t in enumerate(vocab)})
    assert ids == {1: 1.0, 2: 0.5}
    assert TermMap.from_token_ids(ids, vocab) == tm
    with pytest.raises(InvalidTermMapError, match="vocabulary"):
        TermMap({"london": 1.0}).to_token_ids({"paris": 1})


def test_batch_carries_fingerprint_and_checks_ids():
    batch = TermMapBatch([TermMap({"a": 1.0})], "sha256:abc", ["d1"])
    assert batch.fingerprint == "sha256:abc" and len(batch) == 1
    with pytest.raises(ValueError):
        TermMapBatch([TermMap({"a": 1.0})], "x", ["d1", "d2"])
