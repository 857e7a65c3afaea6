"""Server-side ingest through ML Commons (issue 33), end to end on the fake cluster, and the
backend's rules for an index that ML Commons fills.

The end-to-end test registers and deploys the built artifact, creates the ingest pipeline and
an index whose default pipeline it is, sends plain `{id, title, text}` documents with `_bulk`
(as Logstash or a team's own client would), and checks that a `query_tokens` search from the
client's anchored student returns the same hits with the same stored (9-bit FeatureField)
scores as an index filled by client-side ingest."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from convsparse.documents import document_text
from convsparse.errors import BackendError
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.bulk import document_id
from convsparse.integration.backends.mlcommons import MLCommonsClient
from convsparse.integration.backends.mlcommons_artifact import read_manifest
from convsparse.integration.backends.mlcommons_pipeline import MLCommonsIngest, default_pipeline_id
from convsparse.integration.backends.opensearch import OpenSearchBackend, build_client
from convsparse.integration.backends.opensearch_query import (
    check_server_encoded_query,
    neural_sparse_query,
    rank_feature_query,
)
from convsparse.settings import Settings
from convsparse.termmap import TermMap, unescape_token


def _sibling(name: str):
    """A helper module of this folder, loaded once by its conftest.py (`_load`)."""
    import sys

    return sys.modules[f"convsparse_tests_opensearch_{name}"]


fake_mlcommons = _sibling("fake_mlcommons")
mlcommons_spec = _sibling("mlcommons_spec")
quantize = _sibling("fake_server").quantize

DOCS = [
    ("d1", "Passport renewal", "How do I renew my U.S. passport? The fee is 100% higher for expedited service."),
    ("d2", None, "A visa is an endorsement on a passport allowing entry to a country, e.g. for tourism."),
    ("d3", "Embassy hours", "The embassy is open Monday to Friday; appointments are needed for passports."),
    ("d4", "  ", "Lost passports must be reported to the police and the passport office."),
    ("d5", "Driving licence", "Renew a driving licence online; the photo must be under 10 years old."),
    ("d6", "Taxes", "Income tax returns are due in April; extensions add 6 months."),
    ("d7", "Passport photos", "Photos must be 2x2 inches, taken in the last 6 months, no glasses."),
    ("d8", "Citizenship", "Naturalization requires 5 years of residence and a civics test."),
]
CONVERSATION = [
    {"role": "user", "text": "I need to travel abroad next month"},
    {"role": "assistant", "text": "You will need a valid passport and maybe a visa."},
    {"role": "user", "text": "how do I renew my passport quickly?"},
]


@pytest.fixture(scope="module")
def artifact():
    pytest.importorskip("torch")
    return read_manifest(fake_mlcommons.built_artifact())


@pytest.fixture
def mlfake(spec_or_none):
    ml_spec = mlcommons_spec.MLCommonsSpecValidator.load()
    with fake_mlcommons.FakeMLCommons(validator=spec_or_none, ml_validator=ml_spec) as server:
        yield server
        assert server.validation_errors == [], server.validation_errors


@pytest.fixture
def deployed(mlfake, artifact):
    """(OpenSearch client, model id, pipeline id, manifest) with the model deployed."""
    manifest, zip_path = artifact
    client = build_client(Settings(opensearch_url=mlfake.url, opensearch_timeout_s=30))
    ml = MLCommonsClient(client, sleep=lambda s: None)
    ml.check_settings(apply=True)
    model = ml.register_chunked(manifest, zip_path, ml.ensure_model_group())
    ml.deploy(model.model_id)
    pipeline = default_pipeline_id(manifest.fingerprint)
    ml.put_ingest_pipeline(pipeline, model.model_id, manifest.fingerprint)
    return client, model.model_id, pipeline, manifest


@contextmanager
def attention(student, implementation: str):
    """The student's base running `implementation` attention for a while."""
    mlm = student.base.model.mlm
    before = mlm.config._attn_implementation
    mlm.set_attn_implementation(implementation)
    try:
        yield
    finally:
        mlm.set_attn_implementation(before)


