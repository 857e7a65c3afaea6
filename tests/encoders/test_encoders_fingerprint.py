"""Ingest-time pruning and fingerprint stability / sensitivity."""

from __future__ import annotations

import torch

from convsparse.pruning import PruningPolicy

DOCS = ["The cat sat on the mat near the door.", "Solar panels convert sunlight into power."]


def _student(path, **kw):
    from convsparse.encoders.student import SpladeStudent

    return SpladeStudent.from_pretrained(path, device="cpu", **kw)


def test_ingest_time_pruning_applies_to_documents_only(tiny_model_dir, tiny_student):
    pruned = _student(tiny_model_dir, document_pruning=PruningPolicy(top_k=5, min_weight=0.1))
    full = tiny_student.encode_documents(DOCS, ids=["a", "b"])
    docs = pruned.encode_documents(DOCS, ids=["a", "b"])
    assert docs.ids == ["a", "b"]
    for f, d in zip(full, docs):
        assert len(f) > 5 and len(d) == 5
        assert d.top() == f.top(5) and min(d.values()) >= 0.1
    conv = pruned.encode_conversation([{"role": "user", "text": DOCS[0]}])
    assert len(conv) > 5  # queries are not pruned by the ingest-time policy


def test_mass_pruning_keeps_the_heaviest_terms(tiny_model_dir, tiny_student):
    pruned = _student(tiny_model_dir, document_pruning=PruningPolicy(alpha_mass=0.5))
    f, d = tiny_student.encode_documents(DOCS[:1])[0], pruned.encode_documents(DOCS[:1])[0]
    assert 0 < len(d) < len(f) and d.total() >= 0.5 * f.total()
    assert d.top() == f.top(len(d))


def test_fingerprint_is_stable(tiny_model_dir, tiny_student):
    again = _student(tiny_model_dir)
    assert again.fingerprint == tiny_student.fingerprint
    assert tiny_student.fingerprint.startswith("sha256:") and len(tiny_student.fingerprint) == 23
    assert tiny_student.encode_documents(DOCS).fingerprint == tiny_student.fingerprint


def test_fingerprint_changes_with_weights_pruning_and_max_length(tiny_model_dir, tiny_student):
    base = tiny_student.fingerprint
    assert _student(tiny_model_dir, max_length=64).fingerprint != base
    assert _student(tiny_model_dir, document_pruning=PruningPolicy(top_k=64)).fingerprint != base
    changed = _student(tiny_model_dir)
    with torch.no_grad():
        changed.model.mlm.cls.predictions.transform.dense.bias[0] += 1e-3
    assert changed.fingerprint != base


def test_fingerprint_ignores_the_folder_name(tiny_model_dir, tiny_student, tmp_path):
    import shutil

    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    assert _student(copy).fingerprint == tiny_student.fingerprint
