"""Live suite against a real Elasticsearch: runs only when ELASTICSEARCH_URL is set.

    docker compose -f docker/docker-compose.yml --profile es up -d elasticsearch
    ELASTICSEARCH_URL=http://localhost:9201 python -m pytest -q -m elasticsearch tests/elasticsearch

Optional: ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USER / ELASTICSEARCH_PASSWORD,
ELASTICSEARCH_CA_CERTS, ELASTICSEARCH_VERIFY_CERTS=0. Use the client major of the server
(elasticsearch-py 8.x for an 8.x server).
"""

from __future__ import annotations

import os
import random
import sys
import uuid

import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.elasticsearch import ElasticsearchBackend
from convsparse.mappings.elasticsearch import token_pruning_config
from convsparse.settings import Settings
from convsparse.termmap import TermMap

pytestmark = [
    pytest.mark.elasticsearch,
    pytest.mark.skipif(not os.environ.get("ELASTICSEARCH_URL"), reason="ELASTICSEARCH_URL is not set"),
]


def quantize(value: float) -> float:
    return sys.modules["convsparse_tests_opensearch_fake_server"].quantize(value)


@pytest.fixture(scope="module")
def settings():
    return Settings(
        elasticsearch_url=os.environ["ELASTICSEARCH_URL"],
        elasticsearch_api_key=os.environ.get("ELASTICSEARCH_API_KEY"),
        elasticsearch_user=os.environ.get("ELASTICSEARCH_USER"),
        elasticsearch_password=os.environ.get("ELASTICSEARCH_PASSWORD"),
        elasticsearch_ca_certs=os.environ.get("ELASTICSEARCH_CA_CERTS") or None,
        elasticsearch_verify_certs=os.environ.get("ELASTICSEARCH_VERIFY_CERTS", "1") not in ("0", "false"),
    )


@pytest.fixture(params=["rank_features", "sparse_vector"])
def live(request, settings):
    backend = ElasticsearchBackend.from_settings(settings, field_type=request.param, replicas=0)
    name = f"convsparse-test-{uuid.uuid4().hex[:10]}"
    backend.create_index(name, fingerprint="live-fp", vocabulary="test-vocab")
    yield backend, name
    backend.delete_index(name, missing_ok=True)


def corpus(n=60, seed=0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)] + ["u.s", "e.g.", "100%", "a%2Eb"]
    return [IndexedDocument(f"doc-{i}", TermMap({t: rng.uniform(0.05, 3.0) for t in rng.sample(vocab, 8)}),
                            {"title": f"Doc {i}", "text": f"text {i}", "n": i}) for i in range(n)]


def exact(query, term_map):
    return sum(w * quantize(term_map[t]) for t, w in query.items() if t in term_map)


def test_live_index_bulk_search_delete(live):
    backend, name = live
    info = backend.describe_index(name)
    assert (info.fingerprint, info.vocabulary, info.count) == ("live-fp", "test-vocab", 0)
    assert info.extra["field_type"] == backend.field_type
    docs = corpus()
    assert all(r.ok for r in backend.upsert(name, docs))
    assert all(r.ok for r in backend.upsert(name, docs))  # replay overwrites
    assert backend.count(name) == len(docs)

    by_id = {d.id: d.term_map for d in docs}
    query = TermMap({"w1": 1.2, "w7": 0.4, "u.s": 2.0, "100%": 0.7, "e.g.": 0.3})
    hits = backend.search(name, query, k=10, fingerprint="live-fp")
    ranked = sorted(((exact(query, tm), i) for i, tm in by_id.items()), reverse=True)
    assert [h.id for h in hits][:3] == [i for s, i in ranked if s > 0][:3]
    for hit in hits:
        assert hit.score == pytest.approx(exact(query, by_id[hit.id]), rel=1e-5)
    assert {h.id for h in backend.search(name, TermMap({"u.s": 1.0}), k=100)} == {
        d.id for d in docs if "u.s" in d.term_map}

    pruned = TermMap(dict(query.top(2)))
    for hit in backend.search(name, pruned, k=5, rescore=query, rescore_window=50):
        assert hit.score == pytest.approx(exact(query, by_id[hit.id]), rel=1e-5)

    deleted = list(backend.delete_documents(name, ["doc-0", "doc-0-missing"]))
    assert [(r.ok, r.status) for r in deleted] == [(True, 200), (False, 404)]
    assert backend.count(name) == len(docs) - 1


def test_live_token_pruning_then_exact_rescore(live):
    backend, name = live
    if backend.field_type != "sparse_vector":
        pytest.skip("token pruning is a sparse_vector option")
    docs = corpus(40, seed=2)
    assert all(r.ok for r in backend.upsert(name, docs))
    by_id = {d.id: d.term_map for d in docs}
    backend.token_pruning = token_pruning_config(1, 0.9)
    query = TermMap({"w1": 2.0, "w2": 0.1, "w3": 0.1, "u.s": 1.5})
    for hit in backend.search(name, query, k=5, rescore=query, rescore_window=40):
        assert hit.score == pytest.approx(exact(query, by_id[hit.id]), rel=1e-5)


def test_live_server_enforces_what_we_validate(live):
    backend, name = live
    from elasticsearch import BadRequestError

    if backend.field_type == "rank_features":  # facts file, 1: featureValue must be a positive normal float
        with pytest.raises(BadRequestError):
            backend.client.index(index=name, document={"id": "z", "terms": {"a": 0.0}}, refresh=True)
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        backend.client.index(index=name, document={"id": "z", "unmapped": 1}, refresh=True)
    if backend.field_type == "sparse_vector":
        with pytest.raises(BadRequestError, match="dots"):
            backend.client.index(index=name, document={"id": "z", "terms": {"u.s": 1.0}}, refresh=True)
