"""OpenSearch `sparse_vector` indices (neural sparse ANN, SEISMIC, 3.3+) against the scripted
server: every body sent for that field type validates against the closed schema written from
the 3.3 documentation (`schemas/opensearch_sparse_ann.json`, the shared spec predates the field),
token ids, SEISMIC's query parameters, the pruning policy, two-phase search, the version gate,
and indices from before field types existed."""

from __future__ import annotations

import sys

import pytest

from convsparse.errors import BackendError, InvalidTermMapError
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.opensearch import OpenSearchBackend
from convsparse.integration.backends.opensearch_query import neural_sparse_ann_query
from convsparse.integration.client import ConversationalSearch
from convsparse.mappings import index_body
from convsparse.mappings.sparse_vector import (
    SeismicParameters,
    SeismicQueryOptions,
    TokenIds,
    sparse_vector_property,
)
from convsparse.pruning import PruningPolicy
from convsparse.settings import Settings
from convsparse.termmap import TermMap

spec_validator = sys.modules["convsparse_tests_opensearch_spec_validator"]

sparse = pytest.mark.parametrize("backend_form", ["opensearch-sparse_vector"], indirect=True)
VOCAB = ["[PAD]", "paris", "capital", "france", "u.s", "washington", "100%", "lisbon"]
DOCS = {
    "france": TermMap({"paris": 2.2, "capital": 0.9, "france": 1.9}),
    "usa": TermMap({"u.s": 1.7, "capital": 0.3, "washington": 2.1}),
    "pct": TermMap({"100%": 1.1}),
}


def closed(definition):
    return spec_validator.sparse_ann_validator(definition)


def errors(definition, instance):
    return [e.message for e in closed(definition).iter_errors(instance)]


@pytest.fixture
def kb(fake, make_backend):
    backend = make_backend(token_vocabulary=VOCAB)
    backend.create_index("kb", fingerprint="fp", vocabulary="test-vocab")
    assert all(r.ok for r in backend.upsert("kb", [IndexedDocument(i, tm) for i, tm in DOCS.items()]))
    return backend


def searches(fake):
    return [b for m, p, b in fake.requests if p == "/kb/_search"]


def ann_queries(body):
    """The neural_sparse queries of a search body (first phase, then rescore)."""
    found = [body["query"]]
    if "rescore" in body:
        found.append(body["rescore"]["query"]["rescore_query"])
    return found


# ---------------------------------------------------------------------- every body, closed schema
@sparse
def test_every_body_sent_validates_against_the_closed_schema(fake, kb, spec):
    """Index creation, bulk sources and searches (first phase and rescore) as the backend sent
    them, against the closed sparse ANN schema, and through the (extended) closed spec."""
    create = next(b for m, p, b in fake.requests if m == "PUT" and p == "/kb")
    assert errors("SparseVectorProperty", create["mappings"]["properties"]["terms"]) == []
    assert errors("SparseIndexSettings", create["settings"]["index"]) == []
    spec.validate_index_body(create)
    for lines in fake.bulk_requests():
        for source in lines[1::2]:
            assert errors("TokenIdVector", source["terms"]) == []
    kb.search("kb", TermMap({"capital": 1.0}), k=2)
    kb.search("kb", TermMap({"capital": 1.0}), k=2, rescore=TermMap({"capital": 1.0, "paris": 0.5}),
              rescore_window=3)
    bodies = searches(fake)
    assert len(bodies) == 2 and "rescore" in bodies[1]
    for body in bodies:
        spec.validate_search_body(body)
        for query in ann_queries(body):
            assert errors("NeuralSparseAnnContainer", query) == []
    assert fake.validation_errors == []


@pytest.mark.parametrize("mutate, definition", [
    (lambda p: p["method"].__setitem__("nme", "seismic"), "SparseVectorProperty"),
    (lambda p: p["method"].__setitem__("name", "hnsw"), "SparseVectorProperty"),
    (lambda p: p["method"]["parameters"].__setitem__("n_posting", 10), "SparseVectorProperty"),
    (lambda p: p["method"]["parameters"].__setitem__("cluster_ratio", 1.0), "SparseVectorProperty"),
    (lambda p: p["method"]["parameters"].__setitem__("summary_prune_ratio", 0), "SparseVectorProperty"),
    (lambda p: p["method"]["parameters"].__setitem__("approximate_threshold", -1), "SparseVectorProperty"),
    (lambda p: p["method"]["parameters"].__setitem__("quantization_ceiling_ingest", 0), "SparseVectorProperty"),
    (lambda p: p.__setitem__("index_options", {}), "SparseVectorProperty"),
])
def test_closed_schema_rejects_misspelt_or_out_of_range_mapping(mutate, definition, spec):
    prop = sparse_vector_property(SeismicParameters(n_postings=4000))
    assert errors(definition, prop) == []
    mutate(prop)
    assert errors(definition, prop)
    body = index_body("fp", field_type="sparse_vector", token_ids=TokenIds(VOCAB))
    body["mappings"]["properties"]["terms"] = prop
    assert spec.errors(spec_validator.INDEX_CREATE, body)


