"""Failure injection through a real client and a scripted HTTP server answering with the
documented bulk response shapes: only 429s are retried (with capped, jittered backoff), 400/409
are reported per document, whole-request 429/413/dropped connections lose nothing.

Every test runs against both engines and both OpenSearch field types: OpenSearch
(opensearch-py) with a `rank_features` and with a `sparse_vector` index, and Elasticsearch
(elasticsearch-py, the server answering as Elasticsearch, product header included)."""

from __future__ import annotations

import math

import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.opensearch import document_id
from convsparse.termmap import TermMap


@pytest.fixture(params=["opensearch-rank_feature", "opensearch-sparse_vector",
                        "elasticsearch-rank_features"])
def backend_form(request):  # conftest's engine, fake and make_backend follow it
    return request.param


def docs(n, prefix="d", terms=3):
    return [IndexedDocument(f"{prefix}{i}", TermMap({f"t{j}": 1.0 + i + j for j in range(terms)}),
                            {"title": f"title {i}", "text": f"text {i}"}) for i in range(n)]


@pytest.fixture
def index(make_backend):
    make_backend().create_index("docs", fingerprint="fp", vocabulary="v")
    return "docs"


def stored_ids(fake, index="docs"):
    return sorted(doc["id"] for doc in fake.docs(index).values())


def test_mixed_items_only_429_retried(fake, make_backend, index):
    fake.item_rules = {"d1": [429, 429], "d2": [400], "d3": [409], "d4": [429]}
    backend = make_backend()
    results = list(backend.upsert(index, docs(8)))
    assert [r.id for r in results] == [f"d{i}" for i in range(8)]  # input order, one each
    by_id = {r.id: r for r in results}
    assert by_id["d1"].ok and by_id["d4"].ok
    assert not by_id["d2"].ok and by_id["d2"].status == 400
    assert "mapper_parsing_exception" in by_id["d2"].error
    assert "caused by illegal_argument_exception" in by_id["d2"].error
    assert not by_id["d3"].ok and by_id["d3"].status == 409
    assert "version_conflict_engine_exception" in by_id["d3"].error
    # retries: d1 sent 3 times, d4 twice, 400/409 exactly once, the rest once
    assert fake.attempts["d1"] == 3 and fake.attempts["d4"] == 2
    assert fake.attempts["d2"] == 1 and fake.attempts["d3"] == 1
    assert all(fake.attempts[f"d{i}"] == 1 for i in (0, 5, 6, 7))
    assert backend.stats.item_retries == 3 and backend.stats.requests == 3
    assert len(backend.recorded_sleeps) == 2
    # retried requests carry only the rejected documents
    assert [len(b) // 2 for b in fake.bulk_requests()] == [8, 2, 1]
    assert stored_ids(fake) == ["d0", "d1", "d4", "d5", "d6", "d7"]


def test_backoff_is_capped_exponential_with_jitter(fake, make_backend, index):
    fake.item_rules = {"d0": [429] * 5}
    backend = make_backend(initial_backoff=0.01, max_backoff=0.03, max_retries=6)
    assert all(r.ok for r in backend.upsert(index, docs(1)))
    caps = [0.01, 0.02, 0.03, 0.03, 0.03]
    assert len(backend.recorded_sleeps) == 5
    for delay, cap in zip(backend.recorded_sleeps, caps):
        assert cap / 2 <= delay <= cap
    # jitter: not all the capped delays are equal
    assert len({round(d, 9) for d in backend.recorded_sleeps[2:]}) > 1


def test_429_gives_up_after_max_retries(fake, make_backend, index):
    fake.item_rules = {"d0": [429] * 10}
    backend = make_backend(max_retries=2)
    (result, other) = list(backend.upsert(index, docs(2)))
    assert not result.ok and result.status == 429
    assert "es_rejected_execution_exception" in result.error
    assert other.ok
    assert fake.attempts["d0"] == 3


def test_whole_request_429_is_retried(fake, make_backend, index):
    fake.request_script = [429, 429]
    backend = make_backend()
    assert all(r.ok for r in backend.upsert(index, docs(5)))
    assert backend.stats.request_retries == 2
    assert stored_ids(fake) == [f"d{i}" for i in range(5)]


def test_whole_request_failure_reported_per_document_not_raised(fake, make_backend, index):
    fake.request_script = [429] * 10
    backend = make_backend(max_retries=2)
    results = list(backend.upsert(index, docs(3)))
    assert [r.status for r in results] == [429] * 3 and not any(r.ok for r in results)
    assert "after 3 attempt(s)" in results[0].error


def test_whole_request_400_is_not_retried(fake, make_backend, index):
    fake.request_script = [400]
    backend = make_backend()
    results = list(backend.upsert(index, docs(2)))
    assert [r.status for r in results] == [400, 400]
    assert backend.stats.request_retries == 0 and len(fake.bulk_requests()) == 1


def test_413_splits_the_chunk(fake, make_backend, index):
    fake.max_content_length = 1200  # bytes; one document line pair is ~250
    backend = make_backend()
    assert all(r.ok for r in backend.upsert(index, docs(16)))
    assert backend.stats.splits >= 3
    assert stored_ids(fake) == sorted(f"d{i}" for i in range(16))


def test_413_single_document_too_large_is_reported(fake, make_backend, index):
    fake.max_content_length = 2000
    backend = make_backend()
    big = IndexedDocument("big", TermMap({f"tok{i}": 1.0 for i in range(200)}))
    results = list(backend.upsert(index, [*docs(2), big, *docs(2, prefix="e")]))
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].status == 413 and "max_content_length" in results[2].error
    assert "big" not in stored_ids(fake)


