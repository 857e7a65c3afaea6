"""Every entry point encodes a document from the same text (`convsparse.documents.document_text`),
so the same record gets the same term map whichever way it was indexed or encoded."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

RECORD = {"id": "lis-01", "title": "Lisbon", "text": "Lisbon is the capital of Portugal."}


def _same(a, b):
    assert set(a) == set(b)
    for token, weight in a.items():
        assert b[token] == pytest.approx(weight, rel=1e-5)


@pytest.fixture
def env(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setenv("CONVSPARSE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CONVSPARSE_RUNTIME", "torch")
    monkeypatch.setenv("CONVSPARSE_DEVICE", "cpu")
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_every_entry_point_encodes_the_same_text(env, tiny_student):
    from convsparse.benchmark_collections import load_collection
    from convsparse.cli import app
    from convsparse.documents import document_text
    from convsparse.evaluation.harness import index_corpus
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch
    from convsparse.training.data import load_passage_texts

    tmp = env
    expected = tiny_student.encode_documents([document_text(RECORD["title"], RECORD["text"])],
                                             ids=[RECORD["id"]]).term_maps[0].to_dict()
    folder = tmp / "col"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(json.dumps(RECORD) + "\n", encoding="utf-8")
    (folder / "conversations.jsonl").write_text(json.dumps(
        {"id": "q1", "turns": [{"role": "user", "text": "capital of Portugal"}]}) + "\n")
    (folder / "qrels.tsv").write_text("q1 0 lis-01 1\n")
    runner = CliRunner()
    maps = {}

    out = runner.invoke(app, ["encode", "--documents", str(folder / "corpus.jsonl"),
                              "--out", str(tmp / "maps.json")])
    assert out.exit_code == 0, out.output
    maps["encode --documents"] = json.loads((tmp / "maps.json").read_text())["term_maps"][0]["terms"]

    out = runner.invoke(app, ["ingest", str(folder / "corpus.jsonl"), "--index", "ingested"])
    assert out.exit_code == 0, out.output
    backend = EmbeddedBackend(tmp / "data")
    maps["ingest"], stored = backend.get_document("ingested", RECORD["id"])
    assert stored["text"] == RECORD["text"] and stored["title"] == RECORD["title"]

    out = runner.invoke(app, ["collection", "index", str(folder), "--index", "collection"])
    assert out.exit_code == 0, out.output
    maps["collection index"], stored = backend.get_document("collection", RECORD["id"])
    assert stored["text"] == RECORD["text"]  # the stored text is never the title-prefixed one

    client = ConversationalSearch("client", encoder=tiny_student, backend=backend)
    client.index_documents([RECORD], progress=False)
    maps["index_documents"], _ = backend.get_document("client", RECORD["id"])

    index_corpus(load_collection(folder), encoder=tiny_student, backend=backend, index="eval")
    maps["evaluation"], _ = backend.get_document("eval", RECORD["id"])

    training_text = load_passage_texts(folder / "corpus.jsonl")[RECORD["id"]]
    maps["training and teachers"] = tiny_student.encode_documents([training_text]).term_maps[0]

    for entry_point, term_map in maps.items():
        _same(expected, dict(term_map)), entry_point
