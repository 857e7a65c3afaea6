"""Distillation data: the corpus (as `document_text` gives each passage), the conversation
tasks with their positives, and the held-out split. Reading goes through
`convsparse.benchmark_collections`, the same loaders evaluation uses."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convsparse.benchmark_collections import load_conversations, load_corpus
from convsparse.conversation import Turn
from convsparse.training.config import ConversationSource


@dataclass
class Task:
    """One training / held-out turn: the conversation, the teacher's query and its positives."""

    task_id: str
    conversation_id: str
    turns: list[Turn]
    teacher_query: str  # rewrite, or the last user turn when there is none
    has_rewrite: bool
    train_only: bool
    positives: list[str] = field(default_factory=list)
    source_id: str | None = None  # an augmented variant's source task (`convsparse augment`)
    weight: float = 1.0  # sampling weight (`ConversationSource.weight`)


def trec_safe_id(s: str) -> str:
    """A task id a TREC run file can hold (whitespace -> "_")."""
    return "".join("_" if c.isspace() else c for c in str(s))


def load_passage_texts(path: str | Path) -> dict[str, str]:
    """{passage id: the text encoders and teachers read (`Passage.encoded_text`)} of the corpus
    at `path` (`convsparse.benchmark_collections.load_corpus` reads the `Passage` values)."""
    return {pid: p.encoded_text for pid, p in load_corpus(path).items()}


def load_tasks(sources: Sequence[ConversationSource],
               qrels: Mapping[str, Mapping[str, int]]) -> list[Task]:
    tasks: list[Task] = []
    for src in sources:
        loaded = load_conversations(src.path)
        for c in loaded[: src.limit] if src.limit else loaded:
            tid = trec_safe_id(c.id)
            rewrite = (c.rewrite or "").strip()
            last_user = next(t.text for t in reversed(c.turns) if t.role == "user")
            source = c.fields.get("source_id")
            source = trec_safe_id(source) if source is not None else None
            pos = [d for d, rel in qrels.get(source or tid, {}).items() if rel > 0]
            tasks.append(Task(tid, c.conversation_id or tid, list(c.turns), rewrite or last_user,
                              bool(rewrite), src.train_only, pos, source, src.weight))
    return tasks


def split_tasks(tasks: Sequence[Task], fraction: float, seed: int) -> tuple[list[Task], list[Task]]:
    """Hold out `fraction` of the judged conversations (by conversation_id, hashed with the seed,
    so a conversation is entirely in or out). Unjudged / train_only tasks always train.
    Augmented variants (`source_id`) follow their conversation into training and are never
    held out: the held-out split is real conversations only."""
    convs = sorted({t.conversation_id for t in tasks
                    if t.positives and not t.train_only and t.source_id is None})
    rng = random.Random(seed)
    rng.shuffle(convs)
    held = set(convs[: round(len(convs) * fraction)])
    train = [t for t in tasks if t.conversation_id not in held]
    test = [t for t in tasks if t.conversation_id in held and t.positives and t.source_id is None]
    return train, test


def stratified_holdout(conversations: Sequence[tuple[str, str]], per_domain: int, seed: int
                       ) -> set[str]:
    """`per_domain` conversation ids of each domain, drawn with `seed`, from (conversation id,
    domain) pairs: a held-out part that keeps every domain (MTRAG's dev tasks come from 54
    conversations, so a random fraction can leave a domain nearly empty)."""
    by_domain: dict[str, set[str]] = {}
    for cid, domain in conversations:
        by_domain.setdefault(str(domain), set()).add(cid)
    rng = random.Random(seed)
    held: set[str] = set()
    for domain in sorted(by_domain):
        ids = sorted(by_domain[domain])
        rng.shuffle(ids)
        held |= set(ids[:per_domain])
    return held


def sample_tasks(tasks: Sequence[Task], k: int, rng: random.Random) -> list[Task]:
    """`k` distinct tasks; with `weight`s other than 1, a weighted sample without replacement
    (Efraimidis-Spirakis: the `k` largest `u ** (1 / weight)`), else exactly `rng.sample`."""
    k = min(k, len(tasks))
    if all(t.weight == 1.0 for t in tasks):
        return rng.sample(list(tasks), k)
    keys = [rng.random() ** (1.0 / t.weight) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -keys[i])
    return [tasks[i] for i in order[:k]]


__all__ = ["Task", "load_passage_texts", "load_tasks", "sample_tasks", "split_tasks", "stratified_holdout",
           "trec_safe_id"]
