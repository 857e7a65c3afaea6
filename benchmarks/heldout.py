"""The held-out first stage the re-ranker benchmarks share (`rerank_eval.py`,
`rerank_statistics.py`; `chat_turn.py` reads only the held-out turns).

Held-out = the re-ranker's split (`RerankConfig` defaults: 4 conversations per domain, seed 13),
never used for training or any choice. The first stage is the shipped student on the raw
conversation, exact search over the corpus encoded by its base (`encode_corpus`, cached under
the settings' cache folder, so a training run's or another benchmark's encoding is reused).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _config(data: Path, out_dir: Path) -> Any:
    from convsparse.reranking.config import RerankConfig

    return RerankConfig(output_dir=out_dir, collection=data)


def heldout_turns(col: Any, data: Path, out_dir: Path) -> list[Any]:
    """The held-out turns of collection `col` (read from `data`)."""
    from convsparse.training.anchored import split_tasks

    return split_tasks(col.conversations, col.qrels, _config(data, out_dir)).heldout


@dataclass(frozen=True)
class FirstStage:
    """The held-out turns and the first stage's candidates for each."""

    collection: Any
    heldout: list[Any]
    #: the corpus's passage ids, in its order, and the text an encoder reads for each
    doc_ids: list[str]
    texts: dict[str, str]
    #: one `build_labels` label a turn: its candidates and their first-stage scores
    labels: list[Any]

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.heldout]

    @property
    def turns(self) -> dict[str, list[Any]]:
        return {t.id: list(t.turns) for t in self.heldout}


def first_stage(data: Path, out_dir: Path, depth: int) -> FirstStage:
    """The first stage's top `depth` for every held-out turn of the collection at `data`."""
    from convsparse.benchmark_collections import load_collection
    from convsparse.encoders.loading import load_student
    from convsparse.reranking.labels import build_labels
    from convsparse.settings import get_settings
    from convsparse.training.anchored import encode_corpus

    col = load_collection(data)
    heldout = heldout_turns(col, data, out_dir)
    base = load_student(_config(data, out_dir).base, runtime="torch", device="cpu")
    doc_ids = list(col.corpus)
    texts = {d: p.encoded_text for d, p in col.corpus.items()}
    docs = encode_corpus(base, [texts[d] for d in doc_ids], cache=get_settings().cache_dir / "corpus")
    student = load_student(None, runtime="torch", device="cpu")
    queries = student.encode_conversations([list(t.turns) for t in heldout]).term_maps
    labels = build_labels(heldout, queries, docs, doc_ids, base.vocabulary, depth=depth,
                          teacher_queries=None, qrels=col.qrels)
    return FirstStage(col, heldout, doc_ids, texts, labels)
