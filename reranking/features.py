"""Term-matching features of one candidate list: what the Term Control Layer reads.

All of them come from what a chat app already has after the first stage (the conversation's
term map, the hits' first-stage scores, the passages' text), so serving needs no document
term maps from the engine (OpenSearch does not return them):

0. first-stage score, standardised over the candidate list (z-score);
1. first-stage score over the list's best score;
2. log(1 + first-stage score);
3. exact weighted overlap: the share of the conversation term map's mass whose terms occur
   verbatim (as word pieces) in the passage;
4. current-question coverage: the share of the current question's word pieces (3+ characters)
   found in the passage;
5. 1 / log2(rank + 1), the first stage's rank;
6. BM25 of the current question against the passage, over the list's best;
7. the same BM25, standardised over the list.

Scores are sparse dot products, so 0-2 carry the sparse-term overlap; 3-4 and 6-7 carry exact
matching, which SPLADE's expansion blurs. Why BM25 here: on the dev conversations the
first-stage features alone reorder nothing, and the current question's BM25 is what lifts a
linear listwise model over them (figures in docs/design/decisions.md, "The re-ranker").
It is BM25 over the re-ranker's own word pieces (Lucene's formula and defaults), with the
document frequencies and average length of the searched index (`TermStatistics`, computed
from a sample of it by `integration/collection_statistics.py`) or of the training collection
(stored in the re-ranker's folder). The one BM25 of the evaluation (`evaluation/bm25.py`,
`bm25s`) cannot serve here: it scores only a corpus it has indexed itself, and a candidate list
arrives without one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

N_FEATURES = 8
STATISTICS_FILE = "term_statistics.safetensors"
#: Lucene's BM25 defaults
K1, B = 1.2, 0.75


class PassagePieces(NamedTuple):
    """A passage's word pieces, in order, and as sorted distinct ids with their counts (what
    the overlap and BM25 features look terms up in)."""

    ids: np.ndarray
    distinct: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, ids: Sequence[int]) -> PassagePieces:
        arr = np.asarray(ids, np.int32)
        distinct, counts = np.unique(arr, return_counts=True)
        return cls(arr, distinct, counts.astype(np.int32))

    def count(self, terms: np.ndarray) -> np.ndarray:
        """How often each of `terms` occurs (0 for absent ones)."""
        if not len(self.distinct):
            return np.zeros(len(terms), np.int64)
        at = np.minimum(np.searchsorted(self.distinct, terms), len(self.distinct) - 1)
        return np.where(self.distinct[at] == terms, self.counts[at], 0)


@dataclass(frozen=True)
class TermStatistics:
    """Per-word-piece inverse document frequency and the average passage length (in word
    pieces) of a collection: what BM25 needs besides the query and the passage."""

    idf: np.ndarray
    average_length: float

    @classmethod
    def from_passages(cls, tokenizer, texts: Sequence[str], *, batch: int = 1024) -> TermStatistics:
        df = np.zeros(len(tokenizer), np.float64)
        total = 0
        for s in range(0, len(texts), batch):
            for ids in tokenizer(list(texts[s:s + batch]), add_special_tokens=False,
                                 verbose=False)["input_ids"]:
                df[np.unique(np.asarray(ids, np.int64))] += 1
                total += len(ids)
        n = max(len(texts), 1)
        # Lucene's idf: never negative, so a very common piece adds a little, never subtracts
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        return cls(idf, float(total / n) if texts else 1.0)

    def save(self, folder: str | Path) -> Path:
        from convsparse.reranking.files import write_safetensors

        return write_safetensors(Path(folder) / STATISTICS_FILE, {
            "idf": self.idf, "average_length": np.array([self.average_length], np.float32)})

    @classmethod
    def load(cls, folder: str | Path) -> TermStatistics:
        from safetensors.numpy import load_file

        d = load_file(str(Path(folder) / STATISTICS_FILE))
        return cls(d["idf"].astype(np.float32), float(d["average_length"][0]))

    def bm25(self, query_ids: Sequence[int], passages: Sequence[PassagePieces]) -> np.ndarray:
        """BM25 of each passage for the distinct `query_ids`."""
        terms = np.asarray(sorted({t for t in query_ids if 0 <= t < len(self.idf)}), np.int64)
        out = np.zeros(len(passages), np.float32)
        if not len(terms):
            return out
        idf = self.idf[terms].astype(np.float64)
        for i, pieces in enumerate(passages):
            counts = pieces.count(terms)
            norm = K1 * (1 - B + B * len(pieces.ids) / self.average_length)
            out[i] = float((idf * counts * (K1 + 1) / (counts + norm)).sum())
        return out


def _content_ids(tokenizer, text: str) -> set[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    toks = tokenizer.convert_ids_to_tokens(ids)
    return {i for i, t in zip(ids, toks) if len(t.removeprefix("##")) >= 3}


def term_features(
    tokenizer, query: Mapping[str, float], current_question: str,
    passages: Sequence[PassagePieces], first_stage: Sequence[float],
    statistics: TermStatistics | None = None,
) -> np.ndarray:
    """(n_candidates, N_FEATURES) float32 features of one candidate list, in list order.

    `query`: the conversation's term map (token -> weight); `passages`: each passage's word
    pieces (`Reranker.passage_ids`: the whole passage, not the cross-encoder's truncated
    view); `statistics`: for the BM25 features (6-7 stay 0 without them)."""
    n = len(first_stage)
    out = np.zeros((n, N_FEATURES), np.float32)
    if n == 0:
        return out
    s = np.asarray(first_stage, np.float64)
    out[:, 0] = (s - s.mean()) / (s.std() + 1e-6)
    out[:, 1] = s / (s.max() if s.max() > 0 else 1.0)
    out[:, 2] = np.log1p(np.maximum(s, 0.0))
    q_ids = np.asarray([-1 if i is None else i  # a term the tokenizer has no id for
                        for i in tokenizer.convert_tokens_to_ids(list(query))], np.int64)
    q_w = np.asarray(list(query.values()), np.float64)
    total = q_w.sum() or 1.0
    current = _content_ids(tokenizer, current_question)
    current_ids = np.asarray(sorted(current), np.int64)
    for i, pieces in enumerate(passages):
        out[i, 3] = q_w[pieces.count(q_ids) > 0].sum() / total
        out[i, 4] = (pieces.count(current_ids) > 0).mean() if current else 0.0
    out[:, 5] = 1.0 / np.log2(np.arange(n) + 2.0)
    if statistics is not None:
        bm = statistics.bm25(sorted(current), passages)
        out[:, 6] = bm / bm.max() if bm.max() > 0 else 0.0
        out[:, 7] = (bm - bm.mean()) / (bm.std() + 1e-6)
    return out


__all__ = ["N_FEATURES", "PassagePieces", "TermStatistics", "term_features"]