def _last_search(fake) -> dict:
    return [b for m, p, b in fake.requests if p.endswith("/_search")][-1]


def test_server_side_ingest_matches_client_side_ingest(mlfake, deployed):
    client, model_id, pipeline, manifest = deployed
    student = fake_mlcommons.shipped_student()
    fp = student.fingerprint
    backend = OpenSearchBackend(client, replicas=0)
    info = backend.create_index("server", fingerprint=fp, ingest=MLCommonsIngest(model_id, pipeline, manifest.sha256))
    assert info.extra["ingest"] == {"mode": "mlcommons", "model_id": model_id, "pipeline": pipeline,
                                    "artifact_sha256": manifest.sha256}
    assert mlfake.indices["server"]["settings"]["default_pipeline"] == pipeline
    assert mlfake.indices["server"]["mappings"]["_meta"]["feature_name_escaping"] == "none"
    backend.create_index("client", fingerprint=fp)

    # server side: plain documents through _bulk; the default pipeline encodes them
    lines = []
    for doc_id, title, text in DOCS:
        lines.append({"index": {"_index": "server", "_id": document_id(fp, doc_id)}})
        lines.append({"id": doc_id, "title": title, "text": text})
    response = client.bulk(body=lines, refresh=True)
    assert not response["errors"]
    stored = mlfake.docs("server")[document_id(fp, "d1")]
    assert "cs_doc_text" not in stored and any("." in t or "%" in t for t in stored["terms"])

    # client side: the student's term maps, computed with the attention the trace uses
    # (eager): then every stored 9-bit value is the server's, bit for bit
    texts, ids = [document_text(t, x) for _, t, x in DOCS], [d for d, _, _ in DOCS]
    with attention(student, "eager"):
        batch = student.encode_documents(texts, ids=ids)
    results = list(backend.upsert("client", [
        IndexedDocument(doc_id, batch[i], {"title": title, "text": text})
        for i, (doc_id, title, text) in enumerate(DOCS)]))
    assert all(r.ok for r in results)

    query = student.encode_conversation(CONVERSATION)
    server_hits = backend.search("server", query, k=5, fingerprint=fp)
    body = _last_search(mlfake)
    tokens = body["query"]["neural_sparse"]["terms"]["query_tokens"]
    assert set(tokens) == set(query) and not any("%2E" in t for t in tokens)  # raw names
    client_hits = backend.search("client", query, k=5, fingerprint=fp)
    assert "bool" in _last_search(mlfake)["query"]  # rank_feature, escaped, as before
    assert len(server_hits) == 5
    assert [(h.id, h.score) for h in server_hits] == [(h.id, h.score) for h in client_hits]
    for doc_id, _, _ in DOCS:  # every stored value, after FeatureField's 9-bit truncation
        key = document_id(fp, doc_id)
        server_terms = mlfake.docs("server")[key]["terms"]
        client_terms = {unescape_token(t): w for t, w in mlfake.docs("client")[key]["terms"].items()}
        assert {t: quantize(w) for t, w in server_terms.items()} == {t: quantize(w) for t, w in client_terms.items()}

    # the default client (SDPA attention) differs from the trace only in float rounding: the
    # same hits, scores within one 9-bit step
    sdpa = student.encode_documents(texts, ids=ids)
    list(backend.upsert("client", [IndexedDocument(d, sdpa[i]) for i, d in enumerate(ids)]))
    default_hits = backend.search("client", query, k=5, fingerprint=fp)
    assert [h.id for h in default_hits] == [h.id for h in server_hits]
    assert [h.score for h in default_hits] == pytest.approx([h.score for h in server_hits], rel=2**-8)

    # one-turn clients: the cluster's model encodes the text
    one_turn = backend.search_text("server", "renew passport", k=3)
    sent = _last_search(mlfake)["query"]["neural_sparse"]["terms"]
    assert sent == {"query_text": "renew passport", "model_id": model_id}
    as_tokens = backend.search("server", student.base.encode_texts(["renew passport"])[0], k=3)
    assert [h.id for h in one_turn] == [h.id for h in as_tokens]
    assert [h.score for h in one_turn] == pytest.approx([h.score for h in as_tokens], rel=1e-5)


