"""Fixtures for the Elasticsearch-only tests. The scripted server and the spec validator are the
OpenSearch tests' own (`tests/opensearch/fake_server.py`, `spec_validator.py`), loaded under the
same module names, so both folders share one copy; the fake answers as Elasticsearch here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from convsparse.backoff import Backoff

pytest.importorskip("elasticsearch")

from convsparse.integration.backends.elasticsearch import ElasticsearchBackend, build_client  # noqa: E402
from convsparse.settings import Settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[1] / "opensearch"


def _load(name: str):
    module_name = f"convsparse_tests_opensearch_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SHARED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


spec_validator = _load("spec_validator")
fake_server = _load("fake_server")


@pytest.fixture(scope="session")
def es_spec():
    validator = spec_validator.ElasticsearchSpecValidator.load()
    if validator is None:
        pytest.skip(f"Elasticsearch API specification not found at {spec_validator.ES_SPEC_FILE}")
    return validator


@pytest.fixture(scope="session")
def es_spec_or_none():
    return spec_validator.ElasticsearchSpecValidator.load()


@pytest.fixture
def start_fake(es_spec_or_none):
    """`start_fake(version="8.19.0", product_header=True)`: a running fake Elasticsearch
    (stopped, and its validation errors asserted empty, at teardown)."""
    servers = []

    def start(**options):
        server = fake_server.FakeElasticsearch(es_spec_or_none, **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)
        assert server.validation_errors == [], server.validation_errors


@pytest.fixture
def fake(start_fake):
    return start_fake()


def settings_for(server, **overrides) -> Settings:
    return Settings(elasticsearch_url=server.url, elasticsearch_timeout_s=5, **overrides)


@pytest.fixture
def make_backend(fake):
    def make(server=None, **options):
        sleeps: list[float] = []
        options.setdefault("sleep", sleeps.append)
        # Short waits; tests name only the retries they count (`max_retries=`).
        options.setdefault("backoff", Backoff(max_retries=options.pop("max_retries", 5),
                                              initial_s=options.pop("initial_backoff", 0.01),
                                              max_s=options.pop("max_backoff", 0.04)))
        backend = ElasticsearchBackend(build_client(settings_for(server or fake)), **options)
        backend.recorded_sleeps = sleeps
        return backend

    return make
