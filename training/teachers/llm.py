"""The LLM teacher: G2R's model-level distillation (Kim et al., Findings of EMNLP 2021) with the
generator's own quality scores.

For each task, the top `CONVSPARSE_LLM_RERANK_DEPTH` (50) BM25 candidates of the rewrite are
scored by the generator given the *conversation* (`Generator.score`): a local model's mean
log-likelihood per token of the passage as the assistant's reply,
`s(c, d) = (1/|d|) sum_t log p_LLM(d_t | c, d_<t)`, or an endpoint's 0-10 rating
(`prompts.RATING_PROMPT`). The run holds those candidates in the LLM's order; like every teacher
it is cached as a TREC run and can be fused with the others (`training/fusion.py`: per-query
z-scores, averaged). The distillation loss is the existing KL term
(`training/losses/kl_divergence.py`): over a task's candidates D,
`KL(p_T || p_S) = sum_{d in D} p_T(d) (log p_T(d) - log p_S(d))`, with
`p_T = softmax_D(s_T(c, d) / T)` and `p_S = softmax_D(<q_S(c), d_S> / T)`, T = `kl_temperature`
(1); s_T is this teacher's score (per-query z-scored and averaged when fused with others), q_S
the student's term map of the conversation and d_S the document's.

A candidate the generator fails on gets the lowest score of its query (one warning with the
count); a query with no scored candidate keeps its BM25 order. The generator is
`TeacherInputs.generator`, else built from `CONVSPARSE_LLM_*` (`generator_from_settings`). The
trainer's cache key covers the rewrites and the corpus, not the generator: after changing
`CONVSPARSE_LLM_MODEL`, remove `teacher_runs/llm-*.trec`.
"""

from __future__ import annotations

import logging

from convsparse.training.generators.base import GenerationError
from convsparse.training.generators.prompts import conversation_messages
from convsparse.training.teachers.base import Run, TeacherInputs
from convsparse.training.teachers.bm25 import bm25_run

log = logging.getLogger(__name__)


def llm_run(inputs: TeacherInputs, *, depth: int | None = None, generator=None) -> Run:
    from convsparse.settings import get_settings
    from convsparse.training.generators import generator_from_settings
    settings = get_settings()
    owned = generator is None and inputs.generator is None
    gen = generator or inputs.generator or generator_from_settings(settings)
    try:
        return _rerank(inputs, gen, min(depth or settings.llm_rerank_depth, inputs.k))
    finally:
        if owned:
            gen.close()


def _rerank(inputs: TeacherInputs, gen, depth: int) -> Run:
    if inputs.conversations is None:
        raise ValueError("the llm teacher needs TeacherInputs.conversations ({task id: turns})")
    first = bm25_run(inputs.queries, inputs.corpus, k=depth)
    run: Run = {}
    failed = 0
    for qid, docs in first.items():
        ids = list(docs)
        prompt = conversation_messages(inputs.conversations[qid])
        scores = gen.score([prompt] * len(ids), [inputs.corpus[d] for d in ids])
        ok = [s for s in scores if not isinstance(s, GenerationError)]
        failed += len(scores) - len(ok)
        if not ok:
            run[qid] = dict(docs)
            continue
        floor = min(ok)
        scored = {d: (floor if isinstance(s, GenerationError) else float(s)) for d, s in zip(ids, scores)}
        run[qid] = dict(sorted(scored.items(), key=lambda kv: -kv[1]))
    if failed:
        log.warning("llm teacher: %d candidate(s) could not be scored; they got their query's "
                    "lowest score", failed)
    return run


def llm_teacher(inputs: TeacherInputs) -> Run:
    return llm_run(inputs)


__all__ = ["llm_run", "llm_teacher"]
