"""The embedded backend's in-memory copy of one index: a cache derived from the store.

`IndexCache` holds what the store's ``ops`` say, as arrays: the term dictionary, one row per
upsert (rows are never reordered between compactions; an overwritten or deleted row stays,
marked dead), the rows' term ids and weights (a CSR matrix docs x terms, built lazily from
chunks) and the stored fields. The search structures derived from the matrix
(`convsparse.integration.backends.embedded.search`) are kept on it and dropped whenever a
write changes the rows.

Every call of the backend first checks (one ``stat`` and SQLite's ``PRAGMA data_version``)
whether another connection committed since this object last looked and, if so, `catch_up`
reads only the new operations (by ``seq``), or reloads after a compaction (``generation``).
Workers upsert in one process and a client reads in another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from convsparse.integration.backends.embedded import store as store_mod
from convsparse.integration.backends.embedded.store import IndexCorruptError, IndexStore
from convsparse.termmap import CsrTermMap, TermMap

__all__ = ["IndexCache", "catch_up", "parse_fields", "store_rows"]


@dataclass
class IndexCache:
    """One index as loaded in memory (rows are never reordered between compactions)."""

    meta: dict[str, Any]
    generation: int
    store: IndexStore | None = None  # None: a format-1 index read where it cannot be converted
    terms: list[str] = field(default_factory=list)
    term_ids: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    base: sp.csr_matrix | None = None  # first `base.shape[0]` rows
    # rows not yet in `base`, in chunks: (row lengths, term ids, weights)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    last_seq: int = 0  # the store's operations up to this seq are applied
    data_version: int = -1
    n_ops: int = 0  # operations in the store since the last compaction
    n_deletes: int = 0
    # search structures (`search.prepare`), rebuilt lazily
    docs: sp.csr_matrix | None = None
    inverted: sp.csc_matrix | None = None
    alive_mask: np.ndarray | None = None
    # live documents per term id (`search.live_document_counts`), counted once per state
    live_counts: np.ndarray | None = None
    quantized: bool = False
    # rows written since the ANN build, sliced once per (docs matrix, first fresh row)
    fresh: tuple[sp.csr_matrix, int, sp.csr_matrix] | None = None
    # id(vocabulary) -> (vocabulary, its ids' store term ids, -1 where not stored yet)
    vocab_term_ids: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def from_documents(cls, meta: dict[str, Any],
                       docs: Iterable[tuple[str, list[str], list[float], dict[str, Any]]]) -> IndexCache:
        """An index held only in memory (a format-1 index read where it cannot be converted):
        `docs` (id, tokens, weights, fields) in row order, terms numbered as they first appear."""
        cache = cls(meta=dict(meta), generation=int(meta.get("generation", 0)))
        term_ids: dict[str, int] = {}
        for doc_id, tokens, weights, fields in docs:
            for t in tokens:
                if t not in term_ids:
                    term_ids[t] = len(term_ids)
            cache.add_row(doc_id, np.asarray([term_ids[t] for t in tokens], dtype=np.int32),
                          np.asarray(weights, dtype=np.float32), fields)
        cache.add_terms(term_ids)
        return cache

    @property
    def n_alive(self) -> int:
        return len(self.row_of)

    @property
    def n_dead(self) -> int:
        return len(self.ids) - len(self.row_of) + self.n_deletes

    def prepared(self) -> tuple[sp.csr_matrix, sp.csc_matrix, np.ndarray]:
        """The search structures `search.prepare` builds: the docs matrix, its inverted
        (column) view and the alive mask. Reaching here without them is a bug."""
        if self.docs is None or self.inverted is None or self.alive_mask is None:
            raise RuntimeError("index state searched before its matrices were built")
        return self.docs, self.inverted, self.alive_mask

    def add_row(self, doc_id: str, cols: np.ndarray, vals: np.ndarray, fields: dict[str, Any]) -> None:
        self.add_id(doc_id, fields)
        self.add_chunk(np.array([len(cols)], dtype=np.int64), cols, vals)

    def add_id(self, doc_id: str, fields: dict[str, Any]) -> None:
        """Bookkeeping of one new row (its term ids and weights follow with `add_chunk`)."""
        old = self.row_of.get(doc_id)
        if old is not None:
            self.alive[old] = False
        self.row_of[doc_id] = len(self.ids)
        self.ids.append(doc_id)
        self.fields.append(fields)
        self.alive.append(True)

    def add_chunk(self, lens: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """The term ids and weights of the rows last added with `add_id`, in their order: rows
        `lens` long, concatenated in `cols` and `vals`."""
        self.pending.append((lens, cols, vals))
        self.docs = self.inverted = self.alive_mask = self.fresh = self.live_counts = None

    def delete_row(self, doc_id: str) -> bool:
        row = self.row_of.pop(doc_id, None)
        if row is None:
            return False
        self.alive[row] = False
        self.alive_mask = self.live_counts = None
        return True

    def add_terms(self, tokens: Iterable[str]) -> None:
        for t in tokens:
            self.term_ids[t] = len(self.terms)
            self.terms.append(t)

    def apply_batch(self, ops: Sequence[tuple[str, TermMap | None, str | None]], new_terms: Iterable[str],
                    lens: np.ndarray, cols: np.ndarray, vals: np.ndarray, first_seq: int, seq: int) -> None:
        """Apply a batch this object committed (seqs ``first_seq + 1 .. seq``): `ops` as
        `_commit` wrote them, the tokens it added, and its upserts' rows (`store_rows`)."""
        self.add_terms(new_terms)
        parsed = iter(parse_fields([f for _, tm, f in ops if tm is not None]))
        for doc_id, tm, _ in ops:
            if tm is None:
                self.delete_row(doc_id)
                self.n_deletes += 1
            else:
                self.add_id(doc_id, next(parsed))
        if len(lens):  # the batch's rows as one chunk, in the order of their ids
            self.add_chunk(lens, cols, vals)
        self.n_ops += seq - first_seq
        self.last_seq = seq

    def matrix(self) -> sp.csr_matrix:
        """All rows (live and dead) as one CSR matrix docs x terms."""
        n_terms = len(self.terms)
        if self.base is None:
            self.base = sp.csr_matrix((0, n_terms), dtype=np.float32)
        if self.pending:
            lens = np.concatenate([n for n, _, _ in self.pending])
            indptr = np.zeros(len(lens) + 1, dtype=np.int64)
            np.cumsum(lens, out=indptr[1:])
            cols = np.concatenate([c for _, c, _ in self.pending]).astype(np.int32, copy=False)
            vals = np.concatenate([v for _, _, v in self.pending]).astype(np.float32, copy=False)
            extra = sp.csr_matrix((vals, cols, indptr), shape=(len(lens), n_terms))
            base = self.base
            base = sp.csr_matrix((base.data, base.indices, base.indptr), shape=(base.shape[0], n_terms))
            self.base = sp.vstack([base, extra], format="csr", dtype=np.float32)
            self.pending = []
        if self.base.shape[1] != n_terms:
            b = self.base
            self.base = sp.csr_matrix((b.data, b.indices, b.indptr), shape=(b.shape[0], n_terms))
        return self.base


