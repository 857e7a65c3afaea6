"""Fixtures for the integration tests: an embedded backend in a temp dir, sample corpus."""

from __future__ import annotations

import json
from importlib import resources

import pytest


@pytest.fixture
def backend(tmp_path):
    from convsparse.integration.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(tmp_path / "data")


@pytest.fixture(scope="session")
def sample_corpus():
    path = resources.files("convsparse") / "sample_data" / "corpus.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def sample_conversations():
    path = resources.files("convsparse") / "sample_data" / "conversations.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory, tiny_student, sample_corpus):
    """(root_dir, index name) of the sample corpus indexed with the tiny student."""
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch

    root = tmp_path_factory.mktemp("sample-index")
    client = ConversationalSearch("sample", encoder=tiny_student, backend=EmbeddedBackend(root))
    report = client.index_documents(sample_corpus, progress=False)
    assert report.indexed == len(sample_corpus) and not report.failed
    return root, "sample"