@pytest.mark.parametrize("step", ["drop", "drop_after"])
def test_dropped_connection_is_replayed_without_duplicates(fake, make_backend, index, step):
    """A connection dropped before (or after) the server stored the chunk: the backend resends;
    deterministic _ids make the replay overwrite, so nothing is lost or duplicated."""
    fake.request_script = [step]
    backend = make_backend()
    assert all(r.ok for r in backend.upsert(index, docs(6)))
    assert backend.stats.request_retries == 1
    assert len(fake.docs(index)) == 6 and backend.count(index) == 6
    first, second = fake.bulk_requests()
    assert first == second  # same actions and _ids


def test_dropped_connection_is_resent_by_one_layer_only(fake, client, backend_cls, index):
    """The production client never resends on its own: a dropped connection is resent once, by
    the backend (with backoff), and replay is harmless for the same reason (deterministic _ids)."""
    fake.request_script = ["drop_after"]
    backend = backend_cls(client, sleep=lambda s: None)
    assert all(r.ok for r in backend.upsert(index, docs(4)))
    assert backend.stats.request_retries == 1 and len(fake.docs(index)) == 4


def test_connection_down_reports_every_document(fake, make_backend, index):
    fake.request_script = ["drop"] * 10
    backend = make_backend(max_retries=1)
    results = list(backend.upsert(index, docs(3)))
    assert not any(r.ok for r in results) and all(r.status == 503 for r in results)
    assert "ConnectionError" in results[0].error


def test_replay_overwrites(fake, make_backend, index):
    backend = make_backend()
    list(backend.upsert(index, docs(5)))
    results = list(backend.upsert(index, docs(5)))
    assert all(r.ok and r.status == 200 for r in results)  # "updated", not a new document
    assert backend.count(index) == 5
    assert set(fake.docs(index)) == {document_id("fp", f"d{i}") for i in range(5)}


def test_document_id_is_deterministic():
    assert document_id("fp", "a") == document_id("fp", "a")
    assert document_id("fp", "a") != document_id("fp2", "a")
    assert document_id("fp", "a\x00b") != document_id("fp\x00a", "b")
    assert len(document_id("fp", "x" * 10_000)) == 32


