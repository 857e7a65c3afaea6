"""`convsparse export` and `convsparse encode`."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from convsparse.cli import app

runner = CliRunner()


def test_export_folder_and_file(tiny_model_dir, tiny_student, tmp_path):
    import onnxruntime as ort

    res = runner.invoke(app, ["export", str(tiny_model_dir), "--out", str(tmp_path / "onnx")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "onnx" / "convsparse_encoder.json").read_text())
    assert meta["fingerprint"] == tiny_student.fingerprint and meta["max_length"] == 128
    assert (tmp_path / "onnx" / "tokenizer.json").exists()
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([tiny_student.tokenize_documents(["the cat sat"])[0]], dtype=np.int64)
    out = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert out.shape == (1, len(tiny_student.vocabulary))

    res = runner.invoke(app, ["export", str(tiny_model_dir), "--out", str(tmp_path / "m.onnx"), "--top-k", "16"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.onnx").exists() and json.loads((tmp_path / "m.json").read_text())["top_k"] == 16


def test_encode_documents_and_conversation(tiny_model_dir, tiny_student, tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "d1", "title": "Cats", "text": "the cat sat on the mat"}\n'
                    '{"id": "d2", "text": "solar power"}\n')
    out = tmp_path / "out.json"
    res = runner.invoke(app, ["encode", "--documents", str(docs), "--model", str(tiny_model_dir),
                              "--runtime", "onnx", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert payload["fingerprint"] == tiny_student.fingerprint and payload["runtime"] == "onnx"
    assert [m["id"] for m in payload["term_maps"]] == ["d1", "d2"]
    assert "cat" in payload["term_maps"][0]["terms"]

    conv = tmp_path / "conv.json"
    conv.write_text(json.dumps({"id": "c1", "turns": [
        {"role": "user", "text": "solar panels"}, {"role": "assistant", "text": "they make power"},
        {"role": "user", "text": "how much do they cost"}]}))
    res = runner.invoke(app, ["encode", "--conversation", str(conv), "--model", str(tiny_model_dir),
                              "--runtime", "torch", "--device", "cpu", "--top", "5"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["term_maps"][0]["id"] == "c1" and len(payload["term_maps"][0]["terms"]) == 5


def test_encode_bad_conversation_exits_2(tiny_model_dir, tmp_path):
    conv = tmp_path / "bad.json"
    conv.write_text(json.dumps([{"role": "assistant", "text": "hello"}]))
    res = runner.invoke(app, ["encode", "--conversation", str(conv), "--model", str(tiny_model_dir),
                              "--runtime", "torch", "--device", "cpu"])
    assert res.exit_code == 2 and "last turn" in res.output
