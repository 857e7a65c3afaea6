"""What only the Elasticsearch backend does, through a real elasticsearch-py client and the
scripted server answering as Elasticsearch: the field type recorded in `_meta`, the
`sparse_vector` query and its server-side token pruning under two-phase rescoring, version
gates, the client/server compatibility and product checks, and connection settings. (The shared
contract and the failure-injection tests run against both engines in tests/opensearch.)"""

from __future__ import annotations

import base64

import elasticsearch
import pytest
from elasticsearch import Elasticsearch

from convsparse.compose import open_backend
from convsparse.errors import BackendError, FingerprintMismatchError
from convsparse.integration.backends.base import Backend, IndexedDocument
from convsparse.integration.backends.elasticsearch import ElasticsearchBackend
from convsparse.mappings.elasticsearch import token_pruning_config
from convsparse.settings import Settings
from convsparse.termmap import TermMap

from .conftest import settings_for

CLIENT_MAJOR = int(elasticsearch.__versionstr__.split(".")[0])


def corpus(n=40):
    """'common' is in every document (frequent, low query weight: pruned), 'rare{i}' in one."""
    return [IndexedDocument(f"d{i}", TermMap({"common": 1.0 + (i % 7) / 10, f"rare{i}": 0.5 + i / 100,
                                              "u.s": 0.3 + (i % 3) / 10}),
                            {"title": f"T{i}", "text": f"text {i}"}) for i in range(n)]


def expected(fake, query, doc):
    return sum(w * fake.quantize(doc[t]) for t, w in query.items() if t in doc)


def searches(fake, index):
    return [b for _, p, b in fake.requests if p == f"/{index}/_search"]


def test_protocol_and_transport_never_retries(fake, make_backend):
    """One retry layer: the client (which passes its own retry options to the transport on
    every request) never resends, so a 503 is sent exactly once when the backend may not retry."""
    backend = make_backend(max_retries=0)
    assert isinstance(backend, Backend) and isinstance(backend.client, Elasticsearch)
    backend.create_index("kb", fingerprint="fp")
    fake.request_script = [503] * 10
    (result,) = backend.upsert("kb", [IndexedDocument("x", TermMap({"a": 1.0}))])
    assert not result.ok and result.status == 503
    assert len(fake.bulk_requests()) == 1


def test_field_type_is_recorded_and_read_back(fake, make_backend):
    make_backend(field_type="sparse_vector").create_index("sv", fingerprint="fp", vocabulary="v")
    assert fake.indices["sv"]["mappings"]["properties"]["terms"] == {"type": "sparse_vector"}
    # a backend configured for the other type still searches the index the way it was built
    other = make_backend(field_type="rank_features")
    info = other.describe_index("sv")
    assert info.extra["field_type"] == "sparse_vector" and info.extra["engine"] == "elasticsearch"
    assert all(r.ok for r in other.upsert("sv", corpus(5)))
    other.search("sv", TermMap({"common": 1.0}))
    assert "sparse_vector" in searches(fake, "sv")[-1]["query"]
    assert other.create_index("sv", fingerprint="fp", exist_ok=True).extra["field_type"] == "sparse_vector"
    with pytest.raises(FingerprintMismatchError):
        other.create_index("sv", fingerprint="fp2", exist_ok=True)


def test_sparse_vector_scores_are_the_exact_dot_product(fake, make_backend):
    backend = make_backend(field_type="sparse_vector")
    backend.create_index("sv", fingerprint="fp")
    docs = {d.id: d.term_map for d in corpus()}
    assert all(r.ok for r in backend.upsert("sv", corpus()))
    query = TermMap({"common": 0.2, "rare3": 2.0, "u.s": 0.5})
    hits = backend.search("sv", query, k=5, fingerprint="fp")
    assert hits[0].id == "d3"
    for hit in hits:
        assert hit.score == pytest.approx(expected(fake, query, docs[hit.id]), rel=1e-6)
    assert searches(fake, "sv")[-1]["query"]["sparse_vector"]["prune"] is False
    stored = next(iter(fake.docs("sv").values()))["terms"]
    assert "u%2Es" in stored and not any("." in name for name in stored)  # escaped: no 400


