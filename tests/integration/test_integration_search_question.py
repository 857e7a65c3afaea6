"""`convsparse search --index NAME "question"`: a one-turn conversation as a positional
argument; `-c` stays for conversations (tiny student through typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convsparse.cli import app

runner = CliRunner()


@pytest.fixture
def docs(tmp_path, tiny_model_dir, monkeypatch):
    """The options that reach an index 'docs' of two passages."""
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    env = ["--model", str(tiny_model_dir)]
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "text": "Lisbon is the capital of Portugal"}\n'
                   '{"id": "b", "text": "Octopuses have three hearts"}\n', encoding="utf-8")
    assert run("index", "create", "docs", *env)[0] == 0
    assert run("ingest", src, "--index", "docs", *env)[0] == 0
    return env


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_a_question_is_a_one_turn_conversation(docs):
    code, out = run("search", "--index", "docs", "how many hearts do octopuses have", "--json", *docs)
    assert code == 0, out
    by_question = json.loads(out)
    code, out = run("search", "--index", "docs", "-c", '"how many hearts do octopuses have"', "--json",
                    *docs)
    assert code == 0, out
    assert [h["id"] for h in by_question["hits"]] == [h["id"] for h in json.loads(out)["hits"]]
    assert by_question["hits"][0]["id"] == "b"


@pytest.mark.parametrize(("args", "message"), [
    ((), "no question: pass one"),
    (("a question", "-c", '"another"'), "not both"),
    (("   ",), "empty"),
])
def test_question_and_conversation_are_one_or_the_other(docs, args, message):
    code, out = run("search", "--index", "docs", *args, *docs)
    assert code == 2 and message in out, out
    assert "Traceback" not in out