@pytest.mark.parametrize("mutate", [
    lambda q: q["method_parameters"].__setitem__("topn", 3),
    lambda q: q["method_parameters"].__setitem__("k", 0),
    lambda q: q["method_parameters"].__setitem__("heap_factor", -1.0),
    lambda q: q.__setitem__("method_parameter", {}),
    lambda q: q["query_tokens"].__setitem__("paris", 1.0),  # a token string, not an id
    lambda q: q["query_tokens"].__setitem__("7", 65.0),  # above neural_sparse's 64
])
def test_closed_schema_rejects_misspelt_or_bad_queries(mutate, spec):
    query = neural_sparse_ann_query({"1": 1.5, "3": 0.5}, method_parameters=SeismicQueryOptions()
                                    .method_parameters(n_tokens=2, k=10))
    assert errors("NeuralSparseAnnContainer", query) == []
    mutate(query["neural_sparse"]["terms"])
    assert errors("NeuralSparseAnnContainer", query)
    assert spec.errors(spec_validator.SEARCH, {"query": query})


# ---------------------------------------------------------------------- mapping and _meta
def test_index_body_records_field_type_method_and_token_ids():
    body = index_body("fp", "v", field_type="sparse_vector", token_ids=TokenIds(VOCAB),
                      seismic=SeismicParameters(n_postings=300, approximate_threshold=0))
    meta = body["mappings"]["_meta"]
    assert body["settings"]["index"]["sparse"] is True
    assert body["mappings"]["properties"]["terms"] == {"type": "sparse_vector", "method": {
        "name": "seismic", "parameters": meta["seismic"]}}
    assert meta["seismic"]["n_postings"] == 300 and meta["seismic"]["approximate_threshold"] == 0
    assert (meta["field_type"], meta["encoder_fingerprint"]) == ("sparse_vector", "fp")
    assert TokenIds.from_record(meta["token_ids"]).tokens == VOCAB
    assert "feature_name_escaping" not in meta  # keys are ids, nothing is escaped
    assert index_body("fp")["mappings"]["_meta"]["field_type"] == "rank_features"
    with pytest.raises(ValueError, match="token_ids"):
        index_body("fp", field_type="sparse_vector")
    with pytest.raises(ValueError, match="only for field_type='sparse_vector'"):
        index_body("fp", seismic=SeismicParameters())
    with pytest.raises(ValueError, match="field_type"):
        index_body("fp", field_type="dense_vector")


def test_seismic_parameters_defaults_and_checks():
    assert SeismicParameters().to_dict() == {
        "cluster_ratio": 0.1, "summary_prune_ratio": 0.4, "approximate_threshold": 1_000_000,
        "quantization_ceiling_search": 3.0, "quantization_ceiling_ingest": 3.0}
    assert SeismicParameters.from_mapping({"n_postings": 10}).n_postings == 10
    for bad in ({"cluster_ratio": 1.0}, {"summary_prune_ratio": 1.5}, {"n_postings": 0},
                {"approximate_threshold": -1}, {"quantization_ceiling_search": 0}):
        with pytest.raises(ValueError):
            SeismicParameters.from_mapping(bad)
    with pytest.raises(ValueError, match="unknown SEISMIC parameter"):
        SeismicParameters.from_mapping({"n_posting": 10})
    assert SeismicParameters(summary_prune_ratio=1.0).summary_prune_ratio == 1.0


def test_token_ids_record_is_checked():
    table = TokenIds(VOCAB)
    record = table.record()
    assert TokenIds.from_record(record).digest == table.digest
    with pytest.raises(ValueError, match="digest"):
        TokenIds.from_record({**record, "tokens": VOCAB[:-1]})
    assert table.document_vector(TermMap({"u.s": 1.0, "paris": 2.0})) == {"4": 1.0, "1": 2.0}
    assert table.query_vector(TermMap({"u.s": 1.0, "oov": 2.0})) == {"4": 1.0}
    with pytest.raises(InvalidTermMapError, match="oov"):
        table.document_vector(TermMap({"oov": 1.0}))


@sparse
def test_describe_shows_the_vocabulary_summary_not_the_tokens(kb):
    info = kb.describe_index("kb")
    assert info.extra["field_type"] == "sparse_vector"
    assert info.extra["token_ids"] == {"size": len(VOCAB), "digest": TokenIds(VOCAB).digest}
    assert info.extra["seismic"] == SeismicParameters().to_dict()