def test_server_token_pruning_with_two_phase_rescoring(fake, make_backend):
    """First phase: the server prunes the frequent low-weight token; the rescore phase sends the
    full query with prune=false, so the rescored scores are the exact dot products again."""
    backend = make_backend(field_type="sparse_vector",
                           token_pruning=token_pruning_config(2, 0.4))
    backend.create_index("sv", fingerprint="fp")
    docs = {d.id: d.term_map for d in corpus()}
    assert all(r.ok for r in backend.upsert("sv", corpus()))
    query = TermMap({"common": 0.3, "rare3": 2.0, "rare5": 1.5})
    pruned = backend.search("sv", query, k=10)
    first = searches(fake, "sv")[-1]["query"]["sparse_vector"]
    assert first["prune"] is True
    assert first["pruning_config"] == {"tokens_freq_ratio_threshold": 2, "tokens_weight_threshold": 0.4}
    # 'common' was pruned by the server: only the two rare documents match
    assert [h.id for h in pruned] == ["d3", "d5"]
    assert pruned[0].score == pytest.approx(expected(fake, TermMap({"rare3": 2.0}), docs["d3"]), rel=1e-6)

    hits = backend.search("sv", query, k=2, rescore=query, rescore_window=10)
    body = searches(fake, "sv")[-1]
    assert body["query"]["sparse_vector"]["prune"] is True
    rescore = body["rescore"]
    assert rescore["window_size"] == 10 and rescore["query"]["query_weight"] == 0.0
    assert rescore["query"]["rescore_query"]["sparse_vector"]["prune"] is False
    for hit in hits:
        assert hit.score == pytest.approx(expected(fake, query, docs[hit.id]), rel=1e-6)


def test_token_pruning_is_ignored_on_rank_features_indices(fake, make_backend):
    make_backend(field_type="rank_features").create_index("rf", fingerprint="fp")
    backend = make_backend(field_type="sparse_vector", token_pruning={})
    assert all(r.ok for r in backend.upsert("rf", corpus(5)))
    backend.search("rf", TermMap({"common": 1.0}), rescore=TermMap({"common": 1.0}), rescore_window=5)
    body = searches(fake, "rf")[-1]
    assert "sparse_vector" not in repr(body) and body["query"]["bool"]["should"][0]["rank_feature"]["linear"] == {}


@pytest.mark.parametrize("version, options, message", [
    ("8.14.3", {"field_type": "sparse_vector"}, "8.15.0 or later"),
    ("8.18.2", {"field_type": "sparse_vector", "index_options": {"prune": True}}, "8.19.0 or later"),
])
def test_version_gates(start_fake, make_backend, version, options, message):
    if CLIENT_MAJOR == 8:
        server = start_fake(version=version)
        backend = make_backend(server, **options)
    else:  # a 9.x client cannot talk to an 8.x server: give the backend the version it would read
        server = start_fake(version="9.1.0")
        backend = make_backend(server, **options)
        backend._server_version = tuple(int(p) for p in version.split("."))
    with pytest.raises(BackendError, match=message):
        backend.create_index("x", fingerprint="fp")
    assert "x" not in server.indices


def test_version_gates_pass_on_new_servers(start_fake, make_backend):
    server = start_fake(version="9.1.0")
    backend = make_backend(server, field_type="sparse_vector", index_options={"prune": True})
    backend.create_index("x", fingerprint="fp")
    assert server.indices["x"]["mappings"]["properties"]["terms"]["index_options"] == {"prune": True}
    assert backend.server_version == (9, 1, 0)


def test_client_major_must_match_the_server(start_fake, make_backend):
    """A 9.x client sends `compatible-with=9`; an 8.x server refuses it. The error says what to
    install instead of a bare 400."""
    server = start_fake(version=f"{CLIENT_MAJOR - 1}.19.0")
    with pytest.raises(BackendError, match=r"client of the server's major version"):
        make_backend(server).create_index("x", fingerprint="fp")


