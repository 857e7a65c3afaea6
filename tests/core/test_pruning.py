import pytest
from pydantic import ValidationError

from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap

TM = TermMap({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0})  # total 10


def kept(policy):
    return set(policy.apply(TM))


def test_each_criterion():
    assert kept(PruningPolicy()) == {"a", "b", "c", "d"}
    assert kept(PruningPolicy(min_weight=2.0)) == {"a", "b", "c"}
    assert kept(PruningPolicy(max_ratio=0.6)) == {"a", "b"}  # >= 0.6 * 4
    assert kept(PruningPolicy(top_k=1)) == {"a"}
    assert kept(PruningPolicy(alpha_mass=0.7)) == {"a", "b"}  # 4+3 >= 7
    assert kept(PruningPolicy(alpha_mass=0.71)) == {"a", "b", "c"}


def test_criteria_combine_as_and():
    assert kept(PruningPolicy(top_k=3, min_weight=2.5)) == {"a", "b"}


def test_invalid_policies_fail_at_construction():
    for bad in ({"top_k": 0}, {"max_ratio": 1.5}, {"alpha_mass": 0}, {"min_weight": -1},
                {"topk": 3}):
        with pytest.raises(ValidationError):
            PruningPolicy(**bad)


def test_describe_is_stable():
    assert PruningPolicy().describe() == "none"
    assert PruningPolicy(top_k=5, max_ratio=0.1).describe() == "max_ratio=0.1,top_k=5"
