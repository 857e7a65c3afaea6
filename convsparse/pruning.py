"""`PruningPolicy`: which low-weight terms to drop from a term map.

One policy type serves both sides: queries (latency) and, optionally, documents at ingest
time (index size). Every criterion that is set must hold for a term to be kept.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from convsparse.termmap import TermMap


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
