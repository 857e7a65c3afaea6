"""Fixtures for the evaluation tests: a minimal in-memory Backend and the sample collection."""

from __future__ import annotations

import pytest

from convsparse.errors import FingerprintMismatchError, IndexExistsError, IndexNotFoundError
from convsparse.integration.backends.base import DocumentResult, Hit, IndexInfo


class MemoryBackend:
    """The smallest exact `Backend`: a dict of term maps per index, dot-product search.

    The evaluation code only talks to the protocol, so the tests swap this in; they do not
    depend on the embedded or OpenSearch implementations.
    """

    def __init__(self):
        self.indices: dict[str, dict] = {}
        self.searches = 0

    def create_index(self, name, *, fingerprint, vocabulary=None, exist_ok=False):
        if name in self.indices:
            if not exist_ok:
                raise IndexExistsError(name)
        else:
            self.indices[name] = {"fingerprint": fingerprint, "docs": {}}
        return self.describe_index(name)

    def describe_index(self, name):
        if name not in self.indices:
            raise IndexNotFoundError(name)
        ix = self.indices[name]
        return IndexInfo(name, ix["fingerprint"], len(ix["docs"]))

    def delete_index(self, name, *, missing_ok=False):
        if name not in self.indices and not missing_ok:
            raise IndexNotFoundError(name)
        self.indices.pop(name, None)

    def upsert(self, name, documents):
        docs = self.indices[name]["docs"]
        for d in documents:
            docs[d.id] = d
            yield DocumentResult(d.id, True)

    def delete_documents(self, name, ids):
        for i in ids:
            yield DocumentResult(i, self.indices[name]["docs"].pop(i, None) is not None)

    def search(self, name, query, k=10, *, fingerprint=None, rescore=None, rescore_window=0):
        if name not in self.indices:
            raise IndexNotFoundError(name)
        ix = self.indices[name]
        if fingerprint is not None and fingerprint != ix["fingerprint"]:
            raise FingerprintMismatchError(name, ix["fingerprint"], fingerprint)
        self.searches += 1
        scored = []
        for d in ix["docs"].values():
            s = query.dot(d.term_map)
            if s > 0:
                scored.append(Hit(d.id, s, d.fields))
        scored.sort(key=lambda h: (-h.score, h.id))
        return scored[:k]

    def count(self, name):
        return len(self.indices[name]["docs"])


@pytest.fixture()
def memory_backend():
    return MemoryBackend()


@pytest.fixture(scope="session")
def sample():
    from convsparse.benchmark_collections import sample_collection

    return sample_collection()


@pytest.fixture(scope="session")
def memory_backend_cls():
    """The class itself, for module-scoped fixtures that need their own backend."""
    return MemoryBackend
