"""Index management, search and bad input against the scripted server: dotted tokens, clause
limits, unknown indices, fingerprint mismatch, score parity (boost x quantized value).

The tests marked `@every_form` are the backend contract and run against every form of
`conftest.BACKEND_FORMS`: OpenSearch `rank_features` (rank_feature and neural_sparse queries)
and `sparse_vector` (neural sparse ANN), Elasticsearch `rank_features` and `sparse_vector`. Those
marked `@every_field` run once per field type of each engine."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from opensearchpy import OpenSearch

from convsparse.errors import (
    BackendError,
    FingerprintMismatchError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidTermMapError,
    TooManyClausesError,
)
from convsparse.integration.backends.base import Backend, IndexedDocument
from convsparse.integration.backends.opensearch import OpenSearchBackend
from convsparse.integration.backends.opensearch_query import (
    build_query,
    neural_sparse_query,
    rank_feature_query,
    search_body,
)
from convsparse.settings import Settings
from convsparse.termmap import TermMap

#: Apply to a test to run it against every backend form (see conftest.py).
every_form = pytest.mark.parametrize(
    "backend_form", ["opensearch-rank_feature", "opensearch-neural_sparse", "opensearch-sparse_vector",
                     "elasticsearch-rank_features", "elasticsearch-sparse_vector"], indirect=True)
#: ... or once per field type of each engine.
every_field = pytest.mark.parametrize(
    "backend_form", ["opensearch-rank_feature", "opensearch-sparse_vector",
                     "elasticsearch-rank_features"], indirect=True)

DOCS = {
    "usa": TermMap({"u.s": 1.7, "capital": 0.3, "washington": 2.1}),
    "france": TermMap({"paris": 2.2, "capital": 0.9, "france": 1.9}),
    "pct": TermMap({"100%": 1.1, "discount": 0.7}),
    "none": TermMap({"unrelated": 3.0}),
}


@pytest.fixture
def loaded(fake, make_backend):
    backend = make_backend()
    backend.create_index("kb", fingerprint="fp", vocabulary="v")
    docs = [IndexedDocument(i, tm, {"title": i.upper(), "text": f"about {i}", "source": "test"})
            for i, tm in DOCS.items()]
    assert all(r.ok for r in backend.upsert("kb", docs))
    return backend


def expected_score(fake, query, doc):
    return sum(w * fake.quantize(doc[t]) for t, w in query.items() if t in doc)


@every_field
def test_backend_protocol(make_backend):
    assert isinstance(make_backend(), Backend)


@every_field
def test_create_describe_delete(fake, make_backend):
    backend = make_backend(shards=2, replicas=0)
    info = backend.create_index("kb", fingerprint="fp", vocabulary="bert:30522")
    assert (info.name, info.fingerprint, info.count, info.vocabulary) == ("kb", "fp", 0, "bert:30522")
    assert info.extra["term_field"] == "terms"
    if info.extra["field_type"] == "sparse_vector" and fake.engine == "opensearch":  # token-id keys
        assert "token_keys" in info.extra and "tokens" not in info.extra["token_ids"]
    else:
        assert "feature_name_escaping" in info.extra
    assert fake.indices["kb"]["settings"]["number_of_shards"] == 2
    with pytest.raises(IndexExistsError):
        backend.create_index("kb", fingerprint="fp")
    assert backend.create_index("kb", fingerprint="fp", exist_ok=True).fingerprint == "fp"
    with pytest.raises(FingerprintMismatchError):
        backend.create_index("kb", fingerprint="other", exist_ok=True)
    backend.delete_index("kb")
    assert "kb" not in fake.indices
    with pytest.raises(IndexNotFoundError):
        backend.delete_index("kb")
    backend.delete_index("kb", missing_ok=True)


@every_field
def test_bulk_load_settings_roundtrip(fake, make_backend):
    backend = make_backend(replicas=2, refresh_interval="5s")
    backend.create_index("kb", fingerprint="fp", bulk_load=True)
    assert fake.indices["kb"]["settings"]["refresh_interval"] == "-1"
    backend.end_bulk_load("kb")
    sparse = {"sparse": True} if getattr(backend, "field_type", None) == "sparse_vector" \
        and fake.engine == "opensearch" else {}  # index.sparse survives the settings changes
    assert fake.indices["kb"]["settings"] == {"number_of_shards": 1, "number_of_replicas": 2,
                                              "refresh_interval": "5s", **sparse}
    backend.begin_bulk_load("kb")
    assert fake.indices["kb"]["settings"]["number_of_replicas"] == 0


@every_field
@pytest.mark.parametrize("call", [
    lambda b: b.describe_index("nope"),
    lambda b: b.count("nope"),
    lambda b: b.search("nope", TermMap({"a": 1.0})),
    lambda b: list(b.upsert("nope", [IndexedDocument("x", TermMap({"a": 1.0}))])),
    lambda b: list(b.delete_documents("nope", ["x"])),
])
def test_unknown_index(fake, make_backend, call):
    with pytest.raises(IndexNotFoundError, match="nope"):
        call(make_backend())
    assert not fake.bulk_requests()  # nothing written: no auto-created index


@every_field
def test_index_without_meta_is_refused(fake, make_backend):
    fake.indices["foreign"] = {"mappings": {"properties": {}}, "settings": {}, "docs": {}}
    with pytest.raises(BackendError, match="not created by convsparse"):
        make_backend().search("foreign", TermMap({"a": 1.0}))


@every_form
def test_search_scores_are_boost_times_quantized_value(fake, loaded):
    query = TermMap({"capital": 1.3, "paris": 0.7, "u.s": 0.45})
    hits = loaded.search("kb", query, k=10, fingerprint="fp")
    assert [h.id for h in hits] == ["france", "usa"]
    for hit in hits:
        assert hit.score == pytest.approx(expected_score(fake, query, DOCS[hit.id]), rel=1e-6)
        assert abs(hit.score - query.dot(DOCS[hit.id])) <= query.dot(DOCS[hit.id]) * 2**-8
    assert hits[0].fields == {"title": "FRANCE", "text": "about france", "source": "test"}


@every_form
def test_dotted_and_percent_tokens_match_in_both_modes(fake, loaded):
    assert [h.id for h in loaded.search("kb", TermMap({"u.s": 1.0}))] == ["usa"]
    assert [h.id for h in loaded.search("kb", TermMap({"100%": 1.0}))] == ["pct"]
    body = next(b for _, p, b in fake.requests if p == "/kb/_search")
    if getattr(loaded, "field_type", None) == "sparse_vector" and fake.engine == "opensearch":
        u_s = str(loaded.token_vocabulary.tokens.index("u.s"))  # keys are token ids there
        assert body["query"]["neural_sparse"]["terms"]["query_tokens"] == {u_s: 1.0}
    else:
        assert "terms.u%2Es" in repr(body) or "'u%2Es'" in repr(body)


@every_form
def test_rescore_two_phase(fake, loaded):
    full = TermMap({"capital": 2.0, "washington": 0.1, "paris": 0.1})
    pruned = TermMap({"capital": 2.0})
    hits = loaded.search("kb", pruned, k=2, rescore=full, rescore_window=10)
    assert [h.id for h in hits] == ["france", "usa"]
    for hit in hits:
        assert hit.score == pytest.approx(expected_score(fake, full, DOCS[hit.id]), rel=1e-6)
    body = [b for m, p, b in fake.requests if p == "/kb/_search"][-1]
    assert body["rescore"]["window_size"] == 10
    assert body["rescore"]["query"]["query_weight"] == 0.0


@every_form
def test_rescore_needs_a_positive_window(fake, loaded):
    """As in Backend.search (and the embedded backend): rescore_window=0 means no rescoring;
    a window smaller than k rescores only the top of the list."""
    full = TermMap({"capital": 2.0, "washington": 5.0})
    pruned = TermMap({"capital": 2.0})
    assert [h.id for h in loaded.search("kb", pruned, k=2, rescore=full)] == ["france", "usa"]
    assert "rescore" not in [b for m, p, b in fake.requests if p == "/kb/_search"][-1]
    hits = loaded.search("kb", pruned, k=2, rescore=full, rescore_window=1)
    assert [h.id for h in hits] == ["france", "usa"]
    assert hits[0].score == pytest.approx(expected_score(fake, full, DOCS["france"]), rel=1e-6)
    assert hits[1].score == pytest.approx(expected_score(fake, pruned, DOCS["usa"]), rel=1e-6)
    hits = loaded.search("kb", pruned, k=2, rescore=full, rescore_window=2)
    assert [h.id for h in hits] == ["usa", "france"]


@every_form
def test_empty_query_returns_nothing_without_a_request(fake, loaded):
    assert loaded.search("kb", TermMap({})) == []
    assert "/kb/_search" not in fake.paths()


@every_form
def test_fingerprint_mismatch(fake, loaded):
    with pytest.raises(FingerprintMismatchError, match="other-encoder"):
        loaded.search("kb", TermMap({"paris": 1.0}), fingerprint="other-encoder")
    assert "/kb/_search" not in fake.paths()
    mapping_reads = fake.paths("GET").count("/kb/_mapping")
    loaded.search("kb", TermMap({"paris": 1.0}), fingerprint="fp")
    loaded.search("kb", TermMap({"paris": 1.0}), fingerprint="fp")
    assert fake.paths("GET").count("/kb/_mapping") == mapping_reads  # meta is cached


def test_max_clause_count_read_from_cluster(fake, make_backend):
    fake.max_clause_count = 8
    backend = make_backend()
    backend.create_index("kb", fingerprint="fp")
    assert backend.max_clause_count == 8
    backend.search("kb", TermMap({f"t{i}": 1.0 for i in range(8)}))
    with pytest.raises(TooManyClausesError, match="9 terms .* 8 clauses"):
        backend.search("kb", TermMap({f"t{i}": 1.0 for i in range(9)}))
    with pytest.raises(TooManyClausesError):
        backend.search("kb", TermMap({"t0": 1.0}), rescore=TermMap({f"t{i}": 1.0 for i in range(9)}),
                       rescore_window=5)
    assert fake.paths().count("/kb/_search") == 1


def test_max_clause_count_defaults(fake, make_backend):
    fake.cluster_settings_status = 403
    assert make_backend().max_clause_count == 1024
    assert make_backend(max_clause_count=50).max_clause_count == 50


@pytest.mark.parametrize("weights, message", [
    ({"a": math.nan}, "finite"), ({"a": math.inf}, "finite"), ({"a": 0.0}, "positive normal"),
    ({"a": -0.5}, "positive normal"), ({"a": 1e-39}, "positive normal"), ({}, "empty"),
])
@pytest.mark.parametrize("builder", [rank_feature_query, neural_sparse_query])
def test_query_builders_reject_bad_weights(builder, weights, message):
    with pytest.raises(InvalidTermMapError, match=message):
        builder(weights)


def test_query_forms():
    tm = TermMap({"u.s": 1.5, "a%b": 0.5})
    assert rank_feature_query(tm)["bool"]["should"] == [
        {"rank_feature": {"field": "terms.u%2Es", "linear": {}, "boost": 1.5}},
        {"rank_feature": {"field": "terms.a%25b", "linear": {}, "boost": 0.5}},
    ]
    assert neural_sparse_query(tm, "sparse") == {
        "neural_sparse": {"sparse": {"query_tokens": {"u%2Es": 1.5, "a%25b": 0.5}}}}
    with pytest.raises(TooManyClausesError):
        build_query({f"t{i}": 1.0 for i in range(1025)})
    assert len(build_query({f"t{i}": 1.0 for i in range(1024)})["bool"]["should"]) == 1024
    with pytest.raises(ValueError, match="unknown query mode"):
        build_query(tm, mode="bm25")
    with pytest.raises(ValueError):
        search_body(rank_feature_query(tm), 0)
    assert search_body(rank_feature_query(tm), 3)["track_total_hits"] is False
    assert search_body(rank_feature_query(tm), 20, rescore=rank_feature_query(tm))["rescore"][
        "window_size"] == 20
    assert search_body(rank_feature_query(tm), 20, rescore=rank_feature_query(tm),
                       rescore_window=5)["rescore"]["window_size"] == 5


def test_neural_sparse_weight_limit():
    with pytest.raises(InvalidTermMapError, match="64"):
        neural_sparse_query({"a": 64.5})
    assert neural_sparse_query({"a": 64.0})["neural_sparse"]["terms"]["query_tokens"] == {"a": 64.0}
    clipped = neural_sparse_query({"a": 100.0, "b": 2.0}, clip=True)
    assert clipped["neural_sparse"]["terms"]["query_tokens"] == {"a": 64.0, "b": 2.0}


# ---------------------------------------------------------------------- connections
def _settings(fake, **overrides):
    return Settings(opensearch_url=fake.url, opensearch_timeout_s=5, **overrides)


def test_from_settings_basic_auth(fake):
    backend = OpenSearchBackend.from_settings(
        _settings(fake, opensearch_user="admin", opensearch_password="s3cret"))
    backend.create_index("kb", fingerprint="fp")
    assert fake.headers[-1]["authorization"] == "Basic YWRtaW46czNjcmV0"
    # http_compress: bulk bodies go out gzip-compressed
    list(backend.upsert("kb", [IndexedDocument("x", TermMap({"a": 1.0}))]))
    bulk_headers = [h for h, (m, p, b) in zip(fake.headers, fake.requests) if p == "/_bulk"]
    assert bulk_headers[0].get("content-encoding") == "gzip"


def test_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenSearchBackend.from_settings(Settings(opensearch_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(BackendError, match="cannot reach OpenSearch"):
        backend.search("kb", TermMap({"a": 1.0}))


def test_from_settings_several_nodes(fake):
    backend = OpenSearchBackend.from_settings(Settings(opensearch_url=f"{fake.url}, {fake.url}/"))
    assert len(backend.client.transport.connection_pool.connections) == 2
    assert backend.create_index("kb", fingerprint="fp").count == 0


def test_from_settings_password_required(fake):
    with pytest.raises(ValueError, match="password"):
        OpenSearchBackend.from_settings(_settings(fake, opensearch_user="admin"))


def test_from_settings_tls_ca_bundle(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made\n")
    settings = Settings(opensearch_url="https://search.example:9200", opensearch_ca_certs=ca)
    connection = OpenSearchBackend.from_settings(settings).client.transport.connection_pool.connections[0]
    assert connection.use_ssl and connection.host == "https://search.example:9200"
    assert connection.pool.ca_certs == str(ca)
    assert connection.pool.cert_reqs == "CERT_REQUIRED"


def test_from_settings_tls_with_ca_bundle_against_a_tls_server(tmp_path, spec_or_none):
    """A real TLS handshake: the client trusts the server only through the CA bundle."""
    import shutil
    import ssl
    import subprocess
    import sys

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake_server = sys.modules["convsparse_tests_opensearch_fake_server"]
    with fake_server.FakeOpenSearch(spec_or_none, ssl_context=context) as tls:
        assert tls.url.startswith("https://")
        backend = OpenSearchBackend.from_settings(Settings(
            opensearch_url=tls.url, opensearch_ca_certs=cert, opensearch_timeout_s=5,
            opensearch_user="admin", opensearch_password="pw"))
        assert backend.create_index("kb", fingerprint="fp").count == 0
        untrusted = OpenSearchBackend.from_settings(Settings(
            opensearch_url=tls.url, opensearch_timeout_s=5))
        with pytest.raises(BackendError, match="(?i)cannot reach OpenSearch.*(certificate|ssl)"):
            untrusted.describe_index("kb")
        assert not tls.validation_errors


def test_from_settings_sigv4_signs_requests(fake, monkeypatch, tmp_path):
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    backend = OpenSearchBackend.from_settings(_settings(fake, opensearch_aws_region="eu-west-1"))
    backend.create_index("kb", fingerprint="fp")
    auth = fake.headers[-1]["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/es/aws4_request" in auth
    assert "x-amz-date" in fake.headers[-1] and "content-encoding" not in fake.headers[-1]
    with pytest.raises(ValueError, match="not both"):
        OpenSearchBackend.from_settings(_settings(fake, opensearch_aws_region="eu-west-1",
                                                  opensearch_user="u", opensearch_password="p"))


def test_client_is_a_real_opensearch_py_client(make_backend):
    assert isinstance(make_backend().client, OpenSearch)


@hsettings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(st.sampled_from("ab.%2Ee_"), min_size=1, max_size=6),
                       st.floats(0.01, 60.0), min_size=1, max_size=6))
def test_both_query_forms_name_the_indexed_features(weights):
    """Whatever the tokens (dots, '%', '%2E' literally), the rank_feature field's last-dot split
    and the neural_sparse token names equal the feature names stored at index time."""
    tm = TermMap(weights)
    stored = set(tm.to_rank_features())
    rf = rank_feature_query(tm, "terms")["bool"]["should"]
    split = {c["rank_feature"]["field"].rsplit(".", 1)[1] for c in rf}
    assert all(c["rank_feature"]["field"].rsplit(".", 1)[0] == "terms" for c in rf)
    assert split == stored
    assert set(neural_sparse_query(tm)["neural_sparse"]["terms"]["query_tokens"]) == stored
    assert TermMap.from_rank_features(tm.to_rank_features()) == tm


def test_sigv4_falls_back_to_requests_aws4auth(fake, monkeypatch):
    """Without botocore, the optional `aws` extra (requests-aws4auth) signs the requests."""
    pytest.importorskip("requests_aws4auth")
    monkeypatch.setitem(sys.modules, "botocore", None)
    monkeypatch.setitem(sys.modules, "botocore.session", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFALLBACK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    backend = OpenSearchBackend.from_settings(_settings(fake, opensearch_aws_region="us-east-1"))
    assert backend.create_index("kb", fingerprint="fp").fingerprint == "fp"
    assert fake.headers[-1]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFALLBACK/")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(BackendError, match="AWS_ACCESS_KEY_ID"):
        OpenSearchBackend.from_settings(_settings(fake, opensearch_aws_region="us-east-1"))
