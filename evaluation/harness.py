"""The evaluation harness: run systems over a collection's conversation turns and report.

`compare()` builds the comparison table on one collection: BM25 (`convsparse.evaluation.bm25`)
on the raw conversation (all turns concatenated) and on the human rewrite, and the student on the
raw conversation and on the rewrite (the teacher's view). `evaluate_client()` runs every
conversation turn through a `ConversationalSearch` client against an existing index, which is
what `convsparse evaluate --index` does. Metrics come from `metrics` (ranx), FLOPS from `flops`,
the tables from `report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from convsparse.benchmark_collections import Collection, ConversationTask
from convsparse.evaluation.bm25 import BM25
from convsparse.evaluation.flops import TermStats, flops
from convsparse.evaluation.metrics import DEFAULT_METRICS, Run, compute_metrics, latency_summary
from convsparse.evaluation.report import EvaluationReport, SystemResult
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap
from convsparse.timing import elapsed_ms

View = Literal["raw", "rewrite"]


# ---------------------------------------------------------------------------------------------
# Query views


def query_for(task: ConversationTask, view: View) -> Any:
    """What a system sees for `task`: the whole conversation (raw) or the standalone rewrite."""
    if view == "raw":
        return list(task.turns)
    if task.rewrite is None:
        raise ValueError(f"task {task.id!r} has no rewrite")
    return task.rewrite


def tasks_for(collection: Collection, view: View, *, judged_only: bool = True) -> list[ConversationTask]:
    tasks = collection.judged_conversations if judged_only else list(collection.conversations)
    return [t for t in tasks if view == "raw" or t.rewrite]


# ---------------------------------------------------------------------------------------------
# BM25 rows


class BM25Baseline(BM25):
    """`BM25` over the collection's corpus (`Passage.encoded_text`), evaluated per view."""

    def __init__(self, collection: Collection, *, stopwords: str | None = "en"):
        super().__init__({i: p.encoded_text for i, p in collection.corpus.items()},
                         stopwords=stopwords)
        self.doc_terms = self.doc_stats.average_terms if self.ids else 0.0

    def evaluate(self, collection: Collection, view: View, *, k: int = 100,
                 metrics: Sequence[str] = DEFAULT_METRICS, tasks: Sequence[ConversationTask] | None = None,
                 name: str = "BM25") -> SystemResult:
        tasks = list(tasks) if tasks is not None else tasks_for(collection, view)
        run: Run = {}
        lat: list[float] = []
        qterms: list[set[str]] = []
        for t in tasks:
            text = t.concatenated() if view == "raw" else t.rewrite or ""
            t0 = time.perf_counter()
            run[t.id] = self.search(text, k)
            lat.append(elapsed_ms(t0))
            qterms.append(self.query_terms(text))
        return SystemResult(
            system=name, view=view, n_queries=len(tasks),
            metrics=compute_metrics(collection.qrels, run, metrics, query_ids=run),
            latency_ms=latency_summary(lat),
            flops=flops(TermStats.from_term_maps(qterms), self.doc_stats),
            avg_query_terms=float(np.mean([len(q) for q in qterms])) if qterms else None,
            avg_doc_terms=self.doc_terms, run=run,
            extra={"latency_includes": "tokenize + bm25s retrieve, one query at a time"},
        )


# ---------------------------------------------------------------------------------------------
# Learned sparse (encoder + backend, or the client)


def encode_queries(encoder, tasks: Sequence[ConversationTask], view: View, *,
                   batch_size: int = 32) -> tuple[list[TermMap], float]:
    """Query term maps in task order (batched) and the encoding time per query in ms."""
    t0 = time.perf_counter()
    if not tasks:
        return [], 0.0
    ids = [t.id for t in tasks]
    batch = encoder.encode_conversations([query_for(t, view) for t in tasks], ids=ids,
                                         batch_size=batch_size)
    per_query = elapsed_ms(t0) / len(tasks)
    return list(batch.term_maps), per_query


