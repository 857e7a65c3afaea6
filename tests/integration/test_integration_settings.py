"""Every entry point honours the same settings: the CLI commands, the workers and the Python
default all build their encoder and backend through `convsparse.compose`."""

from __future__ import annotations

import json

from typer.testing import CliRunner


def test_python_default_honours_model_runtime_and_backend(monkeypatch, tmp_path, tiny_model_dir,
                                                          tiny_student):
    from convsparse import ConversationalSearch
    from convsparse.integration.backends.embedded import EmbeddedBackend

    monkeypatch.setenv("CONVSPARSE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CONVSPARSE_RUNTIME", "torch")
    monkeypatch.setenv("CONVSPARSE_DEVICE", "cpu")
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path))
    search = ConversationalSearch("docs")
    assert isinstance(search.backend, EmbeddedBackend)
    assert search.encoder.fingerprint == tiny_student.fingerprint
    assert search.encoder.runtime == "torch"


def test_commands_honour_model_and_runtime(monkeypatch, tmp_path, tiny_model_dir, tiny_student):
    from convsparse.cli import app

    monkeypatch.setenv("CONVSPARSE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CONVSPARSE_RUNTIME", "torch")
    monkeypatch.setenv("CONVSPARSE_DEVICE", "cpu")
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(app, ["index", "create", "docs"])
    assert created.exit_code == 0, created.output
    described = runner.invoke(app, ["index", "describe", "docs"])
    info = json.loads(described.output)
    assert info["fingerprint"] == tiny_student.fingerprint
    assert info["vocabulary"] == tiny_student.vocabulary_name  # _meta.vocabulary is written
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "d1", "title": "Lisbon", "text": "capital of Portugal"})
                    + "\n", encoding="utf-8")
    encoded = runner.invoke(app, ["encode", "--documents", str(docs), "--out",
                                  str(tmp_path / "maps.json")])
    assert encoded.exit_code == 0, encoded.output
    maps = json.loads((tmp_path / "maps.json").read_text())
    assert maps["fingerprint"] == tiny_student.fingerprint and maps["runtime"] == "torch"