def parse_fields(texts: list[str | None]) -> list[dict[str, Any]]:
    """Stored fields (JSON objects) parsed in one call: searches never pay for a parse."""
    return json.loads("[" + ",".join(t or "{}" for t in texts) + "]") if texts else []


def store_rows(
    st: IndexCache, term_maps: list[TermMap]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """`term_maps` as the store's rows: their lengths, their store term ids (int32) and weights
    (float32), concatenated in order, and the tokens new to the store with the ids they get
    (not yet in `st`: the transaction may still fail).

    Term maps of one `TermMapBatch` (CSR views over one vocabulary, the bulk path) translate
    vocabulary ids to store ids with one array lookup for the whole batch; the array is kept
    on `st` (a store id never changes within a generation). Others go token by token."""
    lens = np.fromiter(map(len, term_maps), dtype=np.int64, count=len(term_maps))
    new_terms: dict[str, int] = {}
    head = term_maps[0] if term_maps else None
    vocab = head.csr_row()[0] if type(head) is CsrTermMap else None
    rows = [tm.csr_row() for tm in term_maps if type(tm) is CsrTermMap] if vocab is not None else []
    if vocab is not None and len(rows) == len(term_maps) and all(v is vocab for v, _, _ in rows):
        idx = np.concatenate([i for _, i, _ in rows])
        vals = np.concatenate([v for _, _, v in rows]).astype(np.float32, copy=False)
        cached = st.vocab_term_ids.get(id(vocab))
        if cached is None or cached[0] is not vocab:
            cached = st.vocab_term_ids[id(vocab)] = (vocab, np.full(len(vocab), -1, dtype=np.int32))
        lut = cached[1]
        cols = lut[idx]
        missing = cols < 0
        if missing.any():
            resolved = lut.copy()  # new terms' ids stay out of the cache until committed
            # in order of first appearance: the ids the token-by-token path gives them
            unseen, first = np.unique(idx[missing], return_index=True)
            for v in unseen[np.argsort(first, kind="stable")].tolist():
                token = vocab.tokens[v]
                tid = st.term_ids.get(token)
                if tid is None:
                    tid = new_terms[token] = len(st.terms) + len(new_terms)
                else:
                    lut[v] = tid
                resolved[v] = tid
            cols = resolved[idx]
        return lens, cols, vals, new_terms
    get = st.term_ids.get
    next_id = len(st.terms)
    col_parts, val_parts = [], []
    for tm in term_maps:
        tokens, weights = tm.tokens_and_weights()
        ids = []
        for t in tokens:
            tid = get(t)
            if tid is None:
                tid = new_terms.get(t)
                if tid is None:
                    tid = new_terms[t] = next_id
                    next_id += 1
            ids.append(tid)
        col_parts.append(np.asarray(ids, dtype=np.int32))
        val_parts.append(np.asarray(weights, dtype=np.float32))
    cols = np.concatenate(col_parts) if col_parts else np.zeros(0, np.int32)
    vals = np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32)
    return lens, cols, vals, new_terms


