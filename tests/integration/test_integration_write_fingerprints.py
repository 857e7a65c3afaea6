"""Issue 12, finding 1: every write path refuses term maps from another encoder than the
index's, with `FingerprintMismatchError` naming both fingerprints and the fix, before anything
is written (the Celery path is in tests/workers/test_workers_user_path.py, OpenSearch's
`upsert` in tests/opensearch/test_opensearch_bulk.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.documents import SourceRecord
from convsparse.errors import FingerprintMismatchError
from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.client import ConversationalSearch
from convsparse.integration.ingestion import encode_and_upsert
from convsparse.termmap import TermMap


@pytest.fixture
def other_index(backend):
    """An index built by another encoder (fingerprint "fp-other"), holding one document."""
    backend.create_index("kitchen", fingerprint="fp-other")
    list(backend.upsert("kitchen", [IndexedDocument("old", TermMap({"pan": 1.0}), {"text": "pan"})]))
    return "kitchen"


def assert_refused(error: FingerprintMismatchError, encoder) -> None:
    message = str(error)
    assert "fp-other" in message and encoder.fingerprint in message
    assert "nothing was written" in message and "--model" in message
    assert "query" not in message  # a write is not a query


def test_embedded_upsert_refuses_another_fingerprint(backend, other_index):
    with pytest.raises(FingerprintMismatchError) as e:
        backend.upsert(other_index, [IndexedDocument("new", TermMap({"x": 1.0}))], fingerprint="fp-mine")
    assert "fp-other" in str(e.value) and "fp-mine" in str(e.value) and e.value.writing
    assert backend.count(other_index) == 1
    assert [r.ok for r in backend.upsert(other_index, [IndexedDocument("n", TermMap({"x": 1.0}))],
                                         fingerprint="fp-other")] == [True]


def test_encode_and_upsert_refuses_before_writing(backend, other_index, tiny_student):
    records = [SourceRecord(id="new", text="Lisbon is the capital of Portugal")]
    with pytest.raises(FingerprintMismatchError) as e:
        list(encode_and_upsert(records, encoder=tiny_student, backend=backend, index=other_index))
    assert_refused(e.value, tiny_student)
    assert backend.count(other_index) == 1


def test_index_documents_refuses_before_writing(backend, other_index, tiny_student):
    client = ConversationalSearch(other_index, encoder=tiny_student, backend=backend)
    with pytest.raises(FingerprintMismatchError) as e:
        client.index_documents([{"id": "new", "text": "Lisbon is the capital"}], progress=False)
    assert_refused(e.value, tiny_student)
    assert backend.count(other_index) == 1 and backend.get_document(other_index, "old")


def test_cli_local_ingest_refuses_another_encoders_index(tmp_path, tiny_model_dir, tiny_student, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(app, ["index", "create", "kitchen", "--fingerprint", "fp-other"]).exit_code == 0
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon is the capital of Portugal"}\n', encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(src), "--index", "kitchen", "--model", str(tiny_model_dir)])
    assert result.exit_code == 1, result.output
    error_lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and "fp-other" in error_lines[0] and tiny_student.fingerprint in error_lines[0]
    assert "nothing was written" in error_lines[0] and "Traceback" not in result.output
    assert '"count": 0' in runner.invoke(app, ["index", "describe", "kitchen"]).output
