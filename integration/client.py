"""`ConversationalSearch`: the chat app's entry point (conversation in, hits with timings out).

Data flows one way: conversation -> formatter -> encoder -> term map -> `PruningPolicy` ->
backend -> hits. Two-phase search: with `rescore_window > 0`, the backend retrieves with the
pruned query and re-ranks its top `rescore_window` hits with the full (unpruned) query.

>>> from convsparse import ConversationalSearch, PruningPolicy          # doctest: +SKIP
>>> search = ConversationalSearch("docs", pruning=PruningPolicy(top_k=64))  # doctest: +SKIP
>>> result = search.search([{"role": "user", "text": "Tell me about Lisbon"}], k=5)  # doctest: +SKIP
>>> result.hits[0].id, result.timings["total_ms"]                          # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from convsparse.conversation import parse_conversation
from convsparse.documents import DEFAULT_MAX_TEXT_CHARS
from convsparse.encoders.protocol import Encoder, ReportsEncoderPath
from convsparse.errors import IndexNotFoundError
from convsparse.integration.backends.base import (
    Backend,
    Hit,
    SupportsDocumentFrequencies,
    SupportsPassageVectors,
    check_k,
)
from convsparse.integration.collection_statistics import CollectionStatistics
from convsparse.integration.ingest_report import IndexReport
from convsparse.integration.vectors import VectorSpec, VectorSpecMismatchError, spec_of
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap
from convsparse.timing import elapsed_ms

if TYPE_CHECKING:  # annotations only: the re-ranker's module loads its runtime
    from convsparse.reranking import Reranker
    from convsparse.settings import Settings


class _ShippedWhereVectors:
    """`ConversationalSearch(reranker=...)`'s default: the shipped re-ranker, used where the
    index holds passage vectors (an explicit ``"default"`` is used on any index)."""

    def __repr__(self) -> str:
        return "DEFAULT_RERANKER"


DEFAULT_RERANKER: Any = _ShippedWhereVectors()
_SHIPPED: dict[tuple[str, str], Any] = {}


def shipped_reranker(runtime: Literal["torch", "onnx"],
                     query_precision: Literal["int8", "fp32"] = "int8") -> Any:
    """The shipped re-ranker (`load_reranker("default")`), loaded once per process, runtime and
    query precision; a string saying why when it cannot be loaded (the search keeps its first
    stage)."""
    loaded = _SHIPPED.get((runtime, query_precision))
    if loaded is None:
        try:
            from convsparse.reranking import load_reranker

            loaded = load_reranker("default", runtime=runtime, query_precision=query_precision)
        except Exception as e:  # noqa: BLE001 - reported in result.rerank, never raised
            loaded = f"the shipped re-ranker cannot be loaded ({type(e).__name__}: {e})"
        _SHIPPED[runtime, query_precision] = loaded
    return loaded


@dataclass(frozen=True)
class SearchResult:
    """Hits of one search, with what it cost.

    - ``timings``: ``format_ms`` (validate + build the student input), ``encode_ms``,
      ``prune_ms``, ``search_ms`` (backend, incl. rescoring), ``total_ms``.
    - ``query_terms_before`` / ``query_terms_after``: terms of the query before/after pruning.
    - ``flops``: expected multiply-adds per document for the query actually sent, i.e.
      sum over its terms of the fraction of documents containing the term (the FLOPS
      measure of Paria et al. 2020 for one query). NaN when the backend cannot report
      document frequencies (OpenSearch).
    - ``encoder_path``: "local", or what a remote encoder reports (``"remote"``/``"local"``).
    - ``rerank``: ``"off"`` (no re-ranker, or the default one and an index without passage
      vectors), ``"ok"`` (the top ``rerank_depth`` hits were re-ranked; ``timings["rerank_ms"]``
      is that stage), or ``"fallback: <reason>"`` (the re-ranker failed, ran out of time, could
      not be loaded, or reads other vectors than the index holds: the hits are in first-stage
      order).
    - ``rerank_statistics``: where the re-ranker's BM25 features read their document
      frequencies: ``"index: N of M passages"`` (a sample of the searched index,
      `convsparse.integration.collection_statistics`), or ``"the re-ranker's training
      collection: <why>"`` (an index under 1,000 passages, a backend that cannot sample);
      None when nothing was re-ranked.
    """

    hits: list[Hit]
    timings: dict[str, float]
    query_terms_before: int
    query_terms_after: int
    flops: float
    encoder_path: str = "local"
    query: TermMap | None = field(default=None, repr=False)
    rerank: str = "off"
    rerank_statistics: str | None = None

    @property
    def ids(self) -> list[str]:
        return [h.id for h in self.hits]


class ConversationalSearch:
    """Search an index with conversations.

    ``encoder``: an `Encoder` (default: ``convsparse.compose.load_encoder(settings)``, loaded on
    first use, so ``CONVSPARSE_MODEL`` / ``CONVSPARSE_RUNTIME`` / ``CONVSPARSE_DEVICE`` apply as
    they do to every command).
    ``backend``: a `Backend` (default: ``convsparse.compose.open_backend(settings)``, i.e. the
    embedded backend under ``Settings().data_dir`` unless ``CONVSPARSE_BACKEND=opensearch``).
    ``settings``: the `Settings` the defaults are built from (default: the environment).
    ``pruning``: the default query `PruningPolicy` (``search(..., pruning=)`` overrides it).
    ``rescore_window``: rescore that many first-phase hits with the unpruned query (0 = off).
    ``reranker``: the second stage, applied to the first ``rerank_depth`` hits. The default,
    ``"default"``, is the shipped re-ranker (`load_reranker("default")`, loaded on first use in
    the settings' runtime), used whenever the index holds passage vectors (new indices do:
    `convsparse.integration.vectors`) and off otherwise. A `convsparse.reranking.Reranker` or
    the path of a re-ranker folder is always used (passages without stored vectors are embedded
    on sight); None turns the stage off. A failure, vectors of another bi-encoder in the index,
    or a run longer than ``rerank_timeout_ms`` keeps the first-stage order and says so in
    ``result.rerank``.
    """

    def __init__(
        self, index: str, *, encoder: Encoder | None = None, backend: Backend | None = None,
        pruning: PruningPolicy | None = None, rescore_window: int = 0,
        settings: Settings | None = None,
        reranker: Reranker | str | Path | None = DEFAULT_RERANKER,
        rerank_depth: int = 20, rerank_timeout_ms: float | None = None,
    ) -> None:
        if rescore_window < 0:
            raise ValueError("rescore_window must be >= 0")
        if rerank_depth < 1:
            raise ValueError("rerank_depth must be >= 1")
        #: the shipped re-ranker, used where the index holds vectors (loaded on first use)
        self.default_reranker = reranker is DEFAULT_RERANKER
        if self.default_reranker:
            reranker = None
        elif isinstance(reranker, (str, Path)):
            from convsparse.reranking import load_reranker
            from convsparse.settings import get_settings

            chosen = settings or get_settings()
            reranker = load_reranker(reranker, runtime=chosen.runtime,
                                     query_precision=chosen.query_precision)
        self.reranker = reranker
        self._reranker_spec: tuple[Any, Any] | None = None  # (re-ranker, its VectorSpec)
        self._statistics = CollectionStatistics()
        self.rerank_depth = rerank_depth
        self.rerank_timeout_ms = rerank_timeout_ms
        self._rerank_pool: Any = None
        self.index = index
        self._encoder = encoder
        self._settings = settings
        if backend is None:
            from convsparse.compose import open_backend  # the composition root builds defaults

            backend = open_backend(settings)
        self.backend = backend
        self.pruning = pruning
        self.rescore_window = rescore_window

    def __repr__(self) -> str:
        p = self.pruning.describe() if self.pruning else "none"
        return (f"ConversationalSearch({self.index!r}, backend={self.backend!r}, pruning={p}, "
                f"rescore_window={self.rescore_window})")

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from convsparse.compose import load_encoder

            self._encoder = load_encoder(self._settings)
        return self._encoder

    # ------------------------------------------------------------------ search
    def encode(self, conversation: Any) -> tuple[TermMap, float, float]:
        """(full query term map, format_ms, encode_ms)."""
        enc = self.encoder
        t = time.perf_counter()
        turns = parse_conversation(conversation)
        format_ms = elapsed_ms(t)
        t = time.perf_counter()
        tm = enc.encode_conversation(turns)
        return tm, format_ms, elapsed_ms(t)

    def flops(self, query: Mapping[str, float]) -> float:
        """Expected multiply-adds per document: sum of the query terms' document frequencies
        (fraction of documents containing each term). NaN if the backend can't tell."""
        if not isinstance(self.backend, SupportsDocumentFrequencies):
            return float("nan")
        return float(sum(self.backend.document_frequencies(self.index, list(query)).values()))

    def search(
        self, conversation: Any, k: int = 10, *, pruning: PruningPolicy | None = None
    ) -> SearchResult:
        """Top-k hits for `conversation` (a list of {role, text} turns, a `Turn` list, a dict
        with "turns", or a plain string = one user turn). Raises `InvalidConversationError`
        for malformed input, `EmptyQueryError` when the pruning policy removes every query
        term, `IndexNotFoundError`, `FingerprintMismatchError`."""
        check_k(k)  # 1..MAX_K, a UsageError (a ValueError) otherwise
        start = time.perf_counter()
        full, format_ms, encode_ms = self.encode(conversation)
        t = time.perf_counter()
        policy = pruning if pruning is not None else self.pruning
        query = policy.apply(full) if policy is not None else full
        prune_ms = elapsed_ms(t)
        t = time.perf_counter()
        if len(query) == 0 and len(full) > 0:
            from convsparse.errors import EmptyQueryError

            raise EmptyQueryError(len(full), policy.describe() if policy is not None else "none")
        spec = self._index_vectors()
        reranker, rerank = self._second_stage(spec)
        if len(query) == 0:
            hits: list[Hit] = []
            self.backend.describe_index(self.index)  # still report an unknown index
        else:
            two_phase = self.rescore_window > 0 and len(query) < len(full)
            depth = max(k, self.rerank_depth) if rerank == "ok" else k
            with_vectors = ({"vectors": True} if rerank == "ok" and spec is not None
                            and getattr(self.backend, "search_returns_vectors", False) else {})
            hits = self.backend.search(
                self.index, query, depth, fingerprint=self.encoder.fingerprint,
                rescore=full if two_phase else None,
                rescore_window=self.rescore_window if two_phase else 0, **with_vectors,
            )
        search_ms = elapsed_ms(t)
        timings = {"format_ms": format_ms, "encode_ms": encode_ms, "prune_ms": prune_ms,
                   "search_ms": search_ms}
        statistics = None
        if rerank == "ok" and not hits:
            rerank = "off"
        elif rerank == "ok":
            t = time.perf_counter()
            hits, rerank, statistics = self._rerank(reranker, spec, conversation, full, hits)
            timings["rerank_ms"] = elapsed_ms(t)
        hits = hits[:k]
        flops = self.flops(query)
        path = self.encoder.last_path if isinstance(self.encoder, ReportsEncoderPath) else None
        timings["total_ms"] = elapsed_ms(start)
        return SearchResult(
            hits=hits, timings=timings, query_terms_before=len(full),
            query_terms_after=len(query), flops=flops,
            encoder_path=path or "local", query=query, rerank=rerank,
            rerank_statistics=statistics,
        )

    def _index_vectors(self) -> VectorSpec | None:
        """The passage vectors the index holds (None: none, or a backend that cannot hold
        them)."""
        if not isinstance(self.backend, SupportsPassageVectors):
            return None
        try:
            return self.backend.vector_spec(self.index)
        except IndexNotFoundError:
            return None  # the search itself reports it

    def _second_stage(self, spec: VectorSpec | None) -> tuple[Any, str]:
        """(re-ranker, "ok") when this search re-ranks, else (None, the status it reports)."""
        if self.reranker is not None:
            return self.reranker, "ok"
        if not self.default_reranker or spec is None:
            return None, "off"
        from convsparse.settings import get_settings

        settings = self._settings or get_settings()
        loaded = shipped_reranker(settings.runtime, settings.query_precision)
        if isinstance(loaded, str):
            return None, f"fallback: {loaded}"
        return loaded, "ok"

    def _spec_of(self, reranker: Any) -> VectorSpec | None:
        """The vectors `reranker` reads (None: it reads none), computed once per re-ranker."""
        if self._reranker_spec is None or self._reranker_spec[0] is not reranker:
            semantic = getattr(reranker, "semantic", None)
            self._reranker_spec = (reranker, spec_of(semantic) if semantic is not None else None)
        return self._reranker_spec[1]

    def _stored_vectors(self, semantic: Any, hits: list[Hit]) -> list[str]:
        """Hand the hits' stored vectors to the re-ranker's bi-encoder (those made from the text
        the hit holds now); returns the keys it did not have, to forget after the re-rank."""
        from convsparse.documents import document_text
        from convsparse.integration.vectors import text_key

        found = {h.id: h.vectors for h in hits if h.vectors is not None}
        missing = [h.id for h in hits if h.id not in found]
        if missing and isinstance(self.backend, SupportsPassageVectors):
            found.update(self.backend.passage_vectors(self.index, missing))
        added = []
        for h in hits:
            vecs, text = found.get(h.id), h.fields.get("text")
            if vecs is None or not isinstance(text, str):
                continue
            key = text_key(document_text(h.fields.get("title"), text))
            if vecs.key == key and semantic.remember(key, vecs.rows):
                added.append(key)
        return added

    def _rerank(self, reranker: Any, spec: VectorSpec | None, conversation: Any, query: TermMap,
                hits: list[Hit]) -> tuple[list[Hit], str, str]:
        """(hits, status, statistics): the head re-ranked, or the first-stage order and why,
        and where the BM25 features' statistics came from. The chat app's call never fails
        because of the second stage."""
        import concurrent.futures as cf
        import logging

        head, tail = hits[:self.rerank_depth], hits[self.rerank_depth:]
        turns = parse_conversation(conversation)
        # outside the time limit: computed once per index, not on every turn
        stats = self._statistics.for_index(self.backend, self.index, reranker)
        extra = {"statistics": stats.statistics} if stats.statistics is not None else {}

        def run() -> list[Hit]:
            semantic = getattr(reranker, "semantic", None)
            reordered: list[Hit]
            if spec is None or semantic is None:
                reordered = reranker.rerank(turns, query, head, **extra)
                return reordered
            reads = self._spec_of(reranker)
            if reads != spec:
                raise VectorSpecMismatchError(self.index, spec, reads, writing=False)
            added = self._stored_vectors(semantic, head)
            try:
                reordered = reranker.rerank(turns, query, head, **extra)
                return reordered
            finally:  # the index keeps them; this process need not
                semantic.forget(added)

        try:
            if self.rerank_timeout_ms is None:
                return run() + tail, "ok", stats.source
            if self._rerank_pool is None:
                self._rerank_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="rerank")
            future = self._rerank_pool.submit(run)
            return (future.result(timeout=self.rerank_timeout_ms / 1000.0) + tail, "ok",
                    stats.source)
        except cf.TimeoutError:
            reason = f"timeout after {self.rerank_timeout_ms:g} ms"
        except VectorSpecMismatchError as e:
            reason = str(e)
        except Exception as e:  # any failure of the optional stage: keep the first stage
            reason = f"{type(e).__name__}: {e}"
        logging.getLogger(__name__).warning("re-ranker skipped (%s); first-stage order kept", reason)
        return hits, f"fallback: {reason}", stats.source

    # ------------------------------------------------------------------ indexing
    def ensure_index(self) -> None:
        """Create the index for this encoder if it does not exist (refuse another encoder's)."""
        from convsparse.integration.ingestion import ensure_index

        ensure_index(self.backend, self.index, self.encoder)

    def index_documents(
        self, records: Iterable[Any], *, progress: bool = True, batch_size: int = 32,
        id_field: str = "id", text_field: str = "text", max_text_chars: int | None = None,
        rerank_vectors: bool | None = None,
    ) -> IndexReport:
        """Encode and upsert `records` (`SourceRecord`s or dicts with id/text and other fields
        to store; a ``title`` field is encoded with the text) in this process, with a progress
        bar. One bad record is reported in ``report.failures`` with its reason; the rest are
        indexed. A text over `max_text_chars` (default `DEFAULT_MAX_TEXT_CHARS`, as in
        `convsparse ingest` and the Celery path) is rejected, not truncated. A new index stores
        the re-ranker's passage vectors with the term maps (so searches re-rank by default)
        unless `rerank_vectors` is False (None: ``Settings().rerank_vectors``)."""
        from convsparse.integration.ingest_options import Batching, IngestOptions, SourceOptions
        from convsparse.integration.ingestion import ingest

        limit = DEFAULT_MAX_TEXT_CHARS if max_text_chars is None else int(max_text_chars)
        try:
            total = len(records)  # type: ignore[arg-type]
        except TypeError:
            total = None
        options = IngestOptions(SourceOptions(id_field=id_field, text_field=text_field,
                                              max_text_chars=limit),
                                Batching(batch_size=batch_size))
        try:
            return ingest(records, encoder=self.encoder, backend=self.backend, index=self.index,
                          options=options, progress=progress, total=total,
                          vectors=rerank_vectors)
        finally:  # the re-ranker's statistics follow this client's own writes at once
            self._statistics.forget(self.index)


__all__ = ["DEFAULT_RERANKER", "ConversationalSearch", "IndexReport", "SearchResult",
           "shipped_reranker"]
