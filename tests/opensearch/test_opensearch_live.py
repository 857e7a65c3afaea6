"""Live suite against a real OpenSearch: runs only when OPENSEARCH_URL is set (`-m opensearch`).

    docker run -d -p 9200:9200 -e discovery.type=single-node -e DISABLE_SECURITY_PLUGIN=true \\
        opensearchproject/opensearch:2
    OPENSEARCH_URL=http://localhost:9200 python -m pytest -q -m opensearch tests/opensearch

Optional: OPENSEARCH_USER / OPENSEARCH_PASSWORD, OPENSEARCH_CA_CERTS, OPENSEARCH_VERIFY_CERTS=0.

Every test using `live` runs on a `rank_features` and a `sparse_vector` index; the latter is
skipped unless the server is OpenSearch 3.3+ with the neural-search plugin
(`opensearchproject/opensearch:3.3.0` or later ships it).
"""

from __future__ import annotations

import os
import random
import sys
import uuid

import pytest
from opensearchpy.exceptions import RequestError

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.opensearch import OpenSearchBackend
from convsparse.mappings.sparse_vector import SPARSE_ANN_SINCE
from convsparse.settings import Settings
from convsparse.termmap import TermMap

pytestmark = [
    pytest.mark.opensearch,
    pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"), reason="OPENSEARCH_URL is not set"),
]


def quantize(value: float) -> float:
    return sys.modules["convsparse_tests_opensearch_fake_server"].quantize(value)


@pytest.fixture(scope="module")
def settings():
    return Settings(
        opensearch_url=os.environ["OPENSEARCH_URL"],
        opensearch_user=os.environ.get("OPENSEARCH_USER"),
        opensearch_password=os.environ.get("OPENSEARCH_PASSWORD"),
        opensearch_ca_certs=os.environ.get("OPENSEARCH_CA_CERTS") or None,
        opensearch_verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "1") not in ("0", "false"),
    )


#: The tokens of `corpus()`, in id order: the vocabulary of the sparse_vector index.
VOCAB = ["[PAD]"] + [f"w{i}" for i in range(40)] + ["u.s", "e.g.", "100%", "a%2Eb"]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("-")[0].split(".")[:3])


def _require_sparse_ann(backend: OpenSearchBackend) -> None:
    number = backend.client.info()["version"]["number"]
    if _version(number) < SPARSE_ANN_SINCE:
        pytest.skip(f"sparse_vector needs OpenSearch 3.3+, the server is {number}")
    plugins = backend.client.cat.plugins(format="json")
    if not any("neural-search" in p.get("component", "") for p in plugins):
        pytest.skip("sparse_vector needs the neural-search plugin")


def _live_backend(settings, field_type: str, **options) -> OpenSearchBackend:
    backend = OpenSearchBackend.from_settings(
        settings, replicas=0, field_type=field_type,
        token_vocabulary=VOCAB if field_type == "sparse_vector" else None, **options)
    if field_type == "sparse_vector":
        _require_sparse_ann(backend)
    return backend


@pytest.fixture(params=["rank_features", "sparse_vector"])
def live(settings, request):
    backend = _live_backend(settings, request.param)
    name = f"convsparse-test-{uuid.uuid4().hex[:10]}"
    backend.create_index(name, fingerprint="live-fp", vocabulary="test-vocab")
    yield backend, name
    backend.delete_index(name, missing_ok=True)


def corpus(n=60, seed=0):
    rng = random.Random(seed)
    vocab = VOCAB[1:]
    docs = []
    for i in range(n):
        tokens = rng.sample(vocab, 8)
        docs.append(IndexedDocument(f"doc-{i}", TermMap({t: rng.uniform(0.05, 3.0) for t in tokens}),
                                    {"title": f"Doc {i}", "text": f"text {i}", "n": i}))
    return docs


