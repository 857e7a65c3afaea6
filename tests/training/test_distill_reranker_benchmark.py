"""`benchmarks/student_distill_reranker.py --extra`: which train-only turns join which folds."""

from __future__ import annotations

from convsparse.benchmark_collections import ConversationTask
from convsparse.conversation import Turn


def task(tid: str, conversation: str, *questions: str) -> ConversationTask:
    turns = []
    for q in questions:
        turns += [Turn(role="user", text=q), Turn(role="assistant", text="an answer")]
    return ConversationTask(tid, tuple(turns[:-1]), conversation_id=conversation)


def test_an_extra_task_opening_an_mtrag_conversation_is_that_conversation(load_benchmark):
    bench = load_benchmark("student_distill_reranker")
    mtrag = [task("a1", "A", "What is a Roth IRA?"), task("a2", "A", "What is a Roth IRA?", "Limits?"),
             task("b1", "B", "Who wrote Hamlet?")]
    extra = [task("u1", "U1", " what is a roth ira? ", "And in 2020?"),
             task("u2", "U2", "How do tides work?")]
    assert bench.continued_mtrag_conversation(extra, mtrag) == {"u1": "A"}


def test_the_summary_counts_the_extra_turns_each_fold_trains_on(load_benchmark):
    bench = load_benchmark("student_distill_reranker")
    extras = {"mtrag-un": [task("u1", "U1", "q"), task("u2", "U2", "q2")]}
    continued = {"u1": "A"}
    summary = bench.extra_summary(
        extras, {"mtrag-un": {"seconds_labelling": 3.0, "passages_embedded": 5}},
        {"mtrag-un": 0.5}, {"mtrag-un": 3}, {"A": 0, "B": 1},
        lambda t: continued.get(t.id, t.conversation_id), 2)
    entry = summary["mtrag-un"]
    assert entry["continuing_a_dev_conversation"] == 1 and entry["dropped"] == 3
    assert entry["trained_per_fold"] == [1, 2]  # u1 sits out the fold that tests conversation A
    text = "\n".join(bench.extra_lines(summary, [10, 12]))
    assert "MTRAG 10-12, then" in text and "mtrag-un 2 turns (1-2 in a fold's training set" in text
    assert "3 more continue a held-out conversation and were dropped" in text and "5 passages" in text
