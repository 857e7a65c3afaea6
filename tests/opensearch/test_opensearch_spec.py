"""Every body convsparse sends validates against the closed OpenSearch API specification, and a
misspelt key fails (the spec alone is permissive)."""

from __future__ import annotations

import copy

import pytest
from jsonschema.exceptions import ValidationError

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.opensearch_query import (
    neural_sparse_query,
    rank_feature_query,
    search_body,
)
from convsparse.mappings import bulk_load_settings, index_body, serving_settings
from convsparse.termmap import TermMap

QUERY = TermMap({"paris": 1.5, "u.s": 0.25, "100%": 0.5, "capital": 2.0})


def bodies():
    rf = rank_feature_query(QUERY)
    ns = neural_sparse_query(QUERY)
    return {
        "rank_feature": search_body(rf, 10),
        "neural_sparse": search_body(ns, 10),
        "rescore": search_body(rank_feature_query(TermMap({"paris": 1.5})), 5, rescore=rf,
                               rescore_window=100),
        "rescore_ns": search_body(ns, 5, rescore=ns, rescore_window=50),
        "fields": search_body(rf, 3, source_fields=["id", "title"], exclude_fields=()),
    }


@pytest.mark.parametrize("options", [
    {}, {"bulk_load": True}, {"field": "sparse", "shards": 3, "replicas": 2},
    {"vocabulary": None}, {"refresh_interval": "30s"},
])
def test_index_body_validates(spec, options):
    vocabulary = options.pop("vocabulary", "bert-base-uncased:30522")
    body = index_body("fp-123", vocabulary, **options)
    spec.validate_index_body(body)
    mappings = body["mappings"]
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"]["encoder_fingerprint"] == "fp-123"
    field = options.get("field", "terms")
    assert mappings["properties"][field] == {"type": "rank_features"}  # no positive_score_impact
    assert mappings["properties"]["metadata"] == {"type": "object", "enabled": False}


def test_bulk_load_and_serving_settings():
    assert index_body("fp", bulk_load=True)["settings"]["index"]["refresh_interval"] == "-1"
    assert bulk_load_settings()["index"]["number_of_replicas"] == 0
    assert serving_settings(replicas=2, refresh_interval="5s") == {
        "index": {"refresh_interval": "5s", "number_of_replicas": 2}}
    with pytest.raises(ValueError):
        index_body("")
    with pytest.raises(ValueError):
        index_body("fp", field="a.b")


@pytest.mark.parametrize("mutate", [
    lambda b: b["mappings"].__setitem__("dynamc", "strict"),
    lambda b: b["mappings"]["properties"]["terms"].__setitem__("positive_score_impac", True),
    lambda b: b["mappings"]["properties"]["id"].__setitem__("ignore_abov", 10),
    lambda b: b["mappings"]["properties"]["text"].__setitem__("analyser", "english"),
    lambda b: b["mappings"]["properties"]["metadata"].__setitem__("enable", False),
    lambda b: b.__setitem__("setings", {}),
])
def test_misspelt_mapping_key_fails(spec, mutate):
    body = index_body("fp")
    spec.validate_index_body(body)
    mutate(body)
    assert spec.errors(spec_module().INDEX_CREATE, body)


def test_positive_score_impact_is_not_in_the_spec(spec):
    """Real servers accept it but the spec lacks it: we rely on its default and never send it."""
    body = index_body("fp")
    body["mappings"]["properties"]["terms"]["positive_score_impact"] = True
    assert spec.errors(spec_module().INDEX_CREATE, body)


@pytest.mark.parametrize("name", list(bodies()))
def test_search_bodies_validate(spec, name):
    spec.validate_search_body(bodies()[name])


@pytest.mark.parametrize("path, key", [
    (("query", "bool", "should", 0, "rank_feature"), "linaer"),
    (("query", "bool", "should", 0, "rank_feature", "linear"), "factor"),
    (("query", "bool"), "shoud"),
    (("query",), "rank_featur"),
    (("rescore",), "window_sise"),
    (("rescore", "query"), "rescore_qeury"),
    ((), "siz"),
])
def test_misspelt_search_key_fails(spec, path, key):
    body = copy.deepcopy(bodies()["rescore"])
    spec.validate_search_body(body)
    node = body
    for step in path:
        node = node[step]
    node[key] = {}
    assert spec.errors(spec_module().SEARCH, body)


def test_misspelt_neural_sparse_key_fails(spec):
    body = bodies()["neural_sparse"]
    body["query"]["neural_sparse"]["terms"]["query_tokns"] = {"a": 1.0}
    assert spec.errors(spec_module().SEARCH, body)


def test_bulk_lines_from_backend_validate(spec, fake, make_backend):
    """The action and source lines the backend really sends (captured by the fake server, which
    validates each against the closed OperationContainer and the strict mapping)."""
    backend = make_backend()
    backend.create_index("docs", fingerprint="fp", vocabulary="v")
    docs = [IndexedDocument(f"d{i}", TermMap({"a.b": 1.0 + i, "%x": 0.5}),
                            {"title": "T", "text": "body", "lang": "en", "n": i}) for i in range(3)]
    assert all(r.ok for r in backend.upsert("docs", docs))
    assert [r.ok for r in backend.delete_documents("docs", ["d0", "missing"])] == [True, False]
    (create_lines,), (delete_lines,) = fake.bulk_requests()[:1], fake.bulk_requests()[1:]
    mapping = fake.indices["docs"]["mappings"]
    assert spec.validate_bulk_lines(create_lines, mapping) == 3
    assert spec.validate_bulk_lines(delete_lines) == 2
    bad = copy.deepcopy(create_lines)
    bad[0]["index"]["_idd"] = "x"
    with pytest.raises(ValidationError):
        spec.validate_bulk_lines(bad)
    with pytest.raises(ValidationError, match="not mapped"):  # dynamic: strict
        spec.validate_bulk_lines([create_lines[0], {**create_lines[1], "lang": "en"}], mapping)
    assert fake.validation_errors == []


def spec_module():
    import sys

    return sys.modules["convsparse_tests_opensearch_spec_validator"]
