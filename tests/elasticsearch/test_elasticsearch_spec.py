"""Every body the Elasticsearch backend sends validates against Elastic's published OpenAPI
document, closed (a misspelt key fails); the version gates in the backend are the spec's
`@availability` lines."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
from jsonschema.exceptions import ValidationError

from convsparse.integration.backends import elasticsearch as es_backend
from convsparse.integration.backends import opensearch_query
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.elasticsearch_query import (
    build_query,
    rank_feature_query,
    sparse_vector_query,
)
from convsparse.integration.backends.opensearch_query import search_body
from convsparse.mappings.elasticsearch import index_body, token_pruning_config
from convsparse.termmap import TermMap

QUERY = TermMap({"paris": 1.5, "u.s": 0.25, "100%": 0.5, "capital": 2.0})
PRUNING = token_pruning_config(5, 0.4, False)
INDEX_OPTIONS = {"prune": True, "pruning_config": token_pruning_config(10, 0.2)}


def bodies():
    rf = rank_feature_query(QUERY)
    sv = sparse_vector_query(QUERY)
    pruned = sparse_vector_query(QUERY, prune=True, pruning_config=PRUNING)
    return {
        "rank_feature": search_body(rf, 10),
        "sparse_vector": search_body(sv, 10),
        "sparse_vector_server_defaults": search_body(sparse_vector_query(QUERY, prune=True), 10),
        "rescore_rf": search_body(rank_feature_query(TermMap({"paris": 1.5})), 5, rescore=rf,
                                  rescore_window=100),
        "rescore_sv_pruned": search_body(pruned, 5, rescore=sv, rescore_window=50),
        "fields": search_body(rf, 3, source_fields=["id", "title"], exclude_fields=()),
    }


@pytest.mark.parametrize("options", [
    {}, {"bulk_load": True}, {"field": "sparse", "shards": 3, "replicas": 2},
    {"vocabulary": None}, {"shards": None, "replicas": None},
    {"field_type": "sparse_vector"},
    {"field_type": "sparse_vector", "index_options": INDEX_OPTIONS},
    {"field_type": "sparse_vector", "index_options": {"prune": False}},
])
def test_index_body_validates(es_spec, options):
    vocabulary = options.pop("vocabulary", "bert-base-uncased:30522")
    body = index_body("fp-123", vocabulary, **options)
    es_spec.validate_index_body(body)
    mappings = body["mappings"]
    field_type = options.get("field_type", "rank_features")
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"]["encoder_fingerprint"] == "fp-123"
    assert mappings["_meta"]["field_type"] == field_type
    term = mappings["properties"][options.get("field", "terms")]
    assert term["type"] == field_type
    assert ("index_options" in term) == ("index_options" in options)
    assert mappings["properties"]["metadata"] == {"type": "object", "enabled": False}
    if options.get("shards", 1) is None:
        assert body["settings"]["index"] == {"refresh_interval": "1s"}


def test_index_body_arguments_are_checked():
    with pytest.raises(ValueError, match="fingerprint"):
        index_body("")
    with pytest.raises(ValueError, match="field_type"):
        index_body("fp", field_type="dense_vector")
    with pytest.raises(ValueError, match="index_options"):
        index_body("fp", index_options={"prune": True})
    with pytest.raises(ValueError, match="term field"):
        index_body("fp", field="a.b")
    with pytest.raises(ValueError):
        token_pruning_config(tokens_freq_ratio_threshold=0)
    with pytest.raises(ValueError):
        token_pruning_config(tokens_weight_threshold=1.5)


@pytest.mark.parametrize("field_type, mutate", [
    ("rank_features", lambda b: b["mappings"].__setitem__("dynamc", "strict")),
    ("rank_features", lambda b: b["mappings"]["properties"]["terms"].__setitem__("positive_score_impac", True)),
    ("rank_features", lambda b: b["mappings"]["properties"]["terms"].__setitem__("index_options", {})),
    ("rank_features", lambda b: b["mappings"]["properties"]["metadata"].__setitem__("enable", False)),
    ("sparse_vector", lambda b: b["mappings"]["properties"]["terms"]["index_options"].__setitem__("prun", True)),
    ("sparse_vector", lambda b: b["mappings"]["properties"]["terms"]["index_options"]["pruning_config"]
     .__setitem__("tokens_weight_treshold", 0.1)),
    ("sparse_vector", lambda b: b.__setitem__("setings", {})),
])
def test_misspelt_mapping_key_fails(es_spec, field_type, mutate):
    options = {"index_options": copy.deepcopy(INDEX_OPTIONS)} if field_type == "sparse_vector" else {}
    body = index_body("fp", field_type=field_type, **options)
    es_spec.validate_index_body(body)
    mutate(body)
    assert es_spec.errors(es_spec.INDEX_CREATE, body)


@pytest.mark.parametrize("name", list(bodies()))
def test_search_bodies_validate(es_spec, name):
    es_spec.validate_search_body(bodies()[name])


@pytest.mark.parametrize("name, path, key", [
    ("rescore_rf", ("query", "bool", "should", 0, "rank_feature"), "linaer"),
    ("rescore_rf", ("query", "bool"), "shoud"),
    ("rescore_rf", ("rescore",), "window_sise"),
    ("rescore_rf", ("rescore", "query"), "rescore_qeury"),
    ("rescore_sv_pruned", ("query", "sparse_vector"), "query_vectr"),
    ("rescore_sv_pruned", ("query", "sparse_vector"), "pruning_confg"),
    ("rescore_sv_pruned", ("query", "sparse_vector", "pruning_config"), "tokens_freq_ratio"),
    ("rescore_sv_pruned", ("rescore", "query", "rescore_query", "sparse_vector"), "prun"),
    ("sparse_vector", (), "siz"),
])
def test_misspelt_search_key_fails(es_spec, name, path, key):
    body = copy.deepcopy(bodies()[name])
    es_spec.validate_search_body(body)
    node = body
    for step in path:
        node = node[step]
    node[key] = {}
    assert es_spec.errors(es_spec.SEARCH, body)


def test_sparse_vector_needs_exactly_one_of_query_vector_or_inference_id(es_spec):
    body = bodies()["sparse_vector"]
    body["query"]["sparse_vector"]["inference_id"] = "my-elser"
    assert es_spec.errors(es_spec.SEARCH, body)
    del body["query"]["sparse_vector"]["query_vector"]
    del body["query"]["sparse_vector"]["inference_id"]
    assert es_spec.errors(es_spec.SEARCH, body)


def test_rank_features_body_is_the_opensearch_one():
    # byte for byte the OpenSearch body (same Lucene scoring)
    assert rank_feature_query(QUERY) == opensearch_query.rank_feature_query(QUERY)


def test_query_builder_rules():
    sv = sparse_vector_query(QUERY)["sparse_vector"]
    assert sv["prune"] is False and "pruning_config" not in sv  # exact unless asked
    assert sv["query_vector"] == QUERY.to_rank_features()  # escaped names, as indexed
    with pytest.raises(ValueError, match="prune=True"):
        sparse_vector_query(QUERY, pruning_config=PRUNING)
    with pytest.raises(ValueError, match="sparse_vector"):
        build_query(QUERY, field_type="rank_features", prune=True)
    with pytest.raises(ValueError, match="unknown field type"):
        build_query(QUERY, field_type="dense")
    from convsparse.errors import TooManyClausesError

    with pytest.raises(TooManyClausesError):
        sparse_vector_query({f"t{i}": 1.0 for i in range(1025)})


def test_bulk_lines_from_backend_validate(es_spec, fake, make_backend):
    """The action and source lines the backend really sends, for both field types."""
    for field_type in ("rank_features", "sparse_vector"):
        fake.requests.clear()
        backend = make_backend(field_type=field_type)
        backend.create_index(field_type, fingerprint="fp", vocabulary="v")
        docs = [IndexedDocument(f"d{i}", TermMap({"a.b": 1.0 + i, "%x": 0.5}),
                                {"title": "T", "text": "body", "lang": "en", "n": i}) for i in range(3)]
        assert all(r.ok for r in backend.upsert(field_type, docs))
        assert [r.ok for r in backend.delete_documents(field_type, ["d0", "missing"])] == [True, False]
        create_lines, delete_lines = fake.bulk_requests()[:2]
        mapping = fake.indices[field_type]["mappings"]
        assert es_spec.validate_bulk_lines(create_lines, mapping) == 3
        assert es_spec.validate_bulk_lines(delete_lines) == 2
        bad = copy.deepcopy(create_lines)
        bad[0]["index"]["_idd"] = "x"
        with pytest.raises(ValidationError):
            es_spec.validate_bulk_lines(bad)
        with pytest.raises(ValidationError, match="not mapped"):
            es_spec.validate_bulk_lines([create_lines[0], {**create_lines[1], "lang": "en"}], mapping)


SPEC_TS = Path(__file__).resolve().parents[2] / ".." / "shared" / "elasticsearch-api-spec" / "specification"


def _since(path: str, member: str, after: str = "") -> tuple[int, ...]:
    """The `@availability stack since=` just above `member` (the first after `after`)."""
    text = (SPEC_TS / path).read_text(encoding="utf-8")
    start = text.index(after) if after else 0
    head = text[: re.compile(rf"^\s*{member}\??:", re.M).search(text, start).start()]
    version = re.findall(r"@availability stack since=([\d.]+)", head)[-1]
    return tuple(int(p) for p in version.split("."))


def test_version_gates_are_the_specs_availability():
    if not SPEC_TS.is_dir():
        pytest.skip("Elasticsearch specification sources not found")
    assert _since("_types/query_dsl/abstractions.ts", "sparse_vector") == es_backend.SPARSE_VECTOR_QUERY_SINCE
    assert _since("_types/query_dsl/SparseVectorQuery.ts", "prune") == es_backend.SPARSE_VECTOR_QUERY_SINCE
    assert _since("_types/query_dsl/SparseVectorQuery.ts", "pruning_config") == es_backend.SPARSE_VECTOR_QUERY_SINCE
    index_options = _since("_types/mapping/core.ts", "index_options", "class SparseVectorProperty")
    assert index_options == es_backend.SPARSE_VECTOR_INDEX_OPTIONS_SINCE