def search_term_maps(
    backend, index: str, queries: Sequence[TermMap], ids: Sequence[str], *, k: int = 100,
    fingerprint: str | None = None, pruning: PruningPolicy | None = None,
) -> tuple[Run, list[float], list[TermMap]]:
    """Search each (pruned) query; returns the run, search latencies (ms) and the pruned maps."""
    run: Run = {}
    lat: list[float] = []
    pruned = []
    for qid, tm in zip(ids, queries):
        q = pruning.apply(tm) if pruning is not None else tm
        pruned.append(q)
        t0 = time.perf_counter()
        hits = backend.search(index, q, k=k, fingerprint=fingerprint) if len(q) else []
        lat.append(elapsed_ms(t0))
        run[qid] = {h.id: float(h.score) for h in hits}
    return run, lat, pruned


def evaluate_term_maps(
    collection: Collection, view: View, *, encoder, backend, index: str, k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS, pruning: PruningPolicy | None = None,
    doc_stats: TermStats | None = None, tasks: Sequence[ConversationTask] | None = None,
    name: str = "student", batch_size: int = 32,
    query_maps: Mapping[str, TermMap] | None = None,
) -> SystemResult:
    """Batched query encoding, then one backend search per turn (search latency per query).

    `query_maps` (task id -> unpruned term map for this view) skips the encoding."""
    tasks = list(tasks) if tasks is not None else tasks_for(collection, view)
    if query_maps is not None:
        maps, encode_ms = [query_maps[t.id] for t in tasks], float("nan")
    else:
        maps, encode_ms = encode_queries(encoder, tasks, view, batch_size=batch_size)
    ids = [t.id for t in tasks]
    run, lat, pruned = search_term_maps(backend, index, maps, ids, k=k,
                                        fingerprint=encoder.fingerprint,
                                        pruning=pruning)
    qstats = TermStats.from_term_maps(pruned)
    return SystemResult(
        system=name, view=view, n_queries=len(tasks),
        metrics=compute_metrics(collection.qrels, run, metrics, query_ids=ids),
        latency_ms=latency_summary(lat),
        flops=flops(qstats, doc_stats) if doc_stats is not None else None,
        avg_query_terms=qstats.average_terms if tasks else None,
        avg_doc_terms=doc_stats.average_terms if doc_stats is not None else None,
        extra={"encode_ms_per_query": encode_ms, "pruning": (pruning or PruningPolicy()).describe(),
               "latency_includes": "backend search only (queries encoded in batches)"},
        run=run,
    )


def evaluate_client(
    client, collection: Collection, view: View = "raw", *, k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS, doc_stats: TermStats | None = None,
    tasks: Sequence[ConversationTask] | None = None, name: str = "student",
    progress: Callable[[int, int], None] | None = None,
) -> SystemResult:
    """Every turn through ``client.search(conversation, k)`` (a `ConversationalSearch`): the
    latency is the client's end-to-end ``total_ms`` (format + encode + search)."""
    tasks = list(tasks) if tasks is not None else tasks_for(collection, view)
    run: Run = {}
    total: list[float] = []
    parts: dict[str, list[float]] = {}
    qmaps: list[Any] = []
    qterms: list[int] = []
    for i, t in enumerate(tasks):
        t0 = time.perf_counter()
        res = client.search(query_for(t, view), k=k)
        wall = elapsed_ms(t0)
        timings = dict(res.timings)
        total.append(float(timings.get("total_ms", wall)))
        for key, v in timings.items():
            parts.setdefault(key, []).append(float(v))
        run[t.id] = {h.id: float(h.score) for h in res.hits}
        qterms.append(res.query_terms_after)
        qmaps.append(res.query)
        if progress:
            progress(i + 1, len(tasks))
    flops_value = None
    if doc_stats is not None:
        flops_value = flops(TermStats.from_term_maps(qmaps), doc_stats)
    return SystemResult(
        system=name, view=view, n_queries=len(tasks),
        metrics=compute_metrics(collection.qrels, run, metrics, query_ids=run),
        latency_ms=latency_summary(total), flops=flops_value,
        avg_query_terms=float(np.mean(qterms)) if qterms else None,
        avg_doc_terms=doc_stats.average_terms if doc_stats is not None else None,
        extra={"latency_includes": "client total_ms (format + encode + search)",
               **{f"{key}_mean": float(np.mean(v)) for key, v in parts.items()}},
        run=run,
    )


# ---------------------------------------------------------------------------------------------
# Indexing a collection (once) for the student rows


