"""`convsparse index|ingest|search|quickstart` through typer's CliRunner (tiny student)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convsparse.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    return ["--model", str(tiny_model_dir)]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_index_lifecycle_ingest_search(env, tmp_path):
    code, out = run("index", "create", "docs", *env)
    assert code == 0, out
    code, out = run("index", "create", "docs", *env)
    assert code == 1 and "already exists" in out
    src = tmp_path / "docs.jsonl"
    src.write_text(
        '{"pid": "a", "body": "Lisbon is the capital of Portugal", "title": "Lisbon"}\n'
        '{"pid": "b", "body": ""}\n'
        "this line is broken\n"
        '{"pid": "c", "body": "Octopuses have three hearts"}\n',
        encoding="utf-8",
    )
    code, out = run("ingest", src, "--index", "docs", "--id-field", "pid", "--text-field", "body", *env)
    assert code == 1, out  # some records failed: exit 1 unless --allow-failures
    assert "indexed 2, failed 2" in out and "--allow-failures" in out
    assert "failed b: line 2: empty text" in out and "line 3: not valid JSON" in out
    code, out = run("ingest", src, "--index", "docs", "--id-field", "pid", "--text-field", "body",
                    "--allow-failures", *env)
    assert code == 0, out
    code, out = run("index", "describe", "docs")
    assert code == 0 and json.loads(out)["count"] == 2
    code, out = run("index", "list")
    assert out.split() == ["docs"]
    conv = json.dumps([{"role": "user", "text": "Tell me about octopuses"},
                       {"role": "assistant", "text": "They are clever."},
                       {"role": "user", "text": "How many hearts?"}])
    code, out = run("search", "--index", "docs", "--conversation", conv, "-k", "1", "--top-k", "5", *env)
    assert code == 0, out
    assert "c" in out and "encode" in out and "-> 5" in out
    conv_file = tmp_path / "conv.json"
    conv_file.write_text(conv, encoding="utf-8")
    code, out = run("search", "--index", "docs", "-c", conv_file, "--json", *env)
    assert code == 0, out
    data, _ = json.JSONDecoder().raw_decode(out[out.index('{"hits"'):])  # stderr may share the line
    assert data["hits"][0]["id"] == "c" and data["timings"]["total_ms"] > 0
    code, out = run("index", "delete", "docs")
    assert code == 0
    code, out = run("index", "describe", "docs")
    assert code == 1 and "does not exist" in out


@pytest.mark.parametrize("conversation, message", [
    ('[{"role": "bot", "text": "x"}]', "roles allowed"),
    ("[{broken json", "not valid JSON"),
    ("[]", "no turns"),
])
def test_search_bad_conversation(env, conversation, message):
    run("index", "create", "docs", *env)
    code, out = run("search", "--index", "docs", "-c", conversation, *env)
    assert code == 2 and message in out


def test_search_bad_pruning_and_missing_index(env):
    code, out = run("search", "--index", "nope", "-c", '"hello"', "--max-ratio", "3", *env)
    assert code == 2 and "--max-ratio" in out
    code, out = run("search", "--index", "nope", "-c", '"hello"', *env)
    assert code == 1 and "does not exist" in out


def test_quickstart(env, tmp_path):
    code, out = run("quickstart", "--data-dir", tmp_path / "qs", "-k", "2", "--conversations", "1", *env)
    assert code == 0, out
    assert "indexed 60 passages" in out and "total" in out and "conversation" in out
