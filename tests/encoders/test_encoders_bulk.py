"""The bulk (CSR) path: term maps equal the dense reference path's exactly in fp32, within
tolerance in bf16; sparsification on the device; out-of-memory halving; prefetching."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from convsparse.errors import InvalidTermMapError
from convsparse.pruning import PruningPolicy
from convsparse.termmap import CsrTermMap, TermMap

DOCS = [
    "The cat sat on the mat.",
    "How do I renew my passport before travelling to Japan?",
    "Solar panels convert sunlight into electricity for homes and offices.",
    "a",
    "Dotted tokens like 3.14 and percentages like 50% must survive the round trip. " * 3,
    "Lisbon is the capital of Portugal; Porto is its second city.",
    "Bread needs flour, water, salt and an oven at 230 degrees.",
]
IDS = [f"d{i}" for i in range(len(DOCS))]
CONVERSATIONS = [
    [{"role": "user", "text": "What is the capital of France?"}],
    [{"role": "user", "text": "Tell me about Lisbon"}, {"role": "assistant", "text": "A city."},
     {"role": "user", "text": "How many people live there?"}],
]
POLICIES = [PruningPolicy(), PruningPolicy(top_k=8), PruningPolicy(min_weight=0.3),
            PruningPolicy(max_ratio=0.4), PruningPolicy(alpha_mass=0.7),
            PruningPolicy(top_k=20, min_weight=0.05, max_ratio=0.1, alpha_mass=0.95)]


def dense_reference(student, texts, ids, pruning, batch_size):
    """The pre-issue-15 path: dense (n, vocab) activations on the host, one TermMap a row."""
    vectors = student.activations_for_ids(student.tokenize_documents(texts), batch_size=batch_size)
    return student._to_batch(vectors, ids, pruning)


@pytest.fixture(params=["tiny_student", "tiny_distilbert_student"])
def student(request, tiny_distilbert_dir):
    if request.param == "tiny_student":
        return request.getfixturevalue("tiny_student")
    from convsparse.encoders.student import SpladeStudent

    student = SpladeStudent.from_pretrained(tiny_distilbert_dir, device="cpu")
    with torch.no_grad():  # the fixture's bias -1 silences every term: let some through
        student.model.mlm.vocab_projector.bias.fill_(0.02)
    return student


@pytest.mark.parametrize("batch_size", [1, 32])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_documents_equal_dense_path_exactly_in_fp32(student, policy, batch_size, monkeypatch):
    monkeypatch.setattr(student, "document_pruning", policy)
    new = student.encode_documents(DOCS, ids=IDS, batch_size=batch_size)
    old = dense_reference(student, DOCS, IDS, None if policy.is_noop else policy, batch_size)
    assert new.ids == IDS and new.fingerprint == old.fingerprint
    assert all(isinstance(tm, CsrTermMap) for tm in new)
    assert list(new) == list(old)  # same tokens, bit-identical weights
    assert any(len(tm) for tm in new)


def test_conversations_and_texts_equal_dense_path(tiny_student):
    rows = [tiny_student.formatter.format(c).input_ids for c in CONVERSATIONS]
    old = tiny_student._to_batch(tiny_student.activations_for_ids(rows, batch_size=2), None, None)
    assert list(tiny_student.encode_conversations(CONVERSATIONS, batch_size=2)) == list(old)
    assert tiny_student.encode_conversation(CONVERSATIONS[1]) == old[1]
    texts = dense_reference(tiny_student, DOCS[:3], None, None, 32)
    assert list(tiny_student.encode_texts(DOCS[:3])) == list(texts)


def test_tokenize_groups_keep_input_order(tiny_student, monkeypatch):
    """Documents tokenized in several prefetch groups come back in input order."""
    import convsparse.encoders.student as student_module

    whole = tiny_student.encode_documents(DOCS, ids=IDS, batch_size=2)
    monkeypatch.setattr(student_module, "TOKENIZE_GROUP", 3)
    monkeypatch.setattr(type(tiny_student)._tokenized_groups, "__defaults__", (3,))
    grouped = tiny_student.encode_documents(DOCS, ids=IDS, batch_size=2)
    for a, b in zip(whole, grouped):
        assert a.keys() == b.keys()
        assert max(abs(a[t] - b[t]) for t in a) < 1e-5


def test_bf16_within_tolerance_of_fp32(tiny_model_dir):
    from convsparse.encoders.student import SpladeStudent

    fp32 = SpladeStudent.from_pretrained(tiny_model_dir, device="cpu")
    bf16 = SpladeStudent.from_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert bf16.fingerprint == fp32.fingerprint  # of the float32 weights
    a, b = fp32.encode_documents(DOCS), bf16.encode_documents(DOCS)
    for x, y in zip(a, b):
        top = [t for t, w in x.top(10) if w > 0.1 * x.top(1)[0][1]]
        assert top and all(t in y for t in top)  # the same heavy tokens
        for t in top:
            assert abs(x[t] - y[t]) <= 0.02 * x[t] + 0.02  # bf16 keeps ~3 significant digits


def test_dtype_defaults(tiny_student):
    from convsparse.encoders.student import resolve_dtype

    assert tiny_student.dtype == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", "cuda:1") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", "cpu")


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny_student, monkeypatch):
    expected = tiny_student.encode_documents(DOCS, ids=IDS, batch_size=8)
    real = type(tiny_student).pooled
    sizes = []

    def pooled(self, ids, mask):
        sizes.append(int(ids.shape[0]))
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, ids, mask)

    monkeypatch.setattr(type(tiny_student), "pooled", pooled)
    monkeypatch.setattr(tiny_student, "max_batch", None)
    # all seven documents in one batch whatever their padding, so the first batch is too big
    monkeypatch.setattr("convsparse.encoders.student_encoder_base.MAX_PADDING", 1.0)
    got = tiny_student.encode_documents(DOCS, ids=IDS, batch_size=8)
    assert got.ids == IDS and len(got) == len(DOCS)
    assert tiny_student.max_batch == 2  # later batches start at the size that fitted
    assert sizes[0] == 7 and max(sizes[1:]) <= 4
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        assert max((abs(a[t] - b[t]) for t in a), default=0.0) < 1e-5
    sizes.clear()
    tiny_student.encode_documents(DOCS, batch_size=8)
    assert sizes and max(sizes) <= 2  # capped up front, no new OOM


def test_cpu_batches_run_in_passes_under_the_logits_budget(tiny_student, tiny_onnx_student,
                                                           monkeypatch):
    """On a CPU a batch runs in passes whose (documents, tokens, vocabulary) float32 logits fit
    `CPU_LOGITS_BYTES`; nothing is lost or reordered, and the weights are those of one pass."""
    for student in (tiny_student, tiny_onnx_student):
        expected = student.encode_documents(DOCS, ids=IDS, batch_size=8)
        widths = []
        real = type(student)._sparse_rows

        def sparse_rows(self, ids, mask, pruning, real=real, widths=widths):
            widths.append(tuple(ids.shape))
            return real(self, ids, mask, pruning)

        monkeypatch.setattr(type(student), "_sparse_rows", sparse_rows)
        width = max(len(r) for r in student.tokenize_documents(DOCS))
        monkeypatch.setattr(student, "CPU_LOGITS_BYTES", 2 * width * len(student.vocabulary) * 4)
        monkeypatch.setattr("convsparse.encoders.student_encoder_base.MAX_PADDING", 1.0)  # one batch
        got = student.encode_documents(DOCS, ids=IDS, batch_size=8)
        assert got.ids == IDS and [n for n, _ in widths] == [2, 2, 2, 1]
        for a, b in zip(expected, got):
            assert a.keys() == b.keys()
            assert max((abs(a[t] - b[t]) for t in a), default=0.0) < 1e-5
        monkeypatch.undo()


def test_out_of_memory_on_one_document_is_raised(tiny_student, monkeypatch):
    def pooled(self, ids, mask):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(type(tiny_student), "pooled", pooled)
    monkeypatch.setattr(tiny_student, "max_batch", None)
    with pytest.raises(torch.OutOfMemoryError):
        tiny_student.encode_documents(DOCS[:2], batch_size=2)
    monkeypatch.setattr(tiny_student, "max_batch", None)


def test_non_finite_activation_names_the_record(tiny_student, monkeypatch):
    real = type(tiny_student).pooled

    def pooled(self, ids, mask):
        out = real(self, ids, mask)
        out[0, 2000] = float("nan")
        return out

    monkeypatch.setattr(type(tiny_student), "pooled", pooled)
    with pytest.raises(InvalidTermMapError, match="nan") as e:
        tiny_student.encode_documents(DOCS[:1], ids=["doc-9"])
    assert e.value.record_id == "doc-9" and e.value.token == tiny_student.vocabulary[2000]


def test_device_mask_is_a_superset_of_the_exact_pruning():
    from convsparse.encoders.device_sparse import keep_mask, sparsify

    g = torch.Generator().manual_seed(0)
    act = torch.relu(torch.randn(5, 300, generator=g)).round(decimals=1)  # many ties
    for policy in POLICIES:
        keep = keep_mask(act, policy)
        for r in range(act.shape[0]):
            exact = set(policy.apply(TermMap(
                {str(i): float(v) for i, v in enumerate(act[r].tolist()) if v > 0})))
            assert {str(i) for i in keep[r].nonzero().flatten().tolist()} >= exact
    rows = sparsify(act)
    assert rows.n_rows == 5 and rows.nnz == int((act > 0).sum())
    np.testing.assert_array_equal(rows.values, act[act > 0].numpy())


def test_onnx_bulk_path_matches_its_dense_path(tiny_student, tiny_onnx_student, encoders_cache_dir):
    from convsparse.encoders.onnx_runtime import OnnxStudent

    old = dense_reference(tiny_onnx_student, DOCS, IDS, None, 3)
    assert list(tiny_onnx_student.encode_documents(DOCS, ids=IDS, batch_size=3)) == list(old)
    topk = OnnxStudent.from_torch(tiny_student, device="cpu", top_k=16,
                                  cache_dir=encoders_cache_dir)
    for x, y in zip(topk.encode_documents(DOCS), tiny_student.encode_documents(DOCS)):
        assert len(x) <= 16
        assert [t for t, _ in x.top(5)] == [t for t, _ in y.top(5)]


def test_onnx_cpu_opt_ins_run_close(tiny_student, encoders_cache_dir):
    from convsparse.encoders.onnx_runtime import OnnxStudent

    ref = tiny_student.encode_documents(DOCS)
    opt = OnnxStudent.from_torch(tiny_student, device="cpu", optimize=True,
                                 cache_dir=encoders_cache_dir)
    q8 = OnnxStudent.from_torch(tiny_student, device="cpu", int8=True, cache_dir=encoders_cache_dir)
    assert opt.onnx_path.name.endswith("-opt.onnx") and q8.onnx_path.name.endswith("-opt-int8.onnx")
    assert opt.fingerprint == q8.fingerprint == tiny_student.fingerprint
    for x, y, z in zip(ref, opt.encode_documents(DOCS), q8.encode_documents(DOCS)):
        assert max(abs(x[t] - y.get(t, 0.0)) for t in x) < 1e-3
        heavy = [t for t, _ in x.top(3)]
        assert all(t in z for t in heavy)  # int8: the heaviest terms survive
    with pytest.raises(ValueError, match="fp16"):
        OnnxStudent.from_torch(tiny_student, device="cpu", fp16=True, int8=True,
                               cache_dir=encoders_cache_dir)


def test_prefetch_order_errors_and_early_stop():
    from convsparse.encoders.prefetch import prefetch

    assert list(prefetch(range(50), depth=3)) == list(range(50))
    assert list(prefetch(iter([]), depth=1)) == []

    def broken():
        yield 1
        raise KeyError("producer failed")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(KeyError, match="producer failed"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = prefetch(endless(), depth=2)
    assert next(gen) == 0
    gen.close()  # the producer thread stops
    n = len(produced)
    threading.Event().wait(0.3)
    assert len(produced) <= n + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_path_matches_cpu_fp32(tiny_model_dir, tiny_student):
    """On a GPU machine: bf16 by default, pinned staging, sparsified on the device, and the
    same heavy terms as fp32 on the CPU (exact equality holds only within one device/dtype)."""
    from convsparse.encoders.student import SpladeStudent, pad_batch

    gpu = SpladeStudent.from_pretrained(tiny_model_dir, device="cuda")
    assert gpu.dtype == torch.bfloat16 and gpu.fingerprint == tiny_student.fingerprint
    ids, mask = gpu._stage(*pad_batch(gpu.tokenize_documents(DOCS[:2]), 0))
    assert ids.is_pinned() and mask.is_pinned()
    fp32 = SpladeStudent.from_pretrained(tiny_model_dir, device="cuda", dtype="float32")
    assert list(fp32.encode_documents(DOCS)) == list(dense_reference(fp32, DOCS, None, None, 32))
    for x, y in zip(tiny_student.encode_documents(DOCS), gpu.encode_documents(DOCS)):
        top = [t for t, w in x.top(10) if w > 0.1 * x.top(1)[0][1]]
        assert all(t in y and abs(x[t] - y[t]) <= 0.02 * x[t] + 0.02 for t in top)