def test_rules_of_an_ml_commons_index(mlfake, deployed):
    client, model_id, pipeline, manifest = deployed
    backend = OpenSearchBackend(client, replicas=0, query_mode="rank_feature")
    ingest = MLCommonsIngest(model_id, pipeline, manifest.sha256, two_phase_pipeline="two-phase")
    backend.create_index("kb", fingerprint="fp", ingest=ingest)
    assert mlfake.indices["kb"]["settings"]["search.default_pipeline"] == "two-phase"
    query = TermMap({"passport": 1.2, "u.s": 0.5})

    backend.search("kb", query, k=3)  # neural_sparse, raw names, whatever query_mode says
    assert _last_search(mlfake)["query"]["neural_sparse"]["terms"]["query_tokens"] == {"passport": 1.2, "u.s": 0.5}
    with pytest.raises(BackendError, match="two-phase search pipeline 'two-phase'.*rescore_window=0"):
        backend.search("kb", query, k=3, rescore=query, rescore_window=50)
    with pytest.raises(BackendError, match=r"query's tokens are escaped \(\['u%2Es'\]\)"):
        backend.search("kb", TermMap({"u%2Es": 1.0}), k=3)
    with pytest.raises(BackendError, match="encoded in the cluster by ML Commons model .* send its documents"):
        list(backend.upsert("kb", [IndexedDocument("d1", TermMap({"a": 1.0}))]))
    assert mlfake.docs("kb") == {}


def test_rescore_without_two_phase_uses_raw_names(mlfake, deployed):
    client, model_id, pipeline, manifest = deployed
    backend = OpenSearchBackend(client, replicas=0)
    backend.create_index("kb2", fingerprint="fp", ingest=MLCommonsIngest(model_id, pipeline, manifest.sha256))
    query = TermMap({"u.s": 0.5})
    backend.search("kb2", query, k=3, rescore=TermMap({"u.s": 0.5, "passport": 1.0}), rescore_window=20)
    rescore = _last_search(mlfake)["rescore"]["query"]["rescore_query"]
    assert rescore["neural_sparse"]["terms"]["query_tokens"] == {"u.s": 0.5, "passport": 1.0}


@pytest.mark.parametrize("model_id", [None, ""])
def test_search_text_on_a_plain_index_needs_a_model_id(mlfake, deployed, model_id):
    """An index without an ML Commons model and no (or an empty) model_id: the one-line error,
    not an AttributeError from the missing ingest record."""
    client, *_ = deployed
    backend = OpenSearchBackend(client, replicas=0)
    backend.create_index("plain", fingerprint="fp")
    with pytest.raises(BackendError, match="'plain' is not encoded by an ML Commons model; pass model_id"):
        backend.search_text("plain", "renew passport", model_id=model_id)


def test_check_server_encoded_query_refuses_what_cannot_match(spec):
    tm = TermMap({"u.s": 1.0})
    with pytest.raises(ValueError, match="rank_feature query cannot match"):
        check_server_encoded_query({"query": rank_feature_query(tm)})
    with pytest.raises(ValueError, match="escaped"):
        check_server_encoded_query(neural_sparse_query(tm))  # escaped by default
    raw = neural_sparse_query(tm, raw_names=True)
    check_server_encoded_query(raw)
    spec.validate_query(raw)
    spec.validate_query({"neural_sparse": {"terms": {"query_text": "x", "model_id": "m"}}})
