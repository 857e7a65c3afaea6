"""The re-ranker teacher: the second stage's scores over the first stage's candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import convsparse
from convsparse.benchmark_collections import load_collection
from convsparse.reranking.labels import RerankLabel
from convsparse.reranking.reranker import new_reranker
from convsparse.training.teachers import TEACHERS, TeacherInputs
from convsparse.training.teachers.reranker import labels_to_run, reranker_labels, reranker_run

SAMPLE = Path(convsparse.__file__).parent / "sample_data"


@pytest.fixture(scope="module")
def collection():
    return load_collection(SAMPLE)


@pytest.fixture(scope="module")
def reranker(tiny_model_dir, collection):
    """The shipped recipe's shape (semantic features with windows, Term Control Layer, no
    cross-encoder), tiny, with heads that are not zero."""
    torch.manual_seed(0)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic=tiny_model_dir,
                      semantic_window=8, semantic_stride=4,
                      passages=[p.encoded_text for p in collection.corpus.values()])
    with torch.no_grad():
        rr.model.semantic_linear.weight.normal_(0, 0.5)
        rr.model.gate.weight.normal_(0, 0.5)
    return rr


def test_labels_hold_the_reranker_scores_of_the_first_stage_candidates(
        reranker, tiny_student, collection, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    tasks = collection.conversations[:3]
    texts = {d: p.encoded_text for d, p in collection.corpus.items()}
    labels = reranker_labels(tasks, texts, reranker=reranker, first_stage=tiny_student, depth=4,
                             qrels=collection.qrels)
    assert [lab.task_id for lab in labels] == [t.id for t in tasks]
    for task, lab in zip(tasks, labels):
        assert isinstance(lab, RerankLabel) and len(lab.candidates) == len(lab.teacher) == 4
        assert lab.first_stage == sorted(lab.first_stage, reverse=True)  # first-stage order
        expected = reranker.score(list(task.turns), lab.query,
                                  [texts[d] for d in lab.candidates], lab.first_stage)
        np.testing.assert_allclose(lab.teacher, expected, rtol=1e-5)
    run = labels_to_run(labels)
    for lab in labels:
        scores = list(run[lab.task_id].values())
        assert scores == sorted(scores, reverse=True)
        assert set(run[lab.task_id]) == set(lab.candidates)


def test_the_registered_teacher_reads_conversations_and_caps_depth_at_k(
        reranker, tiny_student, collection, monkeypatch, tmp_path):
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    assert "reranker" in TEACHERS
    tasks = collection.conversations[:2]
    inputs = TeacherInputs(queries={t.id: t.rewrite or "" for t in tasks},
                           corpus={d: p.encoded_text for d, p in collection.corpus.items()}, k=3,
                           conversations={t.id: list(t.turns) for t in tasks})
    run = reranker_run(inputs, reranker=reranker, first_stage=tiny_student)
    assert list(run) == [t.id for t in tasks] and all(len(r) == 3 for r in run.values())
    with pytest.raises(ValueError, match="needs TeacherInputs.conversations"):
        TEACHERS["reranker"](TeacherInputs(queries={}, corpus={}))
