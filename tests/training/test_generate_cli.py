"""`convsparse rewrite` / `augment` against the scripted local server, configured the way a
user configures their vLLM or Ollama server: `CONVSPARSE_LLM_*`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from convsparse.benchmark_collections import load_conversations
from convsparse.cli import app
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script


def _convs(tmp_path):
    p = tmp_path / "convs.jsonl"
    p.write_text("".join(json.dumps({"id": f"t{i}", "conversation_id": "c", "turns": [
        {"role": "user", "text": "hello"}, {"role": "assistant", "text": "hi"},
        {"role": "user", "text": q}]}) + "\n" for i, q in enumerate(["what is it?", "FAIL this"])))
    return p


def reply(content):
    if "FAIL" in content and "Current question" in content:
        return Script(status=503)
    return Script(answer="Rewrite: a standalone question")


def test_rewrite_then_augment_from_the_command_line(tmp_path, monkeypatch):
    src = _convs(tmp_path)
    with FakeChatServer(reply, api_key="k") as server:
        monkeypatch.setenv("CONVSPARSE_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("CONVSPARSE_LLM_MODEL", "qwen")
        monkeypatch.setenv("CONVSPARSE_LLM_API_KEY", "k")
        monkeypatch.setenv("CONVSPARSE_LLM_MAX_RETRIES", "1")
        r = CliRunner().invoke(app, ["rewrite", str(src), "-o", str(tmp_path / "rw.jsonl"), "--no-progress"])
        assert r.exit_code == 1, r.output
        assert "1 of 2 turns failed" in r.output and "t1: HTTP 503" in r.output
        tasks = load_conversations(tmp_path / "rw.jsonl")
        assert tasks[0].rewrite == "a standalone question" and tasks[1].rewrite is None

        r = CliRunner().invoke(app, ["augment", str(tmp_path / "rw.jsonl"), "-o", str(tmp_path / "aug.jsonl"),
                                     "-n", "1", "--kind", "response", "--no-progress"])
        assert r.exit_code == 0, r.output
        ids = [t.id for t in load_conversations(tmp_path / "aug.jsonl")]
        assert ids == ["t0", "t0::aug-response-0", "t1", "t1::aug-response-0"]

        bad = tmp_path / "bad.txt"
        bad.write_text("rewrite {questoin}")
        r = CliRunner().invoke(app, ["rewrite", str(src), "-o", str(tmp_path / "x.jsonl"), "--prompt", str(bad)])
        assert r.exit_code == 2 and "questoin" in r.output


def test_rewrite_without_a_model_says_how_to_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVSPARSE_LLM_MODEL", raising=False)
    r = CliRunner().invoke(app, ["rewrite", str(_convs(tmp_path)), "-o", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "CONVSPARSE_LLM_MODEL" in r.output
