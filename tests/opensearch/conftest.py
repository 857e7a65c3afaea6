"""Fixtures for the OpenSearch tests: the closed-spec validator, a scripted fake server, a real
opensearch-py client pointed at it, and backends whose backoff sleeps are recorded, not slept.

The same fixtures serve Elasticsearch: they follow the `engine` fixture ("opensearch" unless a
test or module parametrizes it, e.g. `@pytest.mark.parametrize("engine", ENGINES,
indirect=True)`), which picks the fake server's dialect, its spec validator, the official client
(opensearch-py or elasticsearch-py) and the backend class. That is how the failure-injection
and contract tests here run against both engines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from convsparse.integration.backends.opensearch import build_client
from convsparse.settings import Settings

HERE = Path(__file__).resolve().parent


def _load(name: str):
    module_name = f"convsparse_tests_opensearch_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


spec_validator = _load("spec_validator")
fake_server = _load("fake_server")


@pytest.fixture(scope="session")
def spec():
    validator = spec_validator.SpecValidator.load()
    if validator is None:
        pytest.skip(f"OpenSearch API specification not found at {spec_validator.SPEC_DIR}")
    return validator


@pytest.fixture(scope="session")
def spec_or_none():
    return spec_validator.SpecValidator.load()


#: The engines the shared contract and failure-injection tests run against.
ENGINES = ["opensearch", "elasticsearch"]


@pytest.fixture
def engine(request):
    return getattr(request, "param", "opensearch")


@pytest.fixture(scope="session")
def es_spec_or_none():
    return spec_validator.ElasticsearchSpecValidator.load()


@pytest.fixture
def fake(engine, spec_or_none, es_spec_or_none):
    validator = spec_or_none if engine == "opensearch" else es_spec_or_none
    with fake_server.FakeOpenSearch(validator=validator, engine=engine) as server:
        yield server
        assert server.validation_errors == [], server.validation_errors


@pytest.fixture
def client(fake, engine):
    # Built exactly as production builds it (the transport never resends on its own).
    if engine == "elasticsearch":
        from convsparse.integration.backends.elasticsearch import build_client as build_es_client

        return build_es_client(Settings(elasticsearch_url=fake.url, elasticsearch_timeout_s=5))
    return build_client(Settings(opensearch_url=fake.url, opensearch_timeout_s=5))


@pytest.fixture
def backend_cls(engine):
    if engine == "elasticsearch":
        from convsparse.integration.backends.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend
    from convsparse.integration.backends.opensearch import OpenSearchBackend

    return OpenSearchBackend


@pytest.fixture
def make_backend(client, backend_cls):
    def make(**options):
        sleeps: list[float] = []
        options.setdefault("sleep", sleeps.append)
        options.setdefault("initial_backoff", 0.01)
        options.setdefault("max_backoff", 0.04)
        backend = backend_cls(options.pop("client", client), **options)
        backend.recorded_sleeps = sleeps
        return backend

    return make
