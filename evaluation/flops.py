"""FLOPS, as reported in the SPLADE papers (Formal et al., SIGIR 2021, after Paria et al., ICLR
2020): the expected number of floating-point multiply-adds needed to score one query against
one document with an inverted index, i.e. the expected number of terms they share:

    FLOPS = sum_j  p_q(j) * p_d(j)

where ``p_q(j)`` is the fraction of queries whose term map contains term ``j`` (non-zero weight)
and ``p_d(j)`` the fraction of documents that do, both estimated empirically on the evaluated
queries and the indexed corpus. (The FLOPS *regulariser* used in training,
`convsparse.training.losses.flops`, replaces these probabilities with mean weights over a batch;
the measure here uses activation probabilities.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TermStats:
    """How often each term is active across a set of term maps (queries or documents)."""

    count: int
    document_frequency: Mapping[Hashable, int]
    total_terms: int

    @classmethod
    def from_activations(cls, matrix: np.ndarray) -> TermStats:
        """From an (n, vocab) activation matrix: term j is active where the weight is > 0."""
        active = np.asarray(matrix) > 0
        per_term = active.sum(axis=0)
        df = {int(j): int(per_term[j]) for j in np.flatnonzero(per_term)}
        return cls(int(active.shape[0]), df, int(active.sum()))

    @classmethod
    def from_sparse(cls, matrix) -> TermStats:
        """From a scipy sparse (n, vocab) matrix (stored non-zeros > 0 are active)."""
        csr = matrix.tocsr()
        active = csr > 0
        per_term = np.asarray(active.sum(axis=0)).ravel()
        df = {int(j): int(per_term[j]) for j in np.flatnonzero(per_term)}
        return cls(int(csr.shape[0]), df, int(active.sum()))

    @classmethod
    def from_term_maps(cls, term_maps: Iterable[Mapping[str, float] | Iterable[str]]) -> TermStats:
        df: Counter[str] = Counter()
        n = total = 0
        for tm in term_maps:
            n += 1
            total += len(tm)
            df.update(tm.keys() if isinstance(tm, Mapping) else set(tm))
        return cls(n, df, total)

    @property
    def average_terms(self) -> float:
        return self.total_terms / self.count if self.count else float("nan")

    def probability(self, term: Hashable) -> float:
        return self.document_frequency.get(term, 0) / self.count if self.count else 0.0


def flops(queries: TermStats, documents: TermStats) -> float:
    """SPLADE's FLOPS: sum_j p_q(j) * p_d(j) (activation probabilities, see module docstring)."""
    if not queries.count or not documents.count:
        return float("nan")
    small, large = sorted((queries, documents), key=lambda s: len(s.document_frequency))
    return float(sum(c * large.document_frequency.get(t, 0) for t, c in
                     small.document_frequency.items()) / (queries.count * documents.count))



__all__ = ["TermStats", "flops"]
