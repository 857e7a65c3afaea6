"""Search over an `IndexCache`: exact top-k, rescoring, ANN candidates merged with fresh rows.

Search is exact: a CSC copy of the document matrix is the inverted index (column t = term
t's posting list); scipy slices the query terms' columns and multiplies them by the query
weights in C++ (``X[:, q_terms] @ q_weights``), dead rows (overwritten or deleted) are masked
and the top k taken with ``argpartition``. Ties are broken by insertion order, like Lucene's doc ids.
`benchmarks/search_latency.py` compares this with the other candidates.

Approximate search (`ann_top`) takes the candidates of a SEISMIC build
(`convsparse.integration.backends.embedded.ann`), drops those deleted since, merges an exact
search of the rows written since the build, and scores every candidate exactly.

``quantize=True`` stores document weights the way Lucene's ``FeatureField`` does (the float's
top 9 significant bits, ``bits >>> 15``, truncated), so scores equal a real OpenSearch server's:
``boost x quantized(value)``; the query weight (the boost) is not quantized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import scipy.sparse as sp

from convsparse.hits import Hit
from convsparse.integration.backends.embedded.ann import AnnQuery, LoadedAnn
from convsparse.integration.backends.embedded.cache import IndexCache
from convsparse.termmap import quantize_feature_values

__all__ = ["ann_top", "dense", "document_frequencies", "exact_top", "hits", "live_document_counts",
           "prepare", "query_vector", "rescore", "top"]


def prepare(st: IndexCache, quantize: bool) -> None:
    """Build the search structures of `st` (the docs matrix, its inverted view, the alive mask)
    where a write dropped them, or where `quantize` changed."""
    if st.docs is None or st.inverted is None or st.quantized != quantize:
        docs = st.matrix()
        if quantize:
            docs = sp.csr_matrix(
                (quantize_feature_values(docs.data), docs.indices, docs.indptr), shape=docs.shape
            )
        st.docs = docs
        inv = docs.tocsc()  # column t = posting list of term t
        if inv.nnz < 2**31 - 1 and inv.indices.dtype != np.int32:  # halves memory traffic
            inv = sp.csc_matrix((inv.data, inv.indices.astype(np.int32), inv.indptr.astype(np.int32)),
                                shape=inv.shape)
        inv.sort_indices()
        # fresh, compact copies of the posting arrays: the kernel streams through them, and
        # arrays left where the conversions put them measured up to ~5-10% slower
        inv = sp.csc_matrix((inv.data.copy(), inv.indices.copy(), inv.indptr.copy()), shape=inv.shape)
        inv.has_sorted_indices = True
        st.inverted = inv
        st.quantized = quantize
        st.live_counts = None
    if st.alive_mask is None:
        st.alive_mask = np.asarray(st.alive, dtype=bool)


def query_vector(st: IndexCache, query: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Column ids and weights (float32, like Lucene's boosts) of the query's known terms."""
    get = st.term_ids.get
    cols = np.fromiter((get(t, -1) for t in query), dtype=np.int64, count=len(query))
    vals = np.fromiter(query.values(), dtype=np.float32, count=len(query))
    keep = (cols >= 0) & (cols < st.prepared()[1].shape[1])
    if not keep.all():
        cols, vals = cols[keep], vals[keep]
    return cols, vals


def _scores(st: IndexCache, query: Mapping[str, float]) -> np.ndarray:
    cols, vals = query_vector(st, query)
    inv = st.prepared()[1]
    if len(cols) == 0:
        return np.zeros(inv.shape[0])
    # slice the query terms' posting lists (CSC columns) and multiply-add them in C++
    return np.asarray(inv[:, cols] @ vals).ravel()


