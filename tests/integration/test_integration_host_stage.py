"""The embedded store's array write path (issue 15) stores exactly what the token-by-token
path stored: a batch of CSR views and the same documents as plain `TermMap`s leave the same
bytes in the SQLite store (term dictionary and every op row) and read back equal."""

from __future__ import annotations

import sqlite3

import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.termmap import TermMap


def store_dump(root, name: str) -> tuple[list, list]:
    with sqlite3.connect(root / name / "index.sqlite") as conn:
        terms = conn.execute("SELECT id, token FROM terms ORDER BY id").fetchall()
        ops = conn.execute("SELECT seq, doc_id, cols, vals, fields FROM ops ORDER BY seq").fetchall()
    return terms, ops


@pytest.mark.parametrize("seed", range(3))
def test_embedded_csr_write_equals_the_token_path(seed, tmp_path, random_csr_batch):
    backend = EmbeddedBackend(tmp_path, durable=False)
    for name in ("new", "old"):
        backend.create_index(name, fingerprint="fp")
    for part in range(2):  # the second batch meets terms the first one stored
        batch, old, ids = random_csr_batch(seed * 10 + part)
        ids = [f"{i}-{part % 2}" for i in ids]  # overwrite some ids across batches
        fields = [{"text": f"t{i}"} for i in range(len(ids))]
        new_docs = [IndexedDocument(i, tm, f) for i, tm, f in zip(ids, batch, fields)]
        old_docs = [IndexedDocument(i, TermMap(tm.to_dict()), f) for i, tm, f in zip(ids, old, fields)]
        assert all(r.ok for r in backend.upsert("new", new_docs))
        assert all(r.ok for r in backend.upsert("old", old_docs))
    assert store_dump(tmp_path, "new") == store_dump(tmp_path, "old")
    fresh = EmbeddedBackend(tmp_path)  # read back from the store, and from memory
    for doc_id in ids:
        assert fresh.get_document("new", doc_id) == backend.get_document("new", doc_id) == \
            backend.get_document("old", doc_id)
    query = TermMap({"paris": 1.0, "u.s": 0.5, "tok7": 2.0})
    assert backend.search("new", query, k=20) == fresh.search("new", query, k=20) == \
        backend.search("old", query, k=20)


def test_embedded_failed_commit_does_not_remember_new_term_ids(tmp_path, monkeypatch,
                                                              random_csr_batch):
    """A rolled-back batch assigned ids to new terms; the next batch must not reuse them."""
    from convsparse.integration.backends.embedded import faults

    batch, _, ids = random_csr_batch(7)
    backend = EmbeddedBackend(tmp_path, durable=False)
    backend.create_index("idx", fingerprint="fp")

    def fail(step):
        if step == "write:ops":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(faults, "fault_hook", fail)
    with pytest.raises(Exception, match="rolled back"):
        list(backend.upsert("idx", [IndexedDocument(i, tm) for i, tm in zip(ids, batch)]))
    monkeypatch.setattr(faults, "fault_hook", None)
    assert all(r.ok for r in backend.upsert("idx", [IndexedDocument(i, tm) for i, tm in zip(ids, batch)]))
    fresh = EmbeddedBackend(tmp_path)
    for i, tm in zip(ids, batch):
        assert fresh.get_document("idx", i)[0] == tm
