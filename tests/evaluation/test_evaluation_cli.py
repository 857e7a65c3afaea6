"""`convsparse collection|evaluate|tune` registered on a fresh typer app."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from convsparse.cli import evaluation as eval_cli
from convsparse.evaluation import harness as evaluation


@pytest.fixture()
def app(monkeypatch, tiny_student, memory_backend):
    monkeypatch.setattr(eval_cli, "load_encoder", lambda settings: tiny_student)
    monkeypatch.setattr(eval_cli, "open_backend", lambda settings: memory_backend)
    monkeypatch.setattr(evaluation, "temporary_backend", lambda: (memory_backend, None))
    a = typer.Typer()
    eval_cli.register(a)
    return a


def test_collection_show(app):
    r = CliRunner().invoke(app, ["collection", "show", "sample"])
    assert r.exit_code == 0, r.output
    assert "60 passages, 25 turns from 8 conversations (25 with a rewrite)" in r.output


def test_evaluate_bm25_only_writes_json_and_markdown(app, tmp_path):
    r = CliRunner().invoke(app, ["evaluate", "sample", "--bm25-only", "--out",
                                 str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "ev.json").read_text())
    assert [(x["system"], x["view"]) for x in data["results"]] == [("BM25", "raw"),
                                                                   ("BM25", "rewrite")]
    assert "MRR@10" in (tmp_path / "ev.md").read_text()


def test_evaluate_with_student(app, tmp_path):
    r = CliRunner().invoke(app, ["evaluate", "sample", "--view", "rewrite", "--limit", "6",
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "ev.json").read_text())
    assert {(x["system"], x["view"]) for x in data["results"]} == {("BM25", "rewrite"),
                                                                   ("student", "rewrite")}


def test_tune_recommends_and_writes_plot(app, tmp_path, sample, tiny_student, memory_backend):
    evaluation.index_corpus(sample, encoder=tiny_student, backend=memory_backend, index="s")
    r = CliRunner().invoke(app, ["tune", "sample", "--index", "s", "--limit", "5",
                                 "--kinds", "top_k,max_ratio", "--top-k", "4,16",
                                 "--max-ratio", "0.3", "--repeats", "1",
                                 "--max-recall-drop", "0.5", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "PruningPolicy(" in r.output and "Recommendation" in r.output
    data = json.loads((tmp_path / "t.json").read_text())
    assert [p["label"] for p in data["points"]] == ["unpruned", "top_k=4", "top_k=16",
                                                    "max_ratio=0.3"]
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tune_rejects_unknown_kind(app, sample, tiny_student, memory_backend):
    evaluation.index_corpus(sample, encoder=tiny_student, backend=memory_backend, index="s")
    r = CliRunner().invoke(app, ["tune", "sample", "--index", "s", "--kinds", "bogus",
                                 "--limit", "2"])
    assert r.exit_code != 0


def test_collection_index_then_evaluate_through_the_client(monkeypatch, tiny_student, tmp_path):
    """The real path: ingestion pipeline into an EmbeddedBackend, then ConversationalSearch."""
    pytest.importorskip("convsparse.integration.ingestion")
    pytest.importorskip("convsparse.integration.client")
    monkeypatch.setattr(eval_cli, "load_encoder", lambda settings: tiny_student)
    app = typer.Typer()
    eval_cli.register(app)
    data = str(tmp_path / "store")
    r = CliRunner().invoke(app, ["collection", "index", "sample", "--index", "sample",
                                 "--backend", "embedded", "--data-dir", data])
    assert r.exit_code == 0, r.output
    assert "indexed 60 passages into 'sample' (0 failed)" in r.output
    r = CliRunner().invoke(app, ["evaluate", "sample", "--index", "sample", "--backend",
                                 "embedded", "--data-dir", data, "--view", "rewrite",
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    res = {x["system"]: x for x in json.loads((tmp_path / "ev.json").read_text())["results"]}
    student = res["student (sample)"]
    assert student["n_queries"] == 25 and student["metrics"]["recall@10"] >= 0.7
    assert student["flops"] > 0 and "encode_ms_mean" in student["extra"]
    assert "BM25" in res