def catch_up(conn: sqlite3.Connection, st: IndexCache | None, store: IndexStore) -> IndexCache:
    """`st` with every operation committed in the store applied (a new cache after a
    compaction). `conn` is inside a transaction, so what it reads is one consistent snapshot.
    Rows that do not decode raise `IndexCorruptError`; SQLite's own errors are the caller's."""
    try:
        return _apply_ops(conn, st, store)
    except (ValueError, KeyError, TypeError) as e:  # a meta value, a blob or a fields text
        raise IndexCorruptError(store.folder.name, store.path, f"a stored row does not decode: {e}") from e


def _apply_ops(conn: sqlite3.Connection, st: IndexCache | None, store: IndexStore) -> IndexCache:
    meta = store_mod.read_meta(conn)
    if "fingerprint" not in meta:
        raise sqlite3.OperationalError("no such table: meta (index creation did not finish)")
    generation = int(meta.get("generation", 0))
    if st is None or st.generation != generation or st.store is not store:
        st = IndexCache(meta=meta, generation=generation, store=store)
    else:
        st.meta = meta
    terms = store_mod.read_terms(conn, len(st.terms))
    if terms:
        if terms[0][0] != len(st.terms) or terms[-1][0] != len(st.terms) + len(terms) - 1:
            raise IndexCorruptError(store.folder.name, store.path, "the term dictionary has gaps")
        st.add_terms(t for _, t in terms)
    # read everything first: a read error must not leave `st` half caught up
    rows = store_mod.read_ops(conn, st.last_seq)
    if not rows:
        return st
    col_blobs: list[bytes] = []
    val_blobs: list[Any] = []  # None only in a damaged row: the join raises TypeError
    parsed = iter(parse_fields([r[4] for r in rows if r[2] is not None]))
    add_id = st.add_id
    for _, doc_id, cols, vals, _ in rows:
        if cols is None:
            st.delete_row(doc_id)
            st.n_deletes += 1
        else:
            add_id(doc_id, next(parsed))
            col_blobs.append(cols)
            val_blobs.append(vals)
    if col_blobs:  # one array for the whole read, not one per row
        lens = np.fromiter((len(b) for b in col_blobs), dtype=np.int64, count=len(col_blobs)) // 4
        st.add_chunk(lens, np.frombuffer(b"".join(col_blobs), dtype=np.int32),
                     np.frombuffer(b"".join(val_blobs), dtype=np.float32))
    st.n_ops += len(rows)
    st.last_seq = rows[-1][0]
    return st