# ---------------------------------------------------------------------- writes
@sparse
def test_documents_are_written_with_token_ids(fake, kb):
    stored = {doc["id"]: doc["terms"] for doc in fake.docs("kb").values()}
    assert stored["usa"] == {"4": 1.7, "2": 0.3, "5": 2.1}
    assert stored["pct"] == {"6": 1.1}


@sparse
def test_a_token_outside_the_vocabulary_fails_that_document_only(fake, kb):
    results = list(kb.upsert("kb", [IndexedDocument("ok", TermMap({"lisbon": 1.0})),
                                    IndexedDocument("bad", TermMap({"lisbon": 1.0, "porto": 2.0}))]))
    assert [(r.ok, r.status) for r in results] == [(True, 201), (False, 400)]
    assert "porto" in results[1].error and "vocabulary" in results[1].error
    assert "bad" not in {line.get("id") for body in fake.bulk_requests() for line in body}


# ---------------------------------------------------------------------- search
@sparse
def test_method_parameters_default_to_the_pruned_query_and_k(fake, kb):
    hits = kb.search("kb", TermMap({"capital": 1.0, "paris": 0.5, "oov": 3.0}), k=2)
    assert [h.id for h in hits] == ["france", "usa"]
    (body,) = searches(fake)
    ns = body["query"]["neural_sparse"]["terms"]
    assert ns["query_tokens"] == {"2": 1.0, "1": 0.5}  # "oov" cannot match: left out
    assert ns["method_parameters"] == {"top_n": 2, "heap_factor": 1.0, "k": 2}
    kb.search("kb", TermMap({"capital": 1.0}), k=2, rescore=TermMap({"capital": 1.0, "paris": 1.0}),
              rescore_window=10)
    body = searches(fake)[-1]
    assert body["query"]["neural_sparse"]["terms"]["method_parameters"]["k"] == 10  # the window
    rescore = body["rescore"]["query"]["rescore_query"]["neural_sparse"]["terms"]
    assert "method_parameters" not in rescore  # the exact query: every document of the window
    assert rescore["query_tokens"] == {"2": 1.0, "1": 1.0}


@sparse
def test_explicit_seismic_query_options(fake, make_backend, kb):
    backend = make_backend(seismic_query={"top_n": 1, "heap_factor": 1.5, "k": 7})
    hits = backend.search("kb", TermMap({"capital": 1.0, "washington": 0.1}), k=3)
    assert [h.id for h in hits] == ["france", "usa"]  # the fake kept only "capital" (top_n=1)
    assert searches(fake)[-1]["query"]["neural_sparse"]["terms"]["method_parameters"] == {
        "top_n": 1, "heap_factor": 1.5, "k": 7}
    with pytest.raises(ValueError):
        SeismicQueryOptions(top_n=0)
    with pytest.raises(ValueError):
        SeismicQueryOptions(heap_factor=0.0)


@sparse
def test_only_unknown_query_tokens_search_nothing(fake, kb):
    assert kb.search("kb", TermMap({"porto": 1.0})) == []
    assert searches(fake) == []


@sparse
def test_two_phase_rescore_scores_the_whole_window_exactly(fake, kb):
    """An approximate rescore with k = window would score 0 for window documents its own top
    k misses; the exact rescore scores them all (boost x quantized value, as on rank_features)."""
    full = TermMap({"capital": 2.0, "washington": 5.0})
    hits = kb.search("kb", TermMap({"capital": 2.0}), k=2, rescore=full, rescore_window=1)
    assert [h.id for h in hits] == ["france", "usa"]
    expected = sum(w * fake.quantize(DOCS["france"][t]) for t, w in full.items() if t in DOCS["france"])
    assert hits[0].score == pytest.approx(expected, rel=1e-6) and expected > 0


class StubEncoder:
    """The smallest `Encoder`: one fixed conversation term map."""

    fingerprint = "fp"
    vocabulary_name = "test-vocab"

    def __init__(self, term_map):
        self.term_map = term_map

    def encode_conversation(self, conversation):
        return self.term_map

    def encode_conversations(self, conversations, *, ids=None, batch_size=32):
        raise NotImplementedError

    def encode_documents(self, texts, *, ids=None, batch_size=32, progress=False):
        raise NotImplementedError


