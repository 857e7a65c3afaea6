"""`convsparse augment`: G2R's data-level distillation (Kim et al., "Distilling the Knowledge of
Large-scale Generative Models into Retrieval Models for Efficient Open-domain Conversation",
Findings of EMNLP 2021): the training conversations are augmented with a generative model's
outputs.

For each task, `n` variants of each kind:
- `question`: the current user question asked another way (the history stays);
- `response`: another assistant reply in place of the last assistant turn (tasks with one).

A variant is a task of its own, kept with its source: `id` = `<source id>::aug-<kind>-<i>`,
`source_id`, the source's `conversation_id` and `rewrite` (so the teachers score the same
information need and the source's qrels apply), and `augmentation` = `{kind, index, generator}`.
The output holds the source tasks followed by their variants, or the variants alone with
`include_sources=False`. Distillation mixes them in with a sampling weight: list the file as a
conversation source with `weight:` (see `ConversationSource`); a variant never lands in the
held-out split. Variant `i` of a kind is prompted with its index, so the cache keeps the `n`
variants apart and a greedy endpoint is asked `n` distinct prompts.
"""

from __future__ import annotations

from pathlib import Path

from convsparse.benchmark_collections import load_task_records
from convsparse.training.generators.base import Generator
from convsparse.training.generators.cache import GenerationCache, cache_key
from convsparse.training.generators.prompts import AUGMENT_PROMPTS, clean_generation, render
from convsparse.training.generators.rewrite import (
    GenerationReport,
    Job,
    run_jobs,
    write_failures,
    write_jsonl,
)

KINDS = tuple(AUGMENT_PROMPTS)


def _variant_instruction(i: int, n: int) -> str:
    return "" if n == 1 else f"\n\n(Variant {i + 1} of {n}: make it differ from the others.)"


def augment_conversations(conversations: str | Path, out: str | Path, generator: Generator, *,
                          n: int = 2, kinds: tuple[str, ...] = ("question",),
                          include_sources: bool = True, cache: str | Path | None = None,
                          chunk_size: int = 64, progress: bool = True) -> GenerationReport:
    unknown = [k for k in kinds if k not in AUGMENT_PROMPTS]
    if unknown or n < 1:
        raise ValueError(f"unknown augmentation kind(s) {unknown} (known: {list(KINDS)}) or n < 1")
    out = Path(out)
    store = GenerationCache(cache or out.with_name(out.name + ".cache.jsonl"))
    pairs = load_task_records(conversations)
    jobs: dict[str, list[tuple[str, int, Job]]] = {}
    for task, _ in pairs:
        for kind in kinds:
            if kind == "response" and not any(t.role == "assistant" for t in task.turns):
                continue
            for i in range(n):
                prompt = render(AUGMENT_PROMPTS[kind] + _variant_instruction(i, n), task.turns)
                vid = f"{task.id}::aug-{kind}-{i}"
                job = Job(cache_key(generator.identity, f"augment-{kind}", prompt, vid), vid, prompt,
                          clean=str.strip if kind == "response" else clean_generation)
                jobs.setdefault(task.id, []).append((kind, i, job))
    all_jobs = [j for lst in jobs.values() for _, _, j in lst]
    report = GenerationReport(total=len(all_jobs), out=out)
    try:
        texts = run_jobs(all_jobs, generator, store, report,
                         chunk_size=chunk_size, progress=progress, desc="augment")
    finally:
        store.close()
    records = []
    for task, raw in pairs:
        if include_sources:
            records.append(raw)
        for kind, i, job in jobs.get(task.id, []):
            if job.key not in texts:
                continue
            turns = [{"role": t.role, "text": t.text} for t in task.turns]
            if kind == "question":
                turns[-1] = {"role": "user", "text": texts[job.key]}
            else:
                last = max(k for k, t in enumerate(turns) if t["role"] == "assistant")
                turns[last] = {"role": "assistant", "text": texts[job.key]}
            records.append({"id": job.turn_id, "source_id": task.id,
                            "conversation_id": task.conversation_id or task.id, "turns": turns,
                            **({"rewrite": task.rewrite} if task.rewrite else {}),
                            "augmentation": {"kind": kind, "index": i,
                                             "generator": generator.identity}})
    write_jsonl(records, out)
    write_failures(report, out)
    return report


__all__ = ["KINDS", "augment_conversations"]
