"""`convsparse rewrite`: a standalone rewrite of every user turn, written where the distillation
teachers read it (the task's `rewrite`).

Input: any conversations file `convsparse.benchmark_collections.load_task_records` reads (JSONL tasks, one
per user turn with its history, or CAsT topics). Output: JSONL, every input record kept with all
its fields and `rewrite` set to the generated text (`rewrite_generator` says which generator; an
earlier `rewrite` moves to `reference_rewrite`). A turn that fails after retries keeps its record
without a generated rewrite (the teachers then fall back to the last user turn) and is listed,
with the reason, in `<out>.failures.jsonl` and the returned report. The output is written
atomically at the end; progress lives in the cache (`GenerationCache`), so an interrupted run
loses at most the requests in flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convsparse.benchmark_collections import load_task_records
from convsparse.progress import progress_bar
from convsparse.training.generators.base import GenerationError, Generator, Prompt
from convsparse.training.generators.cache import GenerationCache, cache_key
from convsparse.training.generators.prompts import (
    DEFAULT_REWRITE_PROMPT,
    check_template,
    clean_generation,
    render,
)

_REWRITE_KEYS = ("rewrite", "manual_rewrite", "manual_rewritten_utterance", "rewritten_utterance",
                 "standalone_question")


@dataclass
class Job:
    key: str
    turn_id: str
    prompt: Prompt
    clean: Callable[[str], str] | None = None  # None: the `run_jobs` default


@dataclass
class GenerationReport:
    """What a `rewrite` / `augment` run did; `failures` are `{id, reason, attempts}`."""

    total: int = 0
    generated: int = 0
    cached: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    failures_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "generated": self.generated, "cached": self.cached,
                "failed": len(self.failures), "out": str(self.out),
                "failures_path": str(self.failures_path) if self.failures_path else None}


def run_jobs(jobs: Sequence[Job], generator: Generator, cache: GenerationCache,
             report: GenerationReport, *, clean: Callable[[str], str] = clean_generation,
             chunk_size: int = 64, progress: bool = True, desc: str = "generate") -> dict[str, str]:
    """Texts by job key: cached ones read back, the rest generated in chunks (each chunk is
    cached as it finishes). Failures (an error, or an empty text after cleaning) go to
    `report.failures`."""
    texts: dict[str, str] = {}
    todo = []
    for job in jobs:
        hit = cache.get(job.key)
        if hit is not None:
            texts[job.key] = hit
            report.cached += 1
        else:
            todo.append(job)
    bar = progress_bar(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, enabled=progress)
    for i in range(0, len(todo), chunk_size):
        chunk = todo[i: i + chunk_size]
        for job, result in zip(chunk, generator.generate([j.prompt for j in chunk])):
            if isinstance(result, GenerationError):
                report.failures.append({"id": job.turn_id, "reason": result.reason,
                                        "attempts": result.attempts})
            elif not (text := (job.clean or clean)(result)):
                report.failures.append({"id": job.turn_id, "reason": f"empty generation {result[:80]!r}",
                                        "attempts": 1})
            else:
                cache.put(job.key, text, id=job.turn_id)
                texts[job.key] = text
                report.generated += 1
        bar.update(len(chunk))
    bar.close()
    return texts


def write_jsonl(records: Iterable[dict[str, Any]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def write_failures(report: GenerationReport, out: Path) -> None:
    path = out.with_name(out.name + ".failures.jsonl")
    if report.failures:
        write_jsonl(report.failures, path)
        report.failures_path = path
    elif path.exists():
        path.unlink()  # a clean re-run leaves no stale failure list behind


def rewrite_conversations(conversations: str | Path, out: str | Path, generator: Generator, *,
                          template: str = DEFAULT_REWRITE_PROMPT, cache: str | Path | None = None,
                          only_missing: bool = False, chunk_size: int = 64,
                          progress: bool = True) -> GenerationReport:
    """Rewrite every user turn of `conversations` into `out` (see the module docstring).
    `cache` defaults to `<out>.cache.jsonl`; `only_missing` keeps rewrites already present."""
    out = Path(out)
    check_template(template)
    pairs = load_task_records(conversations)
    cache_store = GenerationCache(cache or out.with_name(out.name + ".cache.jsonl"))
    report = GenerationReport(total=len(pairs), out=out)
    jobs = {}
    for task, _ in pairs:
        if only_missing and task.rewrite:
            continue
        prompt = render(template, task.turns)
        jobs[task.id] = Job(cache_key(generator.identity, "rewrite", prompt, task.id), task.id, prompt)
    try:
        texts = run_jobs(list(jobs.values()), generator, cache_store, report,
                         chunk_size=chunk_size, progress=progress, desc="rewrite")
    finally:
        cache_store.close()
    records = []
    for task, raw in pairs:
        job = jobs.get(task.id)
        if job is None:
            records.append(raw)
            continue
        rec = {k: v for k, v in raw.items() if k not in _REWRITE_KEYS}
        if task.rewrite:
            rec["reference_rewrite"] = task.rewrite
        if job.key in texts:
            rec["rewrite"] = texts[job.key]
            rec["rewrite_generator"] = generator.identity
        records.append(rec)
    write_jsonl(records, out)
    write_failures(report, out)
    return report


__all__ = ["GenerationReport", "Job", "rewrite_conversations", "run_jobs",
           "write_jsonl"]