@sparse
def test_the_client_pruning_policy_still_prunes_the_query(fake, kb):
    full = TermMap({"capital": 2.0, "washington": 1.0, "paris": 0.5})
    search = ConversationalSearch("kb", encoder=StubEncoder(full), backend=kb,
                                  pruning=PruningPolicy(top_k=1), rescore_window=5)
    result = search.search("capital of the u.s.", k=2)
    assert (result.query_terms_before, result.query_terms_after) == (3, 1)
    body = searches(fake)[-1]
    first = body["query"]["neural_sparse"]["terms"]
    assert first["query_tokens"] == {"2": 2.0} and first["method_parameters"]["top_n"] == 1
    assert body["rescore"]["query"]["rescore_query"]["neural_sparse"]["terms"]["query_tokens"] == {
        "2": 2.0, "5": 1.0, "1": 0.5}


# ---------------------------------------------------------------------- gates and old indices
@pytest.mark.parametrize("backend_form", ["opensearch-rank_feature"], indirect=True)
def test_a_server_before_3_3_is_a_clear_error(fake, make_backend):
    assert fake.version.startswith("2.")
    backend = make_backend(field_type="sparse_vector", token_vocabulary=VOCAB)
    with pytest.raises(BackendError, match=r"OpenSearch 3\.3\.0 or later.*rank_features"):
        backend.create_index("kb", fingerprint="fp")
    assert "kb" not in fake.indices
    assert fake.validation_errors == []


def test_sparse_vector_needs_a_vocabulary(fake, make_backend):
    with pytest.raises(ValueError, match="token_vocabulary"):
        make_backend(field_type="sparse_vector").create_index("kb", fingerprint="fp")
    with pytest.raises(ValueError, match="field_type"):
        make_backend(field_type="sparse")


@sparse
def test_an_index_without_field_type_is_rank_features(fake, make_backend):
    """Indices created before field types were recorded: searched and written as rank_features,
    whatever the backend's own field_type."""
    body = index_body("fp")
    del body["mappings"]["_meta"]["field_type"]
    fake.indices["old"] = {"mappings": body["mappings"], "settings": body["settings"]["index"], "docs": {}}
    backend = make_backend(token_vocabulary=VOCAB)
    assert backend.describe_index("old").extra["field_type"] == "rank_features"
    assert all(r.ok for r in backend.upsert("old", [IndexedDocument("usa", DOCS["usa"])]))
    assert next(iter(fake.docs("old").values()))["terms"] == DOCS["usa"].to_rank_features()
    assert [h.id for h in backend.search("old", TermMap({"u.s": 1.0}))] == ["usa"]
    body = [b for m, p, b in fake.requests if p == "/old/_search"][-1]
    assert body["query"]["bool"]["should"][0]["rank_feature"]["field"] == "terms.u%2Es"


@sparse
def test_a_sparse_index_with_a_damaged_token_table_is_refused(fake, kb, make_backend):
    fake.indices["kb"]["mappings"]["_meta"]["token_ids"]["tokens"].append("extra")
    with pytest.raises(BackendError, match="digest"):
        make_backend().search("kb", TermMap({"paris": 1.0}))


def test_from_settings_reads_the_field_type(fake):
    backend = OpenSearchBackend.from_settings(Settings(
        opensearch_url=fake.url, opensearch_field_type="sparse_vector"), token_vocabulary=VOCAB)
    assert backend.field_type == "sparse_vector"
    assert OpenSearchBackend.from_settings(Settings(opensearch_url=fake.url)).field_type == "rank_features"


# ---------------------------------------------------------------------- CLI
class VocabularyStub(StubEncoder):
    vocabulary = VOCAB


@sparse
def test_cli_index_create_with_field_type(fake, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import convsparse.cli.index as cli_index
    from convsparse.cli import app

    monkeypatch.setattr(cli_index, "load_encoder", lambda settings: VocabularyStub(TermMap({})))
    monkeypatch.setenv("CONVSPARSE_OPENSEARCH_URL", fake.url)
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    args = ["index", "create", "kb", "--backend", "opensearch", "--field-type", "sparse_vector",
            "--seismic", '{"n_postings": 300}']
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = fake.indices["kb"]["mappings"]["_meta"]
    assert (meta["field_type"], meta["encoder_fingerprint"], meta["vocabulary"]) == (
        "sparse_vector", "fp", "test-vocab")
    assert meta["seismic"]["n_postings"] == 300 and meta["token_ids"]["tokens"] == VOCAB
    for bad, message in [
        (["index", "create", "x", "--backend", "embedded", "--field-type", "sparse_vector"], "applies to"),
        (["index", "create", "x", "--backend", "opensearch", "--field-type", "dense"], "must be one of"),
        (["index", "create", "x", "--backend", "opensearch", "--seismic", "{}"], "--seismic applies"),
        (args[:7] + ["--seismic", '{"n_posting": 3}'], "unknown SEISMIC"),
    ]:
        result = runner.invoke(app, bad)
        assert result.exit_code != 0 and message in result.output, result.output
    assert "x" not in fake.indices
