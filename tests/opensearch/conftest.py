"""Fixtures for the OpenSearch tests: the closed-spec validator, a scripted fake server, a real
opensearch-py client pointed at it, and backends whose backoff sleeps are recorded, not slept.

The same fixtures serve Elasticsearch: they follow the `engine` fixture ("opensearch" unless a
test or module parametrizes it, e.g. `@pytest.mark.parametrize("engine", ENGINES,
indirect=True)`), which picks the fake server's dialect, its spec validator, the official client
(opensearch-py or elasticsearch-py) and the backend class. That is how the failure-injection
and contract tests here run against both engines.

`backend_form` names an engine and the backend options of one way to index and search
(`BACKEND_FORMS`: OpenSearch `rank_features` queried with `rank_feature` or `neural_sparse`,
OpenSearch `sparse_vector`, Elasticsearch `rank_features` or `sparse_vector`); parametrize it
(indirectly) and `engine`, `fake` and `make_backend` follow. An OpenSearch `sparse_vector`
backend gets `TEST_VOCABULARY` as its token vocabulary and the fake server answers as 3.3.0."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from convsparse.backoff import Backoff
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
# the ML Commons tests' helpers (tests/opensearch/test_mlcommons_*.py read them from sys.modules)
_load("fake_mlcommons")
_load("mlcommons_spec")


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

#: Every tokenizer-free token the OpenSearch tests write or search, in "id" order: the token
#: vocabulary of their sparse_vector indices (whose keys are token ids).
TEST_VOCABULARY = (
    ["[PAD]", "a", "b", "x", "u.s", "100%", "a%b", "a.b", "%x", "e.g.", "a%2Eb", "capital",
     "washington", "paris", "france", "discount", "unrelated"]
    + [f"t{i}" for i in range(1100)] + [f"w{i}" for i in range(64)] + [f"tok{i}" for i in range(256)]
)

#: name -> (engine, backend options) of each form of the backend contract.
BACKEND_FORMS: dict[str, tuple[str, dict]] = {
    "opensearch-rank_feature": ("opensearch", {}),
    "opensearch-neural_sparse": ("opensearch", {"query_mode": "neural_sparse"}),
    "opensearch-sparse_vector": ("opensearch", {"field_type": "sparse_vector"}),
    "elasticsearch-rank_features": ("elasticsearch", {}),
    "elasticsearch-sparse_vector": ("elasticsearch", {"field_type": "sparse_vector"}),
}
#: One form per field type of each engine (for tests that do not depend on the query form).
FIELD_FORMS = ["opensearch-rank_feature", "opensearch-sparse_vector", "elasticsearch-rank_features"]


@pytest.fixture
def backend_form(request):
    """A `BACKEND_FORMS` name, or None (the engine's defaults)."""
    return getattr(request, "param", None)


@pytest.fixture
def engine(request, backend_form):
    if backend_form is not None:
        return BACKEND_FORMS[backend_form][0]
    return getattr(request, "param", "opensearch")


def _opensearch_sparse(backend_form) -> bool:
    return backend_form is not None and backend_form.startswith("opensearch") and \
        BACKEND_FORMS[backend_form][1].get("field_type") == "sparse_vector"


@pytest.fixture(scope="session")
def es_spec_or_none():
    return spec_validator.ElasticsearchSpecValidator.load()


@pytest.fixture
def fake(engine, backend_form, spec_or_none, es_spec_or_none):
    validator = spec_or_none if engine == "opensearch" else es_spec_or_none
    version = "3.3.0" if _opensearch_sparse(backend_form) else None  # sparse_vector's first
    with fake_server.FakeOpenSearch(validator=validator, engine=engine, version=version) as server:
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
def make_backend(client, backend_cls, backend_form):
    form_options = dict(BACKEND_FORMS[backend_form][1]) if backend_form is not None else {}
    if _opensearch_sparse(backend_form):
        form_options["token_vocabulary"] = TEST_VOCABULARY

    def make(**options):
        options = {**form_options, **options}
        sleeps: list[float] = []
        options.setdefault("sleep", sleeps.append)
        # Short waits; tests name only the retries they count (`max_retries=`).
        options.setdefault("backoff", Backoff(max_retries=options.pop("max_retries", 5),
                                              initial_s=options.pop("initial_backoff", 0.01),
                                              max_s=options.pop("max_backoff", 0.04)))
        backend = backend_cls(options.pop("client", client), **options)
        backend.recorded_sleeps = sleeps
        return backend

    return make
