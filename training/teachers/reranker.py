"""The re-ranker teacher: the second stage's scores over the first stage's top `depth`.

G2R's model-level distillation (Kim et al., Findings of EMNLP 2021) with the project's own
second stage as the stronger ranker. Unlike the other teachers it reads the *conversation*,
not the rewrite: for each task the first stage (the shipped anchored student unless given)
retrieves its top `depth` (50) passages from the raw conversation, and the re-ranker
(`convsparse.reranking`) scores them. The candidates and first-stage scores come from the
re-ranker's own label path (`reranking/labels.py`, `build_labels`), so the teacher sees the
same inputs the re-ranker sees when serving; the run holds those candidates in the
re-ranker's order, scores as the re-ranker gives them.

Cost: the first stage's conversation encoding, the corpus through the first stage's base once
(cached by `encode_corpus`), embedding with the bi-encoder each candidate passage the
re-ranker has not stored yet (its `PassageVectors` keep them), then the re-ranker over `depth`
candidates per turn. Embedding new passages dominates; measured figures are in
`docs/guides/distilling-the-reranker.md`.

As a registered teacher (`teachers: [reranker]`) it loads `load_reranker(DEFAULT_RERANKER)`
(the package's default re-ranker) and the shipped first stage; `reranker_run` takes any
re-ranker (a `Reranker` or a folder) and first stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convsparse.benchmark_collections import ConversationTask
from convsparse.progress import progress_bar
from convsparse.training.teachers.base import Run, TeacherInputs

if TYPE_CHECKING:  # convsparse.reranking loads torch and transformers: only when labelling
    from convsparse.reranking.labels import RerankLabel

#: first-stage candidates the re-ranker scores per task (the issue's N >= 50)
DEPTH = 50
#: what `load_reranker` is given when no re-ranker is passed
DEFAULT_RERANKER = "default"


def _documents(first_stage, corpus: Mapping[str, str], documents):
    """The corpus as CSR rows of the first stage's document side (`encode_corpus`, cached)."""
    if documents is not None:
        return documents
    from convsparse.settings import get_settings
    from convsparse.training.anchored import encode_corpus

    base = getattr(first_stage, "base", first_stage)  # an anchored student encodes through its base
    return encode_corpus(base, [corpus[d] for d in corpus], cache=get_settings().cache_dir / "corpus",
                         progress=False)


def reranker_labels(
    tasks: Sequence[ConversationTask], corpus: Mapping[str, str], *, reranker, first_stage,
    depth: int = DEPTH, documents=None, qrels: Mapping[str, Mapping[str, int]] | None = None,
    progress: bool = False,
) -> list[RerankLabel]:
    """One `RerankLabel` per task: the first stage's `depth` best passages (`build_labels`)
    with the re-ranker's scores as the teacher's. `documents`: the corpus's CSR rows under the
    first stage's document side, in `corpus` order (computed when None)."""
    from convsparse.reranking.labels import build_labels

    doc_ids = list(corpus)
    docs = _documents(first_stage, corpus, documents)
    queries = first_stage.encode_conversations([list(t.turns) for t in tasks],
                                               ids=[t.id for t in tasks]).term_maps
    labels = build_labels(tasks, queries, docs, doc_ids, first_stage.vocabulary, depth=depth,
                          teacher_queries=None, qrels=qrels or {})
    if reranker.semantic is not None:  # embed every candidate once, in batches
        reranker.semantic.add(sorted({corpus[d] for lab in labels for d in lab.candidates}),
                              progress=progress)
    for task, lab in zip(progress_bar(tasks, desc="re-ranker teacher", unit="turn", enabled=progress),
                         labels):
        scores = reranker.score(list(task.turns), lab.query, [corpus[d] for d in lab.candidates],
                                lab.first_stage)
        lab.teacher = [float(s) for s in scores]
    return labels


def labels_to_run(labels: Sequence[RerankLabel]) -> Run:
    """Each label's candidates in the teacher's order, with its scores."""
    run: Run = {}
    for lab in labels:
        scores = np.asarray(lab.teacher if lab.teacher is not None else lab.first_stage)
        order = np.argsort(-scores, kind="stable")
        run[lab.task_id] = {lab.candidates[i]: float(scores[i]) for i in order}
    return run


def _reranker(reranker: Any):
    from convsparse.reranking.reranker import Reranker, load_reranker

    if isinstance(reranker, Reranker):
        return reranker
    # PyTorch, as every label so far was made: a cached run stays reproducible
    return load_reranker(Path(reranker) if reranker is not None else DEFAULT_RERANKER,
                         runtime="torch")


def reranker_run(inputs: TeacherInputs, *, reranker: Any = None, first_stage: Any = None,
                 depth: int = DEPTH) -> Run:
    """The re-ranker's run over the first stage's top `min(depth, inputs.k)` for each task of
    `inputs.conversations`. `first_stage`: an encoder, or None for the shipped student."""
    if inputs.conversations is None:
        raise ValueError("the reranker teacher needs TeacherInputs.conversations ({task id: turns})")
    from convsparse.conversation import parse_conversation
    from convsparse.encoders.loading import load_student

    student = first_stage if first_stage is not None else load_student(runtime="torch", device="cpu")
    tasks = [ConversationTask(id=qid, turns=tuple(parse_conversation(turns)))
             for qid, turns in inputs.conversations.items()]
    labels = reranker_labels(tasks, inputs.corpus, reranker=_reranker(reranker), first_stage=student,
                             depth=min(depth, inputs.k))
    return labels_to_run(labels)


def reranker_teacher(inputs: TeacherInputs) -> Run:
    return reranker_run(inputs)


__all__ = ["DEFAULT_RERANKER", "DEPTH", "labels_to_run", "reranker_labels", "reranker_run",
           "reranker_teacher"]
