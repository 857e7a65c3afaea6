"""`PruningPolicy`: which low-weight terms to drop from a term map.

One policy type serves both sides: queries (latency) and, optionally, documents at ingest
time (index size). Every criterion that is set must hold for a term to be kept.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from convsparse.termmap import CsrRows, TermMap, Vocabulary


class PruningPolicy(BaseModel):
    """Keep a term only if it passes every criterion that is set.

    - ``min_weight``: absolute threshold, keep ``w >= min_weight``.
    - ``max_ratio``: keep ``w >= max_ratio * max(w)`` (OpenSearch neural_sparse ``max_ratio``).
    - ``top_k``: keep the ``top_k`` heaviest terms.
    - ``alpha_mass``: keep the heaviest terms until they hold ``alpha_mass`` of the total weight.

    >>> PruningPolicy(top_k=2).apply(TermMap({"a": 3.0, "b": 2.0, "c": 1.0})).to_dict()
    {'a': 3.0, 'b': 2.0}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_weight: float | None = Field(default=None, ge=0)
    max_ratio: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    alpha_mass: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _finite(self) -> PruningPolicy:
        if self.min_weight is not None and self.min_weight != self.min_weight:
            raise ValueError("min_weight must not be NaN")
        return self

    @classmethod
    def none(cls) -> PruningPolicy:
        return cls()

    @property
    def is_noop(self) -> bool:
        return all(v is None for v in (self.min_weight, self.max_ratio, self.top_k, self.alpha_mass))

    def describe(self) -> str:
        """Stable short text, used in fingerprints and reports ("none" when nothing is set)."""
        parts = [f"{k}={v}" for k, v in self.model_dump().items() if v is not None]
        return ",".join(parts) if parts else "none"

    def apply(self, term_map: TermMap) -> TermMap:
        if self.is_noop or len(term_map) == 0:
            return term_map
        ranked = term_map.top()
        if self.top_k is not None:
            ranked = ranked[: self.top_k]
        if self.min_weight is not None:
            ranked = [(t, w) for t, w in ranked if w >= self.min_weight]
        if self.max_ratio is not None and ranked:
            cut = self.max_ratio * term_map.top(1)[0][1]
            ranked = [(t, w) for t, w in ranked if w >= cut]
        if self.alpha_mass is not None and ranked:
            target = self.alpha_mass * term_map.total()
            kept, mass = [], 0.0
            for t, w in ranked:
                kept.append((t, w))
                mass += w
                if mass >= target:
                    break
            ranked = kept
        return TermMap(ranked)

    def apply_csr(self, rows: CsrRows, vocabulary: Vocabulary) -> CsrRows:
        """`apply` to every row of a CSR batch at once, with exactly the same result as
        `apply` on each row's `TermMap` (float64 comparisons, ties at the top-k boundary
        broken by token as `TermMap.top` does). Vectorised over the batch, except
        `alpha_mass`, whose running sum is taken row by row (over a row's non-zero terms,
        never the vocabulary) so that it adds in the same order as `apply`."""
        if self.is_noop or rows.nnz == 0:
            return rows
        weights = rows.values.astype(np.float64)
        row_of = rows.row_of_entries()
        keep = np.ones(rows.nnz, dtype=bool)
        order = None
        if self.alpha_mass is not None:
            order = self._ranked_order(rows, vocabulary, weights, row_of)
        if self.top_k is not None:
            long_rows = rows.counts() > self.top_k
            if long_rows.any():  # rows already within top_k (the device's output) keep all
                sub = rows if long_rows.all() else rows.take_rows(np.flatnonzero(long_rows))
                sub_w = sub.values.astype(np.float64)
                sub_order = self._ranked_order(sub, vocabulary, sub_w, sub.row_of_entries())
                rank_in_row = np.empty(sub.nnz, dtype=np.int64)
                rank_in_row[sub_order] = (np.arange(sub.nnz)
                                          - np.repeat(sub.indptr[:-1], sub.counts()))
                entry_is_long = long_rows[row_of]
                keep[entry_is_long] &= rank_in_row < self.top_k
        if self.min_weight is not None:
            keep &= weights >= self.min_weight
        if self.max_ratio is not None:
            counts = rows.counts()
            row_max = np.zeros(rows.n_rows, dtype=np.float64)
            nonempty = counts > 0
            row_max[nonempty] = np.maximum.reduceat(weights, rows.indptr[:-1][nonempty])
            keep &= weights >= self.max_ratio * row_max[row_of]
        if self.alpha_mass is not None and order is not None:
            keep = self._alpha_mass_csr(rows, weights, keep, order, self.alpha_mass)
        return rows.select(keep)

    @staticmethod
    def _ranked_order(rows: CsrRows, vocabulary: Vocabulary, weights: np.ndarray,
                      row_of: np.ndarray) -> np.ndarray:
        """Entry order by row, then weight descending, then token (`TermMap.top`'s order)."""
        return np.lexsort((vocabulary.rank[rows.indices], -weights, row_of))

    @staticmethod
    def _alpha_mass_csr(rows: CsrRows, weights: np.ndarray, keep: np.ndarray,
                        order: np.ndarray, alpha_mass: float) -> np.ndarray:
        """Keep the heaviest kept terms of each row until they hold `alpha_mass` of the row's
        total (the term that crosses the target is kept), as `apply` does."""
        out = np.zeros_like(keep)
        values = rows.values.tolist()
        for r in range(rows.n_rows):
            a, b = int(rows.indptr[r]), int(rows.indptr[r + 1])
            if a == b:
                continue
            target = alpha_mass * float(sum(values[a:b]))  # = TermMap.total()
            ranked = order[a:b][keep[order[a:b]]]
            if not len(ranked):
                continue
            mass = np.cumsum(weights[ranked])  # sequential adds, like apply's loop
            # kept while the mass *before* a term is below the target
            before = np.concatenate(([0.0], mass[:-1]))
            n = int(np.count_nonzero(before < target)) if len(ranked) > 1 else 1
            out[ranked[:max(1, n)]] = True
        return out
