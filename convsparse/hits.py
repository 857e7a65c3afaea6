"""`Hit`: one search result, as every backend returns it and the re-ranker reads it.

It lives in the core, below both the backends (`convsparse.integration.backends.base`
re-exports it with the `Backend` protocol) and the re-ranker (`convsparse.reranking`), so the
second stage reads first-stage results without importing the integration layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from convsparse.document_vectors import DocumentVectors

__all__ = ["Hit"]


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its score and its stored fields."""

    id: str
    score: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: the document's stored passage vectors, when the search was asked for them
    vectors: DocumentVectors | None = field(default=None, repr=False, compare=False)
