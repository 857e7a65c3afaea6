"""ConversationalSearch with the tiny student on the sample corpus."""

from __future__ import annotations

import math

import pytest

from convsparse import ConversationalSearch, PruningPolicy, SearchResult, TermMap
from convsparse.errors import FingerprintMismatchError, IndexNotFoundError, InvalidConversationError
from convsparse.integration.backends.embedded import EmbeddedBackend


@pytest.fixture
def client(sample_index, tiny_student):
    root, name = sample_index
    return ConversationalSearch(name, encoder=tiny_student, backend=EmbeddedBackend(root))


def test_public_exports():
    import convsparse

    assert {"ConversationalSearch", "PruningPolicy", "TermMap", "SearchResult"} <= set(convsparse.__all__)


def test_search_returns_hits_with_timings(client, sample_conversations):
    conv = next(c for c in sample_conversations if c["id"] == "lisbon_2")
    result = client.search(conv["turns"], k=5)
    assert isinstance(result, SearchResult)
    assert len(result.hits) == 5 and result.hits[0].id.startswith("lis-")
    assert result.hits[0].fields["text"]
    assert set(result.timings) >= {"format_ms", "encode_ms", "search_ms", "total_ms"}
    assert all(v >= 0 for v in result.timings.values())
    assert result.timings["total_ms"] >= result.timings["encode_ms"]
    assert result.query_terms_before == result.query_terms_after > 0
    assert 0 < result.flops <= result.query_terms_after and result.encoder_path == "local"
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


def test_pruning_reduces_terms_and_flops(client):
    conv = [{"role": "user", "text": "Tell me about the 1755 earthquake in Lisbon and how the city was rebuilt"}]
    full = client.search(conv, k=5)
    pruned = client.search(conv, k=5, pruning=PruningPolicy(top_k=8))
    assert pruned.query_terms_before == full.query_terms_before
    assert pruned.query_terms_after == 8 < full.query_terms_after
    assert pruned.flops < full.flops
    assert any(h.id.startswith("lis-") for h in pruned.hits)


def test_two_phase_rescore_restores_full_query_ranking(sample_index, tiny_student):
    root, name = sample_index
    conv = "how many people live in lisbon compared with portugal"
    policy = PruningPolicy(top_k=4)
    exact = ConversationalSearch(name, encoder=tiny_student, backend=EmbeddedBackend(root)).search(conv, k=5)
    two_phase = ConversationalSearch(name, encoder=tiny_student, backend=EmbeddedBackend(root),
                                     pruning=policy, rescore_window=60).search(conv, k=5)
    assert two_phase.query_terms_after == 4
    # a window covering every candidate of the pruned query gives the full query's scores
    for h in two_phase.hits:
        assert h.score == pytest.approx(next((e.score for e in exact.hits if e.id == h.id), h.score), rel=1e-5)


@pytest.mark.parametrize("bad, match", [
    ([], "no turns"),
    (42, "expected a list of turns"),
    ([{"role": "user"}], "text"),
    ([{"role": "robot", "text": "hi"}], "roles allowed"),
    ([{"role": "user", "text": "   "}], "empty"),
    ([{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}], "last turn"),
    (["just a string in a list"], "turn 0"),
])
def test_malformed_conversation(client, bad, match):
    with pytest.raises(InvalidConversationError, match=match):
        client.search(bad)


def test_unknown_index_and_fingerprint(sample_index, tiny_student, tmp_path):
    root, name = sample_index
    with pytest.raises(IndexNotFoundError):
        ConversationalSearch("nope", encoder=tiny_student, backend=EmbeddedBackend(root)).search("hi")

    class OtherEncoder:
        fingerprint = "other"

        def encode_conversation(self, conv):
            return TermMap({"lisbon": 1.0})

    with pytest.raises(FingerprintMismatchError):
        ConversationalSearch(name, encoder=OtherEncoder(), backend=EmbeddedBackend(root)).search("hi")


def test_index_documents_report(tiny_student, tmp_path):
    client = ConversationalSearch("docs", encoder=tiny_student, backend=EmbeddedBackend(tmp_path))
    report = client.index_documents(
        [{"id": "a", "text": "octopus hearts"}, {"id": "b", "text": ""}, {"text": "no id"}, 3,
         {"id": "c", "text": "sourdough bread", "title": "Bread"}],
        progress=False,
    )
    assert report.indexed == 2
    assert {rid for rid, _ in report.failures} == {"b", "item 3", "item 4"}
    assert all(reason for _, reason in report.failures)
    hit = client.search("sourdough bread", k=1).hits[0]
    assert hit.id == "c" and hit.fields["title"] == "Bread"
    assert not math.isnan(client.search("octopus").flops)
