"""ONNX Runtime == PyTorch == sentence-transformers' SparseEncoder on the same local model."""

from __future__ import annotations

import numpy as np
import pytest

DOCS = [
    "The cat sat on the mat.",
    "How do I renew my passport before travelling to Japan?",
    "Solar panels convert sunlight into electricity for homes and offices.",
    "a",
    "Dotted tokens like 3.14 and percentages like 50% must survive the round trip. " * 3,
]
CONVERSATION = [
    {"role": "user", "text": "What is the capital of France?"},
    {"role": "assistant", "text": "Paris is the capital of France."},
    {"role": "user", "text": "How many people live there?"},
]


def _dense(student, texts):
    return student.activations_for_ids(student.tokenize_documents(texts), batch_size=2)


def _top_tokens(term_map, k=10):
    return [t for t, _ in term_map.top(k)]


def test_onnx_equals_torch_documents(tiny_student, tiny_onnx_student):
    a, b = _dense(tiny_student, DOCS), _dense(tiny_onnx_student, DOCS)
    assert a.shape == b.shape == (len(DOCS), len(tiny_student.vocabulary))
    assert np.abs(a - b).max() < 1e-4
    ta = tiny_student.encode_documents(DOCS)
    tb = tiny_onnx_student.encode_documents(DOCS)
    assert ta.fingerprint == tb.fingerprint == tiny_student.fingerprint
    for x, y in zip(ta, tb):
        assert len(x) > 0
        assert _top_tokens(x) == _top_tokens(y)


def test_onnx_equals_torch_conversations(tiny_student, tiny_onnx_student):
    x = tiny_student.encode_conversation(CONVERSATION)
    y = tiny_onnx_student.encode_conversation(CONVERSATION)
    assert _top_tokens(x, 20) == _top_tokens(y, 20)
    assert max(abs(x[t] - y.get(t, 0.0)) for t in x) < 1e-4


def test_onnx_distilbert(tiny_distilbert_dir, encoders_cache_dir):
    from convsparse.encoders.loading import load_student

    torch_s = load_student(tiny_distilbert_dir, runtime="torch", device="cpu")
    onnx_s = load_student(tiny_distilbert_dir, runtime="onnx", device="cpu")
    assert type(torch_s.model.mlm).__name__ == "DistilBertForMaskedLM"
    assert onnx_s.runtime == "onnx" and onnx_s.fingerprint == torch_s.fingerprint
    assert np.abs(_dense(torch_s, DOCS) - _dense(onnx_s, DOCS)).max() < 1e-4


def _sparse_encoder(path):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    return SparseEncoder(modules=[MLMTransformer(str(path)), SpladePooling("max")], device="cpu")


@pytest.mark.parametrize("which", ["bert", "distilbert"])
def test_matches_sentence_transformers_sparse_encoder(which, tiny_model_dir, tiny_distilbert_dir):
    from convsparse.encoders.loading import load_student

    path = tiny_model_dir if which == "bert" else tiny_distilbert_dir
    st = _sparse_encoder(path)
    ref = st.encode(DOCS, convert_to_tensor=True, batch_size=2)
    ref = (ref.to_dense() if ref.is_sparse else ref).cpu().numpy()
    for runtime in ("torch", "onnx"):
        ours = _dense(load_student(path, runtime=runtime, device="cpu"), DOCS)
        assert np.abs(ours - ref).max() < 1e-4, runtime
        for i in range(len(DOCS)):
            assert set(np.argsort(-ours[i])[:5]) == set(np.argsort(-ref[i])[:5])


def test_export_cache_is_reused(tiny_student, tiny_onnx_student, encoders_cache_dir, monkeypatch):
    from convsparse.encoders import onnx_runtime
    from convsparse.encoders.onnx_runtime import OnnxStudent, onnx_cache_path

    path = onnx_cache_path(tiny_student.fingerprint, cache_dir=encoders_cache_dir)
    assert path == tiny_onnx_student.onnx_path and path.exists()
    assert path.name.startswith(tiny_student.fingerprint.split(":")[1])

    def no_export(*a, **k):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    again = OnnxStudent.from_torch(tiny_student, device="cpu", cache_dir=encoders_cache_dir)
    assert again.onnx_path == path and again.fingerprint == tiny_student.fingerprint


def test_top_k_output_matches_pruned_torch(tiny_student, encoders_cache_dir):
    from convsparse.encoders.onnx_runtime import OnnxStudent
    from convsparse.pruning import PruningPolicy

    k = 8
    onnx_k = OnnxStudent.from_torch(tiny_student, device="cpu", top_k=k, cache_dir=encoders_cache_dir)
    assert onnx_k.output_names == ["top_values", "top_indices"]
    assert onnx_k.onnx_path.name.endswith(f"-top{k}.onnx")
    policy = PruningPolicy(top_k=k)
    for x, y in zip(tiny_student.encode_texts(DOCS[:3]), onnx_k.encode_texts(DOCS[:3])):
        x = policy.apply(x)
        assert _top_tokens(x, k) == _top_tokens(y, k)
        assert max(abs(x[t] - y[t]) for t in x) < 1e-4


def test_fp16_export_runs_close(tiny_student, encoders_cache_dir):
    from convsparse.encoders.onnx_runtime import OnnxStudent

    fp16 = OnnxStudent.from_torch(tiny_student, device="cpu", fp16=True, cache_dir=encoders_cache_dir)
    assert fp16.onnx_path.name.endswith("-fp16.onnx")
    a, b = _dense(tiny_student, DOCS[:3]), _dense(fp16, DOCS[:3])
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 0.1
