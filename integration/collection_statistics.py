"""The searched collection's statistics for the re-ranker's BM25 features.

A re-ranker folder carries the word-piece document frequencies and average passage length of
the collection it was trained on (`TermStatistics`); a chat app searches its own collection, in
which another word is rare. So the client asks the index for a sample of its passages
(`SupportsPassageSample`: every shipped backend) and computes BM25's statistics over the
re-ranker's word pieces, the way Lucene reads them from the index it searches.

- Up to `SAMPLE_SIZE` passages, spread over the index: inverse document frequencies from 10,000
  passages are within a few percent of the whole collection's for every piece that matters to
  a ranking, and the sample is read in one request.
- Under `MIN_PASSAGES` the re-ranker keeps its folder's statistics: an idf from a few hundred
  passages is mostly noise (a demo index of 50 passages would call every word rare).
- A backend that cannot sample, or a sample that fails, also keeps the folder's; the search
  says which statistics it used (`SearchResult.rerank_statistics`).
- Computed once per (re-ranker, index), again when the index's count has moved by more than
  `REFRESH_FRACTION` since. The count is asked at most every `COUNT_CHECK_S` seconds (a request
  to OpenSearch or Elasticsearch, not one per chat turn), and at once after the client's own
  writes (`forget`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convsparse.integration.backends.base import Backend, SupportsPassageSample

#: passages read from the index to compute the statistics
SAMPLE_SIZE = 10_000
#: an index with fewer passages keeps the re-ranker's own statistics
MIN_PASSAGES = 1_000
#: the statistics are computed again once the index's count has moved by this fraction
REFRESH_FRACTION = 0.1
#: how often (seconds) the index's count is asked to decide on a refresh
COUNT_CHECK_S = 60.0
#: how `IndexStatistics.source` names the re-ranker folder's own statistics
TRAINING = "the re-ranker's training collection"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexStatistics:
    """What the BM25 features of one index's searches read: ``statistics`` (None: the
    re-ranker's folder's), ``source`` (a line for `SearchResult.rerank_statistics`) and the
    index's ``count`` when they were computed."""

    statistics: Any
    source: str
    count: int


class CollectionStatistics:
    """Per-(re-ranker, index) statistics, computed on first use and refreshed as the index
    grows or shrinks (one per `ConversationalSearch`)."""

    def __init__(self, *, sample_size: int | None = None, min_passages: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """None: the module's `SAMPLE_SIZE` and `MIN_PASSAGES` when used."""
        self._sample_size = sample_size
        self._min_passages = min_passages
        self._clock = clock
        #: index -> (the re-ranker they are for, when the count was last asked, statistics)
        self._held: dict[str, tuple[Any, float, IndexStatistics]] = {}

    def forget(self, index: str) -> None:
        """Drop what is held for `index` (after a write: the next search asks its count)."""
        self._held.pop(index, None)

    def for_index(self, backend: Backend, index: str, reranker: Any) -> IndexStatistics:
        """The statistics `reranker`'s BM25 features should read for `index`."""
        if getattr(reranker, "statistics", None) is None:
            # a model trained without BM25 features must not be handed some
            return IndexStatistics(None, "none: the re-ranker reads no BM25 features", 0)
        now = self._clock()
        held, asked = None, float("-inf")
        entry = self._held.get(index)
        if entry is not None and entry[0] is reranker:
            _, asked, held = entry
        if held is not None and now - asked < COUNT_CHECK_S:
            return held
        try:
            count = backend.count(index)
        except Exception as e:  # the search itself got through: keep the folder's
            return IndexStatistics(None, f"{TRAINING}: the index's size is unknown "
                                         f"({type(e).__name__})", 0)
        if held is None or abs(count - held.count) > REFRESH_FRACTION * max(held.count, 1):
            held = self._compute(backend, index, reranker, count)
        self._held[index] = (reranker, now, held)
        return held

    def _compute(self, backend: Backend, index: str, reranker: Any, count: int) -> IndexStatistics:
        from convsparse.reranking.features import TermStatistics

        training = TRAINING
        if not isinstance(backend, SupportsPassageSample):
            return IndexStatistics(None, f"{training}: {type(backend).__name__} cannot sample "
                                         "passages", count)
        least = MIN_PASSAGES if self._min_passages is None else self._min_passages
        if count < least:
            return IndexStatistics(None, f"{training}: the index holds {count:,} passages "
                                         f"(under {least:,})", count)
        try:
            texts = backend.passage_sample(
                index, SAMPLE_SIZE if self._sample_size is None else self._sample_size)
            stats = TermStatistics.from_passages(reranker.tokenizer, texts)
        except Exception as e:  # the chat's search goes on with the folder's statistics
            logger.warning("index %s: its passages could not be sampled for the re-ranker's "
                           "statistics (%s: %s); the re-ranker's own are used", index,
                           type(e).__name__, e)
            return IndexStatistics(None, f"{training}: sampling the index failed "
                                         f"({type(e).__name__})", count)
        return IndexStatistics(stats, f"index: {len(texts):,} of {count:,} passages", count)


__all__ = ["COUNT_CHECK_S", "MIN_PASSAGES", "REFRESH_FRACTION", "SAMPLE_SIZE", "CollectionStatistics",
           "IndexStatistics"]