class _EncodedOnce:
    """An `Encoder` whose document term maps were computed already (one length-sorted pass over
    the whole corpus, or the cache), so indexing goes through the one ingestion driver without
    encoding again."""

    def __init__(self, encoder, maps: Mapping[str, TermMap]):
        self._encoder, self._maps = encoder, maps
        self.fingerprint = encoder.fingerprint
        self.vocabulary_name = encoder.vocabulary_name

    def encode_documents(self, texts, *, ids=None, batch_size: int = 32, progress: bool = False):
        from convsparse.termmap import TermMapBatch

        return TermMapBatch([self._maps[i] for i in ids], self.fingerprint, list(ids))

    def encode_conversation(self, conversation):
        return self._encoder.encode_conversation(conversation)

    def encode_conversations(self, conversations, *, ids=None, batch_size: int = 32):
        return self._encoder.encode_conversations(conversations, ids=ids, batch_size=batch_size)


def index_corpus(
    collection: Collection, *, encoder, backend, index: str, batch_size: int = 32,
    recreate: bool = False, progress: bool = False, cache: str | Path | None = None,
    vectors: bool | None = None,
) -> TermStats:
    """Encode every passage once, write it to `backend` under `index` through the ingestion
    driver (`convsparse.integration.ingestion.ingest`, as `convsparse collection index` does),
    return its term stats.

    `cache`: a JSONL file of document term maps for this encoder; read when it exists and holds
    exactly these passages, written otherwise (benchmark reruns skip the encoding).
    `vectors`: whether a new index stores the re-ranker's passage vectors (`ensure_index`).
    """
    from convsparse.errors import BackendError
    from convsparse.integration.ingest_options import Batching, IngestOptions
    from convsparse.integration.ingestion import ingest

    if recreate:
        backend.delete_index(index, missing_ok=True)
    passages = list(collection.corpus.values())
    maps = _read_doc_cache(cache, encoder.fingerprint, [p.id for p in passages])
    if maps is None:
        batch = encoder.encode_documents([p.encoded_text for p in passages],
                                         ids=[p.id for p in passages], batch_size=batch_size,
                                         progress=progress)
        maps = list(batch.term_maps)
        if cache is not None:
            _write_doc_cache(cache, encoder.fingerprint, [p.id for p in passages], maps)
    report = ingest(collection.source_records(), backend=backend, index=index,
                    encoder=_EncodedOnce(encoder, {p.id: m for p, m in zip(passages, maps)}),
                    options=IngestOptions(batching=Batching(batch_size=max(batch_size, 256))),
                    vectors=vectors)
    if report.failed:
        raise BackendError(f"{report.failed} passages failed to index, first: "
                           f"{report.failures[0]}")
    return TermStats.from_term_maps(maps)


def _read_doc_cache(cache, fingerprint: str, ids: list[str]) -> list[TermMap] | None:
    if cache is None or not Path(cache).is_file():
        return None
    with Path(cache).open(encoding="utf-8") as f:
        head = json.loads(f.readline())
        if head.get("fingerprint") != fingerprint:
            return None
        rows = [json.loads(line) for line in f]
    if [r["id"] for r in rows] != ids:
        return None
    return [TermMap(r["terms"]) for r in rows]


def _write_doc_cache(cache, fingerprint: str, ids: list[str], maps: list[TermMap]) -> None:
    path = Path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        for i, m in zip(ids, maps):
            f.write(json.dumps({"id": i, "terms": m.to_dict()}) + "\n")
    tmp.replace(path)


def temporary_backend():
    """An `EmbeddedBackend` in a fresh temporary folder, and the folder (call `.cleanup()`)."""
    import tempfile

    from convsparse.integration.backends.embedded import EmbeddedBackend

    tmp = tempfile.TemporaryDirectory(prefix="convsparse-eval-")
    return EmbeddedBackend(Path(tmp.name)), tmp