def test_client_refuses_a_server_that_is_not_elasticsearch(start_fake, make_backend):
    """The fake is realistic: without `X-Elastic-Product: Elasticsearch` the client refuses."""
    server = start_fake(product_header=False)
    with pytest.raises(BackendError, match="not Elasticsearch") as caught:
        make_backend(server).create_index("x", fingerprint="fp")
    assert isinstance(caught.value.__cause__, elasticsearch.UnsupportedProductError)


# ---------------------------------------------------------------------- connections
def test_from_settings_api_key(fake):
    backend = ElasticsearchBackend.from_settings(settings_for(fake, elasticsearch_api_key="ZW5jb2RlZA=="))
    backend.create_index("kb", fingerprint="fp")
    assert fake.headers[-1]["authorization"] == "ApiKey ZW5jb2RlZA=="
    backend = ElasticsearchBackend.from_settings(settings_for(fake, elasticsearch_api_key="id1:secret"))
    backend.describe_index("kb")
    assert fake.headers[-1]["authorization"] == "ApiKey " + base64.b64encode(b"id1:secret").decode()


def test_from_settings_basic_auth_and_compression(fake):
    backend = ElasticsearchBackend.from_settings(
        settings_for(fake, elasticsearch_user="elastic", elasticsearch_password="s3cret"))
    backend.create_index("kb", fingerprint="fp")
    assert fake.headers[-1]["authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    list(backend.upsert("kb", [IndexedDocument("x", TermMap({"a": 1.0}))]))
    bulk_headers = [h for h, (m, p, b) in zip(fake.headers, fake.requests) if p == "/_bulk"]
    assert bulk_headers[0].get("content-encoding") == "gzip"


def test_from_settings_rejects_ambiguous_auth(fake):
    with pytest.raises(ValueError, match="not both"):
        ElasticsearchBackend.from_settings(settings_for(
            fake, elasticsearch_api_key="k", elasticsearch_user="u", elasticsearch_password="p"))
    with pytest.raises(ValueError, match="password"):
        ElasticsearchBackend.from_settings(settings_for(fake, elasticsearch_user="u"))


def test_from_settings_cloud_id_ca_bundle_and_verify(tmp_path):
    cloud_id = "deployment:" + base64.b64encode(b"eu-west-1.aws.found.io:443$abc123$def456").decode()
    backend = ElasticsearchBackend.from_settings(Settings(elasticsearch_cloud_id=cloud_id))
    node = backend.client.transport.node_pool.all()[0].config
    assert (node.scheme, node.host, node.port) == ("https", "abc123.eu-west-1.aws.found.io", 443)
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made\n")
    backend = ElasticsearchBackend.from_settings(Settings(
        elasticsearch_url="https://search.example:9200", elasticsearch_ca_certs=ca))
    node = backend.client.transport.node_pool.all()[0].config
    assert node.scheme == "https" and node.ca_certs == str(ca) and node.verify_certs
    backend = ElasticsearchBackend.from_settings(Settings(
        elasticsearch_url="https://search.example:9200", elasticsearch_verify_certs=False))
    assert backend.client.transport.node_pool.all()[0].config.verify_certs is False


def test_from_settings_several_nodes(fake):
    other = fake.url.replace("127.0.0.1", "localhost")
    backend = ElasticsearchBackend.from_settings(Settings(elasticsearch_url=f"{fake.url}, {other}/, {fake.url}"))
    assert len(backend.client.transport.node_pool.all()) == 2  # duplicates dropped
    assert backend.create_index("kb", fingerprint="fp").count == 0


def test_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = ElasticsearchBackend.from_settings(Settings(elasticsearch_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(BackendError, match="cannot reach Elasticsearch"):
        backend.search("kb", TermMap({"a": 1.0}))


def test_compose_opens_the_backend_from_settings(fake, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_BACKEND", "elasticsearch")
    monkeypatch.setenv("CONVSPARSE_ELASTICSEARCH_URL", fake.url)
    monkeypatch.setenv("CONVSPARSE_ELASTICSEARCH_FIELD_TYPE", "sparse_vector")
    backend = open_backend(Settings(), replicas=0)
    assert isinstance(backend, ElasticsearchBackend) and backend.field_type == "sparse_vector"
    backend.create_index("kb", fingerprint="fp")
    assert fake.indices["kb"]["settings"]["number_of_replicas"] == 0
    assert fake.indices["kb"]["mappings"]["_meta"]["field_type"] == "sparse_vector"


def test_compose_service_and_worker_override():
    import yaml

    root = __import__("pathlib").Path(__file__).resolve().parents[2] / "docker"
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    es = compose["services"]["elasticsearch"]
    assert es["profiles"] == ["es"]
    env = es["environment"]
    assert env["discovery.type"] == "single-node"
    # security is stated explicitly (off for development; the header says how to turn it on)
    assert env["xpack.security.enabled"] == "false"
    assert "xpack.security.enabled" in (root / "docker-compose.yml").read_text().split("name: convsparse")[0]
    assert es["ports"] == ["9201:9200"] and es["healthcheck"]
    assert es["image"].rsplit(":", 1)[1].split(".")[0] == "9"
    override = yaml.safe_load((root / "docker-compose.es.yml").read_text())
    for name in ("worker-gpu", "worker-cpu"):
        worker = override["services"][name]
        assert worker["environment"]["CONVSPARSE_BACKEND"] == "elasticsearch"
        assert worker["environment"]["CONVSPARSE_ELASTICSEARCH_URL"] == "http://elasticsearch:9200"
        assert "elasticsearch" in worker["depends_on"]
    assert "elasticsearch" in (root / "worker.Dockerfile").read_text()


def test_cli_index_commands_with_the_backend_from_the_environment(fake, make_backend, monkeypatch):
    """`convsparse index list|describe|delete` reach Elasticsearch through compose, unchanged."""
    import json

    from typer.testing import CliRunner

    from convsparse.cli import app

    make_backend(field_type="sparse_vector").create_index("docs", fingerprint="fp", vocabulary="v")
    fake.indices["foreign"] = {"mappings": {"properties": {}}, "settings": {}, "docs": {}}
    monkeypatch.setenv("CONVSPARSE_BACKEND", "elasticsearch")
    monkeypatch.setenv("CONVSPARSE_ELASTICSEARCH_URL", fake.url)
    runner = CliRunner()
    listed = runner.invoke(app, ["index", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == ["docs"]
    described = runner.invoke(app, ["index", "describe", "docs"])
    assert described.exit_code == 0, described.output
    info = json.loads(described.output)
    assert info["fingerprint"] == "fp" and info["field_type"] == "sparse_vector"
    deleted = runner.invoke(app, ["index", "delete", "docs"])
    assert deleted.exit_code == 0 and "docs" not in fake.indices


def test_shards_and_replicas_left_to_the_server(fake, make_backend):
    """Elastic Cloud Serverless manages shards and replicas: with None they are never sent."""
    backend = make_backend(shards=None, replicas=None, refresh_interval="5s")
    backend.create_index("kb", fingerprint="fp", bulk_load=True)
    assert fake.indices["kb"]["settings"] == {"refresh_interval": "-1"}
    backend.end_bulk_load("kb")
    backend.begin_bulk_load("kb")
    puts = [b for m, p, b in fake.requests if p == "/kb/_settings"]
    assert puts == [{"index": {"refresh_interval": "5s"}}, {"index": {"refresh_interval": "-1"}}]


def test_elasticsearch_credentials_are_masked_in_messages(monkeypatch):
    from convsparse.redaction import mask_secrets

    monkeypatch.setenv("CONVSPARSE_ELASTICSEARCH_API_KEY", "ZW5jb2RlZC1rZXk=")
    monkeypatch.setenv("CONVSPARSE_ELASTICSEARCH_PASSWORD", "s3cret-pw")
    text = mask_secrets("auth ZW5jb2RlZC1rZXk= and s3cret-pw at https://elastic:s3cret-pw@es:9200")
    assert "ZW5jb2RlZC1rZXk=" not in text and "s3cret-pw" not in text
