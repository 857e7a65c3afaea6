"""The quality-independent check of issue 10: on the shared MTRAG data, MTRAG's own rewrites fed
through the LLM path (a scripted OpenAI-compatible server answering each turn's rewrite ->
`rewrite_conversations` -> the conversations file -> `load_tasks` -> the `TEACHERS` registry)
give exactly the teacher runs of the built-in path (MTRAG's `rewrite` read directly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convsparse.training.config import ConversationSource
from convsparse.training.data import load_passage_texts, load_tasks
from convsparse.training.generators.endpoint import EndpointGenerator
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script
from convsparse.training.generators.prompts import DEFAULT_REWRITE_PROMPT, render
from convsparse.training.generators.rewrite import rewrite_conversations
from convsparse.training.teachers import TEACHERS, TeacherInputs

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "mtrag-pooled"
N_TASKS = 120  # a slice, for speed: the first tasks that carry a rewrite


@pytest.mark.skipif(not (DATA / "conversations.jsonl").is_file(), reason="shared mtrag-pooled data absent")
def test_mtrag_rewrites_through_the_llm_path_give_the_built_in_teacher_runs(tmp_path):
    from convsparse.benchmark_collections import load_conversations

    rows = [json.loads(x) for x in (DATA / "conversations.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("rewrite")][:N_TASKS]
    reference = tmp_path / "mtrag-slice.jsonl"  # a temporary slice; the data stays in shared/
    reference.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = {render(DEFAULT_REWRITE_PROMPT, t.turns)[-1]["content"]: t.rewrite
               for t in load_conversations(reference)}

    with FakeChatServer(lambda content: Script(answer=answers[content])) as server, \
            EndpointGenerator(server.base_url, "mtrag-rewrites", concurrency=8) as gen:
        report = rewrite_conversations(reference, tmp_path / "rewritten.jsonl", gen, progress=False)
    assert report.generated == len(rows) and not report.failures

    corpus = load_passage_texts(DATA / "corpus.jsonl")
    built_in = load_tasks([ConversationSource(path=reference)], {})
    via_llm = load_tasks([ConversationSource(path=tmp_path / "rewritten.jsonl")], {})
    q_built = {t.task_id: t.teacher_query for t in built_in}
    q_llm = {t.task_id: t.teacher_query for t in via_llm}
    assert q_llm == q_built and all(t.has_rewrite for t in via_llm)
    for name in ("bm25",):
        run_built = TEACHERS[name](TeacherInputs(q_built, corpus, 100))
        run_llm = TEACHERS[name](TeacherInputs(q_llm, corpus, 100))
        assert run_llm == run_built