def compare(
    collection: Collection, *, encoder=None, backend=None, index: str = "eval-corpus",
    k: int = 100, metrics: Sequence[str] = DEFAULT_METRICS, pruning: PruningPolicy | None = None,
    student_name: str = "student", all_turns: bool = True, doc_stats: TermStats | None = None,
    reindex: bool = True, progress: bool = False,
) -> EvaluationReport:
    """The comparison table: BM25 raw / BM25 rewrite / student raw / student rewrite.

    All four rows use the judged turns that have a rewrite, so they are comparable. With
    ``all_turns`` (and when some turns lack a rewrite) BM25 raw and student raw are also
    reported on every judged turn. Without an encoder only the BM25 rows are produced. Without a
    backend the student rows use a temporary `EmbeddedBackend`.
    """
    notes: list[str] = []
    rewritten = tasks_for(collection, "rewrite")
    everything = tasks_for(collection, "raw")
    shared = rewritten if rewritten else everything
    if not rewritten:
        notes.append("no turn has a rewrite: only the raw-conversation rows are reported")
    bm25 = BM25Baseline(collection)
    results = [bm25.evaluate(collection, "raw", k=k, metrics=metrics, tasks=shared)]
    if rewritten:
        results.append(bm25.evaluate(collection, "rewrite", k=k, metrics=metrics, tasks=rewritten))
    tmp = None
    report_maps: dict[str, TermMap] = {}
    if encoder is not None:
        if backend is None:
            backend, tmp = temporary_backend()
        try:
            if reindex or doc_stats is None:
                doc_stats = index_corpus(collection, encoder=encoder, backend=backend, index=index,
                                         recreate=True, progress=progress)
            kw = {"encoder": encoder, "backend": backend, "index": index, "k": k,
                  "metrics": metrics, "pruning": pruning, "doc_stats": doc_stats,
                  "name": student_name}
            extra_rows = all_turns and rewritten and len(everything) > len(rewritten)
            # encode each view once (batched); the rows reuse the maps
            raw_tasks = everything if extra_rows else shared
            raw_maps, raw_ms = encode_queries(encoder, raw_tasks, "raw")
            raw_maps = dict(zip([t.id for t in raw_tasks], raw_maps))
            results.append(evaluate_term_maps(collection, "raw", tasks=shared,
                                              query_maps=raw_maps, **kw))
            results[-1].extra["encode_ms_per_query"] = raw_ms
            if rewritten:
                results.append(evaluate_term_maps(collection, "rewrite", tasks=rewritten, **kw))
            if extra_rows:
                results.append(bm25.evaluate(collection, "raw", k=k, metrics=metrics,
                                             tasks=everything, name="BM25 (all turns)"))
                results.append(evaluate_term_maps(collection, "raw", tasks=everything,
                                                  query_maps=raw_maps,
                                                  **{**kw, "name": f"{student_name} (all turns)"}))
                results[-1].extra["encode_ms_per_query"] = raw_ms
            report_maps = raw_maps
        finally:
            if tmp is not None:
                tmp.cleanup()
    else:
        notes.append("no student encoder given: student rows omitted")
        if all_turns and rewritten and len(everything) > len(rewritten):
            results.append(bm25.evaluate(collection, "raw", k=k, metrics=metrics,
                                         tasks=everything, name="BM25 (all turns)"))
    notes.append("raw = every turn of the conversation (BM25: concatenated; student: the "
                 "conversation formatter's input); rewrite = the human standalone rewrite")
    notes.append("FLOPS = sum_j p_q(j) p_d(j), activation probabilities over the evaluated queries "
                 "and the corpus (SPLADE); for BM25 the term sets are the analysed tokens")
    notes.append("student latency is the backend search per query (queries encoded in batches, "
                 "see encode_ms_per_query in the JSON); BM25 latency is tokenize + retrieve")
    return EvaluationReport(
        collection=collection.name, n_passages=len(collection.corpus), results=results,
        metrics=tuple(metrics), notes=notes, query_maps={"raw": report_maps} if report_maps else {},
        config={"k": k, "pruning": (pruning or PruningPolicy()).describe(),
                "student": type(encoder).__name__ if encoder is not None else None,
                "fingerprint": encoder.fingerprint if encoder is not None else None},
    )


__all__ = [
    "BM25Baseline",
    "View",
    "compare",
    "encode_queries",
    "evaluate_client",
    "evaluate_term_maps",
    "index_corpus",
    "query_for",
    "search_term_maps",
    "tasks_for",
    "temporary_backend",
]