def test_live_index_bulk_search_delete(live):
    backend, name = live
    info = backend.describe_index(name)
    assert (info.fingerprint, info.vocabulary, info.count) == ("live-fp", "test-vocab", 0)
    docs = corpus()
    assert all(r.ok for r in backend.upsert(name, docs))
    assert backend.count(name) == len(docs)
    # replay: same _ids, overwritten, not duplicated
    assert all(r.ok for r in backend.upsert(name, docs))
    assert backend.count(name) == len(docs)

    query = TermMap({"w1": 1.2, "w7": 0.4, "u.s": 2.0, "100%": 0.7, "e.g.": 0.3})
    hits = backend.search(name, query, k=10, fingerprint="live-fp")
    by_id = {d.id: d.term_map for d in docs}
    expected = sorted(
        ((sum(w * quantize(by_id[i][t]) for t, w in query.items() if t in by_id[i]), i)
         for i in by_id), reverse=True)
    expected = [(s, i) for s, i in expected if s > 0][:10]
    assert [h.id for h in hits][:3] == [i for _, i in expected][:3]
    for hit in hits:
        exact = sum(w * quantize(by_id[hit.id][t]) for t, w in query.items() if t in by_id[hit.id])
        assert hit.score == pytest.approx(exact, rel=1e-5)
    assert hits[0].fields["title"].startswith("Doc ")

    # dotted tokens match (escaped on both sides)
    assert {h.id for h in backend.search(name, TermMap({"u.s": 1.0}), k=100)} == {
        d.id for d in docs if "u.s" in d.term_map}

    # two-phase: pruned query, full rescore
    pruned = TermMap(dict(query.top(2)))
    rescored = backend.search(name, pruned, k=5, rescore=query, rescore_window=50)
    for hit in rescored:
        exact = sum(w * quantize(by_id[hit.id][t]) for t, w in query.items() if t in by_id[hit.id])
        assert hit.score == pytest.approx(exact, rel=1e-5)

    deleted = list(backend.delete_documents(name, ["doc-0", "doc-0-missing"]))
    assert [(r.ok, r.status) for r in deleted] == [(True, 200), (False, 404)]
    assert backend.count(name) == len(docs) - 1
    backend.delete_index(name)
    assert name not in backend.client.indices.get_alias(index="*")


def test_live_server_enforces_what_we_validate(live):
    """Facts 1 and 8 (and a sparse_vector's integer keys), checked against the real server with
    the raw client."""
    backend, name = live
    if backend.field_type == "sparse_vector":
        with pytest.raises(RequestError):  # token strings are refused: keys are token ids
            backend.client.index(index=name, body={"id": "z", "terms": {"w1": 1.0}}, refresh=True)
    else:
        with pytest.raises(RequestError, match="mapper_parsing_exception|featureValue"):
            backend.client.index(index=name, body={"id": "z", "terms": {"a": 0.0}}, refresh=True)
    with pytest.raises(RequestError, match="strict_dynamic_mapping_exception"):
        backend.client.index(index=name, body={"id": "z", "unmapped": 1}, refresh=True)
    assert backend.max_clause_count >= 1


def test_live_neural_sparse(live):
    backend, name = live
    plugins = backend.client.cat.plugins(format="json")
    if not any("neural-search" in p.get("component", "") for p in plugins):
        pytest.skip("neural-search plugin not installed")
    docs = corpus(20, seed=1)
    assert all(r.ok for r in backend.upsert(name, docs))
    backend.query_mode = "neural_sparse"
    query = TermMap({"w3": 1.0, "u.s": 2.5})
    hits = backend.search(name, query, k=5)
    by_id = {d.id: d.term_map for d in docs}
    for hit in hits:
        exact = sum(w * quantize(by_id[hit.id][t]) for t, w in query.items() if t in by_id[hit.id])
        assert hit.score == pytest.approx(exact, rel=1e-4)


def test_live_sparse_ann_segments(settings):
    """`approximate_threshold: 1` makes every segment a SEISMIC one: scores are approximate
    (byte-quantized) there, so only the contract is checked: hits come back, each shares a
    token with the query, and a rescore gives the window exact dot products."""
    backend = _live_backend(settings, "sparse_vector", seismic={"approximate_threshold": 1})
    name = f"convsparse-test-{uuid.uuid4().hex[:10]}"
    backend.create_index(name, fingerprint="live-fp", vocabulary="test-vocab")
    try:
        docs = corpus(200, seed=2)
        assert all(r.ok for r in backend.upsert(name, docs))
        backend.client.indices.forcemerge(index=name, max_num_segments=1)
        backend.refresh(name)
        query = TermMap({"w3": 1.0, "w5": 0.5, "u.s": 2.0})
        hits = backend.search(name, query, k=10)
        by_id = {d.id: d.term_map for d in docs}
        assert hits and all(set(query) & set(by_id[h.id]) for h in hits)
        rescored = backend.search(name, TermMap({"u.s": 2.0}), k=5, rescore=query, rescore_window=5)
        for hit in rescored:
            exact = sum(w * quantize(by_id[hit.id][t]) for t, w in query.items() if t in by_id[hit.id])
            assert hit.score == pytest.approx(exact, rel=1e-4)
    finally:
        backend.delete_index(name, missing_ok=True)