def dense(st: IndexCache, query: Mapping[str, float]) -> np.ndarray:
    """The query as a dense vector over the index's terms (float64)."""
    cols, vals = query_vector(st, query)
    out = np.zeros(st.prepared()[0].shape[1], dtype=np.float64)
    out[cols] = vals
    return out


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best matching docs (score > 0), by score desc then row asc (Lucene's
    doc-id order for ties)."""
    n = len(scores)
    if n > k:
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        # every row tied with the k-th is kept, so the tie-break by row is exact
        candidates = np.flatnonzero(scores >= max(kth, np.finfo(np.float32).tiny))
    else:
        candidates = np.flatnonzero(scores > 0)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:k]


def exact_top(st: IndexCache, query: Mapping[str, float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """The `window` best live rows and their scores (float32), exactly."""
    scores = _scores(st, query)
    if st.n_alive < len(st.alive):  # some rows were overwritten or deleted
        scores[~st.prepared()[2]] = 0.0
    rows = top(scores, window)
    return rows, scores[rows].astype(np.float32)


def ann_top(st: IndexCache, built: LoadedAnn, query: Mapping[str, float], window: int,
            q: AnnQuery) -> tuple[np.ndarray, np.ndarray]:
    """The `window` best rows: the build's candidates that are still alive, plus the rows
    written since the build, all scored exactly."""
    cols, vals = query_vector(st, query)
    docs, _, alive_mask = st.prepared()
    n_built = built.info.n_rows
    dead = len(st.ids) - st.n_alive  # an upper bound on the build's rows dead since
    rows = built.candidates(cols, vals, window + min(dead, max(window, 100)), q)
    if dead:
        rows = rows[alive_mask[rows]]
    query_dense = dense(st, query)
    scores = np.asarray(docs[rows] @ query_dense).ravel() if len(rows) else np.zeros(0)
    if n_built < len(st.ids):  # written since the build: an exact search of those rows only
        # slicing a CSR copies the rows: once per docs matrix, not once per search
        if st.fresh is None or st.fresh[0] is not docs or st.fresh[1] != n_built:
            st.fresh = (docs, n_built, docs[n_built:])
        fresh = np.asarray(st.fresh[2] @ query_dense).ravel()
        fresh[~alive_mask[n_built:]] = 0.0
        best = top(fresh, window)  # only the fresh rows that can make the window
        rows = np.concatenate([rows, best + n_built])
        scores = np.concatenate([scores, fresh[best]])
    keep = scores > 0
    rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:window]  # score desc, then row asc (as exact search)
    return rows[order], scores[order].astype(np.float32)


def rescore(st: IndexCache, rows: np.ndarray, final: np.ndarray, query: Mapping[str, float],
            window: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` (scored `final`) with the first `window` re-ranked by their dot product with
    `query` (two-phase search); ties by row."""
    n_re = min(window, len(rows))
    head = rows[:n_re]
    new = np.asarray(st.prepared()[0][head] @ dense(st, query)).ravel()
    order = np.lexsort((head, -new))
    return (np.concatenate([head[order], rows[n_re:]]),
            np.concatenate([new[order], final[n_re:]]).astype(np.float32))


def hits(st: IndexCache, rows: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
    """The first `k` of `rows` as hits, with their stored fields."""
    return [Hit(st.ids[r], float(s), st.fields[r]) for r, s in zip(rows[:k].tolist(), scores[:k].tolist())]


def live_document_counts(st: IndexCache) -> np.ndarray:
    """Live documents per term id (`st` prepared), counted in one pass over the posting lists
    and kept until a write: the client asks for a query's document frequencies on every search
    (`SearchResult.flops`), and one posting-list sum per query term cost 5 ms of a chat turn."""
    if st.live_counts is None:
        _, inv, alive_mask = st.prepared()
        running = np.concatenate([[0], np.cumsum(alive_mask[inv.indices], dtype=np.int64)])
        st.live_counts = running[inv.indptr[1:]] - running[inv.indptr[:-1]]
    return st.live_counts


def document_frequencies(st: IndexCache, tokens: Iterable[str]) -> dict[str, float]:
    """Fraction of live documents containing each token (`st` prepared, with live rows)."""
    counts = live_document_counts(st)
    out: dict[str, float] = {}
    for t in tokens:
        tid = st.term_ids.get(t)
        out[t] = 0.0 if tid is None or tid >= len(counts) else float(counts[tid]) / st.n_alive
    return out