def test_invalid_documents_are_reported_and_never_sent(fake, make_backend, index):
    class Loose:  # a caller that bypasses TermMap validation with a plain dict
        def __init__(self, id, term_map, fields=None):
            self.id, self.term_map, self.fields = id, term_map, fields or {}

    batch = [
        IndexedDocument("ok1", TermMap({"a": 1.0})),
        Loose("nan", {"a": math.nan}),
        Loose("zero", {"a": 0.0}),
        Loose("neg", {"a": -1.0}),
        Loose("inf", {"a": math.inf}),
        Loose("subnormal", {"a": 1e-40}),
        Loose("", {"a": 1.0}),
        Loose("nanfield", TermMap({"a": 1.0}), {"score": math.nan}),
        Loose("objfield", TermMap({"a": 1.0}), {"when": object()}),
        IndexedDocument("ok2", TermMap({"u.s": 2.0}), {"title": "T", "extra": [1, 2]}),
    ]
    backend = make_backend(chunk_size=3)
    results = list(backend.upsert(index, batch))
    assert [r.ok for r in results] == [True] + [False] * 8 + [True]
    assert all(r.status == 400 and r.error for r in results[1:9])
    assert "finite" in results[1].error and "positive normal" in results[2].error
    sent = [line for body in fake.bulk_requests() for line in body]
    assert "NaN" not in repr(sent) and "nan" not in {line.get("id") for line in sent}
    assert stored_ids(fake) == ["ok1", "ok2"]
    stored = {doc["id"]: doc for doc in fake.docs(index).values()}
    if getattr(backend, "field_type", None) == "sparse_vector" and fake.engine == "opensearch":
        assert stored["ok2"]["terms"] == {str(backend.token_vocabulary.tokens.index("u.s")): 2.0}
    else:  # rank_features: escaped feature names
        assert stored["ok2"]["terms"] == {"u%2Es": 2.0}
    assert stored["ok2"]["metadata"] == {"extra": [1, 2]} and stored["ok2"]["title"] == "T"


def test_delete_documents(fake, make_backend, index):
    backend = make_backend()
    list(backend.upsert(index, docs(3)))
    results = list(backend.delete_documents(index, ["d0", "gone", ""]))
    assert [(r.id, r.ok, r.status, r.error) for r in results] == [
        ("d0", True, 200, None), ("gone", False, 404, "not found"),
        ("", False, 400, "id must be a non-empty string")]
    assert backend.count(index) == 2


def test_chunking_by_count_and_bytes(fake, make_backend, index):
    backend = make_backend(chunk_size=4)
    assert all(r.ok for r in backend.upsert(index, docs(10)))
    assert [len(b) // 2 for b in fake.bulk_requests()] == [4, 4, 2]
    fake.requests.clear()
    fake.bulk_sizes.clear()
    backend = make_backend(max_chunk_bytes=800)
    assert all(r.ok for r in backend.upsert(index, docs(10)))
    sizes = fake.bulk_sizes  # bytes on the wire: the writer counts exactly what it sends
    assert len(sizes) > 1 and all(size <= 800 for size in sizes)
    # one refresh per upsert call, after the last chunk
    assert fake.paths("POST").count("/docs/_refresh") == 1


def test_upsert_with_another_encoders_fingerprint_writes_nothing(fake, make_backend, index):
    """Issue 12, finding 1: `upsert(..., fingerprint=)` refuses another encoder's term maps
    before one request is sent, naming both fingerprints and the fix."""
    from convsparse.errors import FingerprintMismatchError

    backend = make_backend()
    with pytest.raises(FingerprintMismatchError) as e:
        list(backend.upsert(index, docs(3), fingerprint="fp-other"))
    assert "fp-other" in str(e.value) and "encoder fp," in str(e.value)
    assert "nothing was written" in str(e.value) and e.value.writing
    assert stored_ids(fake) == []
    assert all(r.ok for r in backend.upsert(index, docs(2), fingerprint="fp"))  # its own: fine
    assert stored_ids(fake) == ["d0", "d1"]
