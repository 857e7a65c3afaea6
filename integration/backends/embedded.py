"""`EmbeddedBackend`: the default, server-less search backend (SQLite store, scipy.sparse search).

One folder per index under ``root_dir``; the store of record is ``index.sqlite`` (see
`convsparse.integration.backends.embedded_store` for its tables, its fsync policy and why SQLite): a
batch of upserts or deletes is one transaction, all or nothing, and a failed write (full disk,
I/O error, read-only file system) raises `IndexWriteError` and leaves every batch acknowledged
before it readable. A damaged database (not a database, malformed, truncated, rows that do not
decode) raises `IndexCorruptError` on every call, one line naming the fix (restore the folder,
or `convsparse index delete NAME`, which reads nothing from it); see
``docs/guides/embedded-store-faults.md``. Indices written by format 1 (snapshot + JSON-lines
log) are converted on first open, or read as they are where the folder cannot be written
(`convsparse.integration.backends.embedded_legacy`).

The search structures are a cache derived from the store, in memory: every call first checks
(one ``stat`` and SQLite's ``PRAGMA data_version``) whether another connection committed since
this object last looked and, if so, reads only the new operations (by ``seq``), or reloads after
a compaction (``generation``). Workers upsert in one process and a client reads in another.
Opening an index for search never needs write access (a ``mode=ro`` connection).

Search is exact: a CSC copy of the document matrix is the inverted index (column t = term
t's posting list); scipy slices the query terms' columns and multiplies them by the query
weights in C++ (``X[:, q_terms] @ q_weights``), dead rows (overwritten or deleted) are masked
and the top k taken with ``argpartition``. Ties are broken by insertion order, like Lucene's doc ids.
`benchmarks/search_latency.py` compares this with the other candidates.

Approximate search is opt-in: `EmbeddedBackend.build_ann` derives a SEISMIC index from the
stored term maps, and ``search(..., approximate=AnnQuery(...))`` uses it, merged with an exact
search of the rows written since the build (`convsparse.integration.backends.embedded_ann`).

``quantize=True`` stores document weights the way Lucene's ``FeatureField`` does (the float's
top 9 significant bits, ``bits >>> 15``, truncated), so scores equal a real OpenSearch server's:
``boost x quantized(value)``; the query weight (the boost) is not quantized.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from convsparse.errors import (
    BackendError,
    FingerprintMismatchError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidIndexNameError,
)
from convsparse.integration.backends import embedded_ann as ann
from convsparse.integration.backends import embedded_legacy as legacy
from convsparse.integration.backends.base import (
    DocumentResult,
    Hit,
    IndexedDocument,
    IndexInfo,
    check_k,
    indexed_document,
)
from convsparse.integration.backends.embedded_ann import (
    AnnBuild,
    AnnDamagedError,
    AnnInfo,
    AnnNotBuiltError,
    AnnQuery,
)
from convsparse.integration.backends.embedded_store import (
    FORMAT,
    VECTORS_SCHEMA,
    IndexCorruptError,
    IndexStore,
    IndexWriteError,
    decode_meta,
    is_corruption,
    is_store,
    read_error,
    step,
)
from convsparse.integration.vectors import (
    META_KEY,
    DocumentVectors,
    VectorSpec,
    VectorSpecMismatchError,
)
from convsparse.termmap import CsrTermMap, TermMap, quantize_feature_values

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,254}$")


def check_index_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidIndexNameError(
            f"invalid index name {name!r}: use lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (the OpenSearch rules)"
        )
    return name


@dataclass
class _IndexState:
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
    # search structures, rebuilt lazily
    docs: sp.csr_matrix | None = None
    inverted: sp.csc_matrix | None = None
    alive_mask: np.ndarray | None = None
    quantized: bool = False
    # rows written since the ANN build, sliced once per (docs matrix, first fresh row)
    fresh: tuple[sp.csr_matrix, int, sp.csr_matrix] | None = None
    # id(vocabulary) -> (vocabulary, its ids' store term ids, -1 where not stored yet)
    vocab_term_ids: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict)

    @property
    def n_alive(self) -> int:
        return len(self.row_of)

    @property
    def n_dead(self) -> int:
        return len(self.ids) - len(self.row_of) + self.n_deletes

    def prepared(self) -> tuple[sp.csr_matrix, sp.csc_matrix, np.ndarray]:
        """The search structures `EmbeddedBackend._prepare` builds: the docs matrix, its
        inverted (column) view and the alive mask. Reaching here without them is a bug."""
        if self.docs is None or self.inverted is None or self.alive_mask is None:
            raise RuntimeError("index state searched before its matrices were built")
        return self.docs, self.inverted, self.alive_mask

    def add_row(self, doc_id: str, cols: np.ndarray, vals: np.ndarray, fields: dict[str, Any]) -> None:
        self._add_id(doc_id, fields)
        self.pending.append((np.array([len(cols)], dtype=np.int64), cols, vals))
        self.docs = self.inverted = self.alive_mask = self.fresh = None

    def _add_id(self, doc_id: str, fields: dict[str, Any]) -> None:
        """Bookkeeping of one new row (its term ids and weights go to `pending`)."""
        old = self.row_of.get(doc_id)
        if old is not None:
            self.alive[old] = False
        self.row_of[doc_id] = len(self.ids)
        self.ids.append(doc_id)
        self.fields.append(fields)
        self.alive.append(True)


    def delete_row(self, doc_id: str) -> bool:
        row = self.row_of.pop(doc_id, None)
        if row is None:
            return False
        self.alive[row] = False
        self.alive_mask = None
        return True

    def add_terms(self, tokens: Iterable[str]) -> None:
        for t in tokens:
            self.term_ids[t] = len(self.terms)
            self.terms.append(t)

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


def _store_rows(
    st: _IndexState, term_maps: list[TermMap]
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
    vocab = head._vocab if type(head) is CsrTermMap else None
    csr = [tm for tm in term_maps if type(tm) is CsrTermMap and tm._vocab is vocab] if vocab is not None else []
    if vocab is not None and len(csr) == len(term_maps):
        idx = np.concatenate([tm._idx for tm in csr])
        vals = np.concatenate([tm._val for tm in csr]).astype(np.float32, copy=False)
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


def _catch_up(conn: sqlite3.Connection, st: _IndexState | None, store: IndexStore) -> _IndexState:
    """`st` with every operation committed in the store applied (a new state after a
    compaction). `conn` is inside a transaction, so what it reads is one consistent snapshot.
    Rows that do not decode raise `IndexCorruptError`; SQLite's own errors are the caller's."""
    try:
        return _apply_ops(conn, st, store)
    except (ValueError, KeyError, TypeError) as e:  # a meta value, a blob or a fields text
        raise IndexCorruptError(store.folder.name, store.path, f"a stored row does not decode: {e}") from e


def _apply_ops(conn: sqlite3.Connection, st: _IndexState | None, store: IndexStore) -> _IndexState:
    meta = decode_meta(conn.execute("SELECT key, value FROM meta").fetchall())
    if "fingerprint" not in meta:
        raise sqlite3.OperationalError("no such table: meta (index creation did not finish)")
    generation = int(meta.get("generation", 0))
    if st is None or st.generation != generation or st.store is not store:
        st = _IndexState(meta=meta, generation=generation, store=store)
    else:
        st.meta = meta
    terms = conn.execute("SELECT id, token FROM terms WHERE id >= ? ORDER BY id",
                         (len(st.terms),)).fetchall()
    if terms:
        if terms[0][0] != len(st.terms) or terms[-1][0] != len(st.terms) + len(terms) - 1:
            raise IndexCorruptError(store.folder.name, store.path, "the term dictionary has gaps")
        st.add_terms(t for _, t in terms)
    last = st.last_seq
    # read everything first: a read error must not leave `st` half caught up
    rows = conn.execute("SELECT seq, doc_id, cols, vals, fields FROM ops WHERE seq > ? ORDER BY seq",
                        (last,)).fetchall()
    if not rows:
        return st
    col_blobs, val_blobs = [], []
    parsed = iter(parse_fields([r[4] for r in rows if r[2] is not None]))
    add_id = st._add_id
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
        st.pending.append((lens, np.frombuffer(b"".join(col_blobs), dtype=np.int32),
                           np.frombuffer(b"".join(val_blobs), dtype=np.float32)))
        st.docs = st.inverted = st.alive_mask = st.fresh = None
    st.n_ops += len(rows)
    st.last_seq = rows[-1][0]
    return st


def _vectors_problem(doc: IndexedDocument, spec: VectorSpec) -> str | None:
    """Why `doc` cannot go into an index holding `spec` vectors, or None."""
    if doc.vectors is None:
        return (f"no passage vectors: index holds {spec.describe()} for every document (write "
                f"through convsparse ingestion, which embeds them with the term map)")
    if doc.vectors.dimension != spec.dimension:
        return f"passage vectors of {doc.vectors.dimension} dims, the index holds {spec.dimension}"
    return None


def _writable(folder: Path, db: Path) -> bool:
    """Whether this process can write the index now (``access`` sees a read-only mount and
    permissions; SQLite's read connection, which may use an existing shared-memory file, does not)."""
    return os.access(folder, os.W_OK) and os.access(db, os.W_OK)


def _stale_message(name: str, info: AnnInfo, st: _IndexState) -> str:
    return (f"index {name!r} was compacted after its ANN build (generation {info.generation}, now "
            f"{st.generation}): approximate searches search exactly; rebuild it with "
            f"`convsparse index build-ann {name}` (or EmbeddedBackend.build_ann({name!r}))")


class EmbeddedBackend:
    """In-process `Backend` persisted under ``root_dir`` (one folder per index).

    ``durable=True`` (the default) fsyncs every committed batch (SQLite ``synchronous=FULL``);
    ``durable=False`` survives a crash of the process but may lose the last batches on power
    loss. See `convsparse.integration.backends.embedded_store`.

    >>> import tempfile
    >>> from convsparse.termmap import CsrTermMap, TermMap, quantize_feature_values
    >>> be = EmbeddedBackend(tempfile.mkdtemp())
    >>> _ = be.create_index("demo", fingerprint="fp")
    >>> docs = [IndexedDocument("a", TermMap({"paris": 2.0})), IndexedDocument("b", TermMap({"rome": 1.0}))]
    >>> [r.ok for r in be.upsert("demo", docs)]
    [True, True]
    >>> [(h.id, h.score) for h in be.search("demo", TermMap({"paris": 0.5}), k=5)]
    [('a', 1.0)]
    """

    def __init__(
        self, root_dir: str | Path, *, quantize: bool = False, compact_ratio: float = 0.5,
        compact_min_ops: int = 20_000, durable: bool = True,
    ):
        self.root = Path(root_dir).expanduser()
        self.quantize = quantize
        self.compact_ratio = compact_ratio
        self.compact_min_ops = compact_min_ops
        self.durable = durable
        self._states: dict[str, _IndexState] = {}
        self._anns: dict[str, ann.LoadedAnn] = {}
        self._ann_warned: set[tuple[str, str]] = set()  # (index, reason) already logged
        # index -> (ann.json signature, why its build could not be loaded): not loaded again
        self._ann_failed: dict[str, tuple[Any, str]] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EmbeddedBackend({str(self.root)!r}, quantize={self.quantize})"

    def close(self) -> None:
        """Close this object's database connections (reopened on the next call)."""
        with self._lock:
            for st in self._states.values():
                if st.store is not None:
                    st.store.close()
            self._states.clear()
            self._anns.clear()

    # ------------------------------------------------------------------ opening
    def _dir(self, name: str) -> Path:
        return self.root / check_index_name(name)

    def _forget(self, name: str) -> None:
        self._anns.pop(name, None)
        self._ann_failed.pop(name, None)
        st = self._states.pop(name, None)
        if st is not None and st.store is not None:
            st.store.close()

    def _open(self, name: str) -> _IndexState:
        d = self._dir(name)
        if not is_store(d) and legacy.is_legacy(d):
            try:
                legacy.migrate(d, durable=self.durable)
            except (OSError, sqlite3.Error) as e:
                if is_store(d):
                    raise
                logger.warning("index %s is in the format-1 layout and its folder cannot be "
                               "written (%s): reading it as it is, read-only", name, e)
                return self._legacy_state(name, d)
        try:
            store = IndexStore(d, durable=self.durable)
        except FileNotFoundError:
            raise IndexNotFoundError(name) from None
        try:
            with store.lock:
                dv = store.data_version()
                with store.read() as conn:
                    st = _catch_up(conn, None, store)
                st.data_version = dv
        except sqlite3.Error as e:
            store.close()
            if isinstance(e, sqlite3.OperationalError) and "no such table" in str(e):
                raise IndexNotFoundError(name) from None
            raise read_error(name, store.path, e) from e
        except BaseException:
            store.close()
            raise
        if not store.immutable and os.access(d, os.W_OK):
            ann.remove_orphans(d)
        return st

    def _legacy_state(self, name: str, d: Path) -> _IndexState:
        old = legacy.read_legacy(d)
        st = _IndexState(meta=dict(old.meta), generation=int(old.meta.get("generation", 0)))
        term_ids: dict[str, int] = {}
        for doc_id, tokens, weights, fields in old.docs:
            for t in tokens:
                if t not in term_ids:
                    term_ids[t] = len(term_ids)
            st.add_row(doc_id, np.asarray([term_ids[t] for t in tokens], dtype=np.int32),
                       np.asarray(weights, dtype=np.float32), fields)
        st.add_terms(term_ids)
        return st

    def _state(self, name: str) -> _IndexState:
        """The index as of now: read what other connections committed since we last looked."""
        with self._lock:
            st = self._states.get(name)
            if st is not None:
                store = st.store
                if store is None:  # format 1, read-only: nothing can change it here
                    return st
                try:
                    s = os.stat(store.path)
                except FileNotFoundError:
                    self._forget(name)
                    raise IndexNotFoundError(name) from None
                if (s.st_dev, s.st_ino) != store.inode:  # deleted and created again
                    self._forget(name)
                    st = None
                elif store.immutable:
                    return st
                else:
                    try:
                        with store.lock:
                            dv = store.data_version()
                            if dv == st.data_version:
                                return st
                            with store.read() as conn:
                                st = _catch_up(conn, st, store)
                            st.data_version = dv
                    except sqlite3.Error as e:
                        self._forget(name)
                        raise read_error(name, store.path, e) from e
                    except IndexCorruptError:
                        self._forget(name)
                        raise
                    self._states[name] = st
                    return st
            st = self._open(name)
            self._states[name] = st
            return st

    # ------------------------------------------------------------------ index management
    def list_indices(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if is_store(p) or (p / "meta.json").exists())

    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None, exist_ok: bool = False
    ) -> IndexInfo:
        d = self._dir(name)
        created = False
        if not legacy.is_legacy(d):
            # creation_id: renewed by every delete + create, so a job's done markers name
            # the index they wrote into (workers/target.py)
            meta = {"format": FORMAT, "name": name, "fingerprint": fingerprint,
                    "vocabulary": vocabulary, "generation": 0, "creation_id": uuid.uuid4().hex}
            try:
                store, created = IndexStore.create(d, meta, durable=self.durable)
            except (OSError, sqlite3.Error) as e:
                raise IndexWriteError(name, "creating the index", e) from e
            store.close()
        with self._lock:
            self._forget(name)
        if not created:
            if not exist_ok:
                raise IndexExistsError(name)
            info = self.describe_index(name)
            if info.fingerprint != fingerprint:
                raise FingerprintMismatchError(name, info.fingerprint, fingerprint)
            return info
        return self.describe_index(name)

    def describe_index(self, name: str) -> IndexInfo:
        """The index's fingerprint, count and details. ``read_only`` is what this process
        observes now (the folder or the file cannot be written: a read-only mount, permissions);
        ``ann`` is the current ANN build with its ``status`` ("ready", or "unusable" and the
        ``problem`` with its fix), or None if none was built."""
        st = self._state(name)
        store = st.store
        d = self._dir(name)
        return IndexInfo(
            name=name, fingerprint=st.meta["fingerprint"], count=st.n_alive,
            vocabulary=st.meta.get("vocabulary"),
            extra={"backend": "embedded", "path": str(d), "terms": len(st.terms),
                   "generation": st.generation, "creation_id": st.meta.get("creation_id"),
                   "rows": len(st.ids), "log_ops": st.n_ops,
                   "quantize": self.quantize, "format": FORMAT if store else 1,
                   "durable": self.durable,
                   "read_only": store is None or store.immutable or not _writable(d, store.path),
                   "ann": self._ann_status(name, st),
                   META_KEY: st.meta.get(META_KEY)},
        )

    def _ann_status(self, name: str, st: _IndexState) -> dict[str, Any] | None:
        d = self._dir(name)
        try:
            info = ann.read_info(d)
        except AnnDamagedError as e:
            self._warn_ann(name, e.reason, str(e))
            return {"status": "unusable", "problem": str(e)}
        if info is None:
            return None
        out: dict[str, Any] = {**info.to_dict(), "status": "ready"}
        failed = self._ann_failed.get(name)
        try:
            ann.check_file(d, info)
            if failed is not None and failed[0] == ann.signature(d):  # a search could not load it
                out.update(status="unusable", problem=failed[1])
                return out
        except AnnDamagedError as e:
            self._warn_ann(name, e.reason, str(e))
            out.update(status="unusable", problem=str(e))
        else:
            if info.generation != st.generation or info.n_rows > len(st.ids):
                out.update(status="unusable", problem=_stale_message(name, info, st))
        return out

    def _warn_ann(self, name: str, reason: str, message: str) -> None:
        """Log an unusable ANN build once per index and reason (searches go on exactly)."""
        if (name, reason) not in self._ann_warned:
            self._ann_warned.add((name, reason))
            logger.warning("%s", message)

    def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        d = self._dir(name)
        with self._lock:
            self._forget(name)
            if not is_store(d) and not (d / "meta.json").exists():
                if missing_ok:
                    return
                raise IndexNotFoundError(name)
            writer = None
            if is_store(d):
                try:  # wait for a writer in another process to finish its batch
                    writer = sqlite3.connect(str(d / "index.sqlite"), timeout=60.0,
                                             isolation_level=None)
                    writer.execute("BEGIN IMMEDIATE")
                except sqlite3.Error:
                    writer = None
            try:
                (d / "index.sqlite").unlink(missing_ok=True)
                (d / "meta.json").unlink(missing_ok=True)
                for p in d.iterdir():
                    if p.name != ".lock":
                        p.unlink(missing_ok=True)
            finally:
                if writer is not None:
                    writer.close()
            for p in d.iterdir():  # SQLite's -wal/-shm, removed again if close() made them
                p.unlink(missing_ok=True)
            try:
                d.rmdir()
            except OSError:
                pass

    def count(self, name: str) -> int:
        return self._state(name).n_alive

    # ------------------------------------------------------------------ writes
    def _commit(self, name: str, ops: list[tuple[str, TermMap | None, str | None]], what: str,
                vectors: list[tuple[str, bytes]] | None = None) -> None:
        """Write `ops` ((id, term map, fields JSON), or (id, None, None) for a delete) as one
        transaction, then apply them to the in-memory state. `vectors` ((id, blob) of the
        upserted documents) go in the same transaction (an index that holds vectors)."""
        with self._lock:
            st = self._state(name)
            store = st.store
            if store is None:
                raise IndexWriteError(name, what, PermissionError(
                    "a format-1 index in a folder this process cannot write (read-only)"))
            if store.immutable or not os.access(store.folder, os.W_OK):
                raise IndexWriteError(name, what, PermissionError(
                    errno.EROFS, f"{store.folder} is read-only here"))
            try:
                with store.lock, store.write() as conn:
                    step("write:begin")
                    st = _catch_up(conn, st, store)
                    seq = conn.execute(
                        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name='ops'), 0)"
                    ).fetchone()[0]
                    first_seq = seq = max(seq, st.last_seq)
                    lens, cols, vals, new_terms = _store_rows(
                        st, [tm for _, tm, _ in ops if tm is not None])
                    # one blob per document: slices of the batch's two arrays
                    col_bytes, val_bytes = cols.tobytes(), vals.tobytes()
                    bounds = np.zeros(len(lens) + 1, dtype=np.int64)
                    np.cumsum(lens * 4, out=bounds[1:])
                    starts, ends = bounds[:-1].tolist(), bounds[1:].tolist()
                    rows: list[tuple[int, str, bytes | None, bytes | None, str | None]] = []
                    row = 0
                    for doc_id, tm, fields in ops:
                        seq += 1
                        if tm is None:
                            rows.append((seq, doc_id, None, None, None))
                            continue
                        a, b = starts[row], ends[row]
                        rows.append((seq, doc_id, col_bytes[a:b], val_bytes[a:b], fields))
                        row += 1
                    if new_terms:
                        conn.executemany("INSERT INTO terms(id, token) VALUES (?, ?)",
                                         ((i, t) for t, i in new_terms.items()))
                    step("write:terms")
                    conn.executemany(
                        "INSERT INTO ops(seq, doc_id, cols, vals, fields) VALUES (?, ?, ?, ?, ?)", rows)
                    step("write:ops")
                    self._write_vectors(conn, name, st, ops, vectors)
            except (sqlite3.Error, OSError) as e:
                if isinstance(e, sqlite3.Error) and is_corruption(e):
                    self._forget(name)
                    raise IndexCorruptError(name, store.path, str(e)) from e
                self._states[name] = st  # what others committed is applied; ours is not
                raise IndexWriteError(name, what, e) from e
            except IndexCorruptError:
                self._forget(name)
                raise
            # committed (and fsynced when durable): now the in-memory copy
            st.add_terms(new_terms)
            parsed = iter(parse_fields([f for _, tm, f in ops if tm is not None]))
            for doc_id, tm, _ in ops:
                if tm is None:
                    st.delete_row(doc_id)
                    st.n_deletes += 1
                else:
                    st._add_id(doc_id, next(parsed))
            if len(lens):  # the batch's rows as one chunk, in the order of their ids
                st.pending.append((lens, cols, vals))
                st.docs = st.inverted = st.alive_mask = st.fresh = None
            st.n_ops += seq - first_seq
            st.last_seq = seq
            self._states[name] = st
            step("write:applied")
            if st.n_dead and st.n_dead >= max(self.compact_min_ops, self.compact_ratio * len(st.ids)):
                self._compact(name, st)

    # ------------------------------------------------------------------ passage vectors
    @staticmethod
    def _write_vectors(conn: sqlite3.Connection, name: str, st: _IndexState,
                       ops: list[tuple[str, TermMap | None, str | None]],
                       vectors: list[tuple[str, bytes]] | None) -> None:
        """The vectors part of a write transaction: the batch's vectors stored, the deleted
        documents' dropped. Refuses (rolling the batch back) when the index started or stopped
        holding vectors since the batch was checked."""
        holds = META_KEY in st.meta
        writes = any(tm is not None for _, tm, _ in ops)
        if writes and holds != (vectors is not None):
            raise VectorSpecMismatchError(name, VectorSpec.from_dict(st.meta.get(META_KEY)),
                                          None)
        if not holds:
            return
        deleted = [(doc_id,) for doc_id, tm, _ in ops if tm is None]
        if deleted:
            conn.executemany("DELETE FROM vectors WHERE doc_id = ?", deleted)
        if vectors:
            conn.executemany("INSERT OR REPLACE INTO vectors(doc_id, data) VALUES (?, ?)", vectors)
        step("write:vectors")

    def vector_spec(self, name: str) -> VectorSpec | None:
        return VectorSpec.from_dict(self._state(name).meta.get(META_KEY))

    def enable_vectors(self, name: str, spec: VectorSpec, *, replace: bool = False) -> None:
        """Record `spec` in the index's meta (and create its vectors table), one transaction;
        see `SupportsPassageVectors`."""
        with self._lock:
            st = self._state(name)
            store = st.store
            if store is None or store.immutable or not os.access(store.folder, os.W_OK):
                raise IndexWriteError(name, "recording passage vectors", PermissionError(
                    errno.EROFS, f"{self._dir(name)} is read-only here"))
            try:
                with store.lock, store.write() as conn:
                    st = _catch_up(conn, st, store)
                    held = VectorSpec.from_dict(st.meta.get(META_KEY))
                    if held == spec:
                        return
                    if held is not None and not replace:
                        raise VectorSpecMismatchError(name, held, spec)
                    conn.execute(VECTORS_SCHEMA)
                    conn.execute("DELETE FROM vectors")
                    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 (META_KEY, json.dumps(spec.to_dict())))
            except (sqlite3.Error, OSError) as e:
                raise IndexWriteError(name, "recording passage vectors", e) from e
            finally:
                self._states[name] = st

    def passage_vectors(self, name: str, ids: Iterable[str]) -> dict[str, DocumentVectors]:
        st = self._state(name)
        spec = VectorSpec.from_dict(st.meta.get(META_KEY))
        ids = list(ids)
        if spec is None or st.store is None or not ids:
            return {}
        with st.store.lock, st.store.read() as conn:
            rows = conn.execute(f"SELECT doc_id, data FROM vectors WHERE doc_id IN "
                                f"({','.join('?' * len(ids))})", ids).fetchall()
        out = {}
        for doc_id, blob in rows:
            try:
                out[doc_id] = DocumentVectors.from_bytes(blob, spec.dimension)
            except ValueError as e:
                logger.warning("index %s: stored vectors of %r unreadable (%s); embedded again",
                               name, doc_id, e)
        return out

    def passages_to_embed(self, name: str) -> Iterator[tuple[str, str]]:
        from convsparse.documents import document_text
        from convsparse.integration.vectors import text_key

        st = self._state(name)
        if META_KEY not in st.meta or st.store is None:
            return
        with st.store.lock, st.store.read() as conn:
            have = dict(conn.execute("SELECT doc_id, hex(substr(data, 1, 12)) FROM vectors"))
        for doc_id, row in list(st.row_of.items()):
            fields = st.fields[row]
            text = fields.get("text")
            passage = document_text(fields.get("title"), text) if isinstance(text, str) else ""
            key = have.get(doc_id)
            if key is None or key.lower() != text_key(passage):
                yield doc_id, passage

    def put_vectors(self, name: str, items: Iterable[tuple[str, DocumentVectors]]
                    ) -> Iterator[DocumentResult]:
        """Store vectors for existing documents, one transaction (the backfill)."""
        items = list(items)
        with self._lock:
            st = self._state(name)
            spec = VectorSpec.from_dict(st.meta.get(META_KEY))
            if spec is None:
                raise VectorSpecMismatchError(name, None, None)
            store = st.store
            if store is None:
                raise IndexWriteError(name, "storing vectors", PermissionError(
                    errno.EROFS, f"{self._dir(name)} is read-only here"))
            results: list[DocumentResult] = []
            rows: list[tuple[str, bytes]] = []
            try:
                with store.lock, store.write() as conn:
                    st = _catch_up(conn, st, store)
                    for doc_id, vecs in items:
                        if doc_id not in st.row_of:
                            results.append(DocumentResult(doc_id, False, 404, "not found"))
                        elif vecs.dimension != spec.dimension:
                            results.append(DocumentResult(doc_id, False, 400, (
                                f"vectors of {vecs.dimension} dims, the index holds "
                                f"{spec.dimension}")))
                        else:
                            rows.append((doc_id, vecs.to_bytes()))
                            results.append(DocumentResult(doc_id, True, 200))
                    conn.executemany("INSERT OR REPLACE INTO vectors(doc_id, data) VALUES (?, ?)",
                                     rows)
                    step("vectors:put")
            except (sqlite3.Error, OSError) as e:
                raise IndexWriteError(name, f"storing vectors of {len(rows)} documents", e) from e
            finally:
                self._states[name] = st
        return iter(results)

    def upsert(self, name: str, documents: Iterable[IndexedDocument], *,
               fingerprint: str | None = None) -> Iterator[DocumentResult]:
        """Write documents (same id overwrites). Runs eagerly; yields one result per input.

        The valid documents are one transaction: all stored, or none (then `IndexWriteError`,
        a `BackendError`, says why, and nothing acknowledged before is lost). `fingerprint`
        (the encoder of the term maps), when given, must be the index's, else
        `FingerprintMismatchError` before anything is written."""
        st = self._state(name)  # IndexNotFoundError before reading the documents
        if fingerprint is not None and fingerprint != st.meta["fingerprint"]:
            raise FingerprintMismatchError(name, st.meta["fingerprint"], fingerprint, writing=True)
        results: list[DocumentResult] = []
        ops: list[tuple[str, TermMap | None, str | None]] = []
        spec = VectorSpec.from_dict(st.meta.get(META_KEY))
        vectors: list[tuple[str, bytes]] | None = [] if spec is not None else None
        for doc in map(indexed_document, documents):
            if isinstance(doc, DocumentResult):
                results.append(doc)
                continue
            if vectors is not None and spec is not None:  # an index that holds vectors: none without
                problem = _vectors_problem(doc, spec)
                if problem or doc.vectors is None:
                    results.append(DocumentResult(doc.id, False, 400, problem or "no passage vectors"))
                    continue
                vectors.append((doc.id, doc.vectors.to_bytes()))
            ops.append((doc.id, doc.term_map, doc.fields_json))
            results.append(DocumentResult(doc.id, True, 200))
        if ops:
            self._commit(name, ops, f"a batch of {len(ops)} documents", vectors)
        return iter(results)

    def delete_documents(self, name: str, ids: Iterable[str]) -> Iterator[DocumentResult]:
        st = self._state(name)
        results: list[DocumentResult] = []
        ops: list[tuple[str, TermMap | None, str | None]] = []
        present = set(st.row_of)
        for doc_id in ids:
            if doc_id in present:
                ops.append((doc_id, None, None))
                present.discard(doc_id)
                results.append(DocumentResult(doc_id, True, 200))
            else:
                results.append(DocumentResult(doc_id, False, 404, "not found"))
        if ops:
            self._commit(name, ops, f"deleting {len(ops)} documents")
        return iter(results)

    def compact(self, name: str) -> None:
        """Drop overwritten and deleted rows from the store (one transaction) and reload."""
        with self._lock:
            self._compact(name, self._state(name))

    def _compact(self, name: str, st: _IndexState) -> None:
        store = st.store
        if store is None:
            return
        try:
            with store.lock, store.write() as conn:
                step("compact:begin")
                _catch_up(conn, st, store)
                conn.execute("DELETE FROM ops WHERE cols IS NULL OR seq NOT IN "
                             "(SELECT MAX(seq) FROM ops GROUP BY doc_id)")
                step("compact:delete")
                conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'",
                             (json.dumps(st.generation + 1),))
                step("compact:meta")
        except (sqlite3.Error, OSError) as e:
            if isinstance(e, sqlite3.Error) and is_corruption(e):
                self._forget(name)
                raise IndexCorruptError(name, store.path, str(e)) from e
            raise IndexWriteError(name, "compaction", e) from e
        self._forget(name)
        self._states[name] = self._open(name)

    # ------------------------------------------------------------------ search
    def _prepare(self, st: _IndexState) -> None:
        if st.docs is None or st.inverted is None or st.quantized != self.quantize:
            docs = st.matrix()
            if self.quantize:
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
            st.quantized = self.quantize
        if st.alive_mask is None:
            st.alive_mask = np.asarray(st.alive, dtype=bool)

    def _query_vector(self, st: _IndexState, query: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Column ids and weights (float32, like Lucene's boosts) of the query's known terms."""
        get = st.term_ids.get
        cols = np.fromiter((get(t, -1) for t in query), dtype=np.int64, count=len(query))
        vals = np.fromiter(query.values(), dtype=np.float32, count=len(query))
        keep = (cols >= 0) & (cols < st.prepared()[1].shape[1])
        if not keep.all():
            cols, vals = cols[keep], vals[keep]
        return cols, vals

    def _scores(self, st: _IndexState, query: Mapping[str, float]) -> np.ndarray:
        cols, vals = self._query_vector(st, query)
        inv = st.prepared()[1]
        if len(cols) == 0:
            return np.zeros(inv.shape[0])
        # slice the query terms' posting lists (CSC columns) and multiply-add them in C++
        return np.asarray(inv[:, cols] @ vals).ravel()

    @staticmethod
    def _top(scores: np.ndarray, k: int) -> np.ndarray:
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

    def search(
        self, name: str, query: TermMap, k: int = 10, *,
        fingerprint: str | None = None, rescore: TermMap | None = None, rescore_window: int = 0,
        approximate: AnnQuery | bool = False,
    ) -> list[Hit]:
        """Exact top-k by dot product (see `Backend.search`).

        ``approximate`` (an `AnnQuery`, or True for its defaults) asks the ANN structure made by
        `build_ann` for the candidates instead (`AnnNotBuiltError` if there is none); documents
        written since the build are searched exactly and merged, deleted ones are left out,
        and scores are exact. Rescoring works the same either way. ``k`` and ``rescore_window``
        are at most `MAX_K` (`UsageError` otherwise)."""
        check_k(k)
        if rescore is not None and rescore_window:
            check_k(rescore_window, "rescore_window")
        st = self._state(name)
        if fingerprint is not None and fingerprint != st.meta["fingerprint"]:
            raise FingerprintMismatchError(name, st.meta["fingerprint"], fingerprint)
        if st.n_alive == 0:
            return []
        self._prepare(st)
        window = max(k, rescore_window) if rescore is not None and rescore_window > 0 else k
        built = self._loaded_ann(name, st) if approximate else None
        if built is not None:
            q = approximate if isinstance(approximate, AnnQuery) else AnnQuery()
            rows, final = self._ann_top(st, built, query, window, q)
        else:
            scores = self._scores(st, query)
            if st.n_alive < len(st.alive):  # some rows were overwritten or deleted
                scores[~st.prepared()[2]] = 0.0
            rows = self._top(scores, window)
            final = scores[rows].astype(np.float32)
        if rescore is not None and rescore_window > 0 and len(rows):
            n_re = min(rescore_window, len(rows))
            head = rows[:n_re]
            new = np.asarray(st.prepared()[0][head] @ self._dense(st, rescore)).ravel()
            order = np.lexsort((head, -new))
            rows = np.concatenate([head[order], rows[n_re:]])
            final = np.concatenate([new[order], final[n_re:]]).astype(np.float32)
        return [
            Hit(st.ids[r], float(s), st.fields[r]) for r, s in zip(rows[:k].tolist(), final[:k].tolist())
        ]

    def _dense(self, st: _IndexState, query: Mapping[str, float]) -> np.ndarray:
        cols, vals = self._query_vector(st, query)
        dense = np.zeros(st.prepared()[0].shape[1], dtype=np.float64)
        dense[cols] = vals
        return dense

    # ------------------------------------------------------------------ approximate search
    def build_ann(
        self, name: str, *, n_postings: int = AnnBuild.n_postings,
        centroid_fraction: float = AnnBuild.centroid_fraction,
        summary_energy: float = AnnBuild.summary_energy, threads: int = AnnBuild.threads,
    ) -> AnnInfo:
        """(Re)build the approximate-search structure of index `name` from its stored term maps
        and publish it next to the index files (see `embedded_ann`). Searches in this and other
        processes keep using the previous build until the new one is in place."""
        params = AnnBuild(n_postings, centroid_fraction, summary_energy, threads)
        with self._lock:
            store = self._state(name).store
            if store is None or store.immutable or not os.access(store.folder, os.W_OK):
                raise IndexWriteError(name, "building the ANN index", PermissionError(
                    errno.EROFS, f"{self._dir(name)} is read-only here"))
        try:
            # one build at a time per index, in every process (see embedded_ann)
            with ann.build_lock(store.folder):
                with self._lock:  # a consistent snapshot; the build itself runs without the lock
                    st = self._state(name)
                    docs, alive, generation = st.matrix(), np.asarray(st.alive, dtype=bool), st.generation
                info = ann.build(store.folder, docs, alive, generation, params)
        except OSError as e:
            raise IndexWriteError(name, "building the ANN index", e) from e
        with self._lock:
            self._anns.pop(name, None)
            self._ann_failed.pop(name, None)
            self._ann_warned = {w for w in self._ann_warned if w[0] != name}
        logger.info("index %s: ANN built over %d documents in %.1fs", name, info.n_docs, info.build_seconds)
        return info

    def ann_info(self, name: str) -> AnnInfo | None:
        """What the current ANN build of `name` covers, or None if none was built;
        `AnnDamagedError` if its ``ann.json`` cannot be used."""
        return ann.read_info(self._dir(name))

    def _loaded_ann(self, name: str, st: _IndexState) -> ann.LoadedAnn | None:
        """The ANN build to search, reloaded if another process rebuilt it; None (exact, with a
        warning) when the index was compacted since the build or the build cannot be used."""
        with self._lock:
            built = self._anns.get(name)
            if built is None or not built.current():
                self._anns.pop(name, None)
                d = self._dir(name)
                sig = ann.signature(d)
                failed = self._ann_failed.get(name)
                if failed is not None and failed[0] == sig and sig is not None:
                    return None  # the same damaged build: warned already, not loaded again
                try:
                    built = self._anns[name] = ann.LoadedAnn(d)
                except FileNotFoundError:
                    raise AnnNotBuiltError(name) from None
                except AnnDamagedError as e:  # derived: never blocks a search
                    self._ann_failed[name] = (sig, str(e))
                    self._warn_ann(name, e.reason, f"{e} (searching exactly)")
                    return None
                self._ann_failed.pop(name, None)
        info = built.info
        if info.generation != st.generation or info.n_rows > len(st.ids):
            if not built.warned_stale:
                logger.warning("%s", _stale_message(name, info, st))
                built.warned_stale = True
            return None
        return built

    def _ann_top(self, st: _IndexState, built: ann.LoadedAnn, query: Mapping[str, float], window: int,
                 q: AnnQuery) -> tuple[np.ndarray, np.ndarray]:
        """The `window` best rows: the build's candidates that are still alive, plus the rows
        written since the build, all scored exactly."""
        cols, vals = self._query_vector(st, query)
        docs, _, alive_mask = st.prepared()
        n_built = built.info.n_rows
        dead = len(st.ids) - st.n_alive  # an upper bound on the build's rows dead since
        rows = built.candidates(cols, vals, window + min(dead, max(window, 100)), q)
        if dead:
            rows = rows[alive_mask[rows]]
        dense = self._dense(st, query)
        scores = np.asarray(docs[rows] @ dense).ravel() if len(rows) else np.zeros(0)
        if n_built < len(st.ids):  # written since the build: an exact search of those rows only
            # slicing a CSR copies the rows: once per docs matrix, not once per search
            if st.fresh is None or st.fresh[0] is not docs or st.fresh[1] != n_built:
                st.fresh = (docs, n_built, docs[n_built:])
            fresh = np.asarray(st.fresh[2] @ dense).ravel()
            fresh[~alive_mask[n_built:]] = 0.0
            best = self._top(fresh, window)  # only the fresh rows that can make the window
            rows = np.concatenate([rows, best + n_built])
            scores = np.concatenate([scores, fresh[best]])
        keep = scores > 0
        rows, scores = rows[keep], scores[keep]
        order = np.lexsort((rows, -scores))[:window]  # score desc, then row asc (as exact search)
        return rows[order], scores[order].astype(np.float32)

    def get_document(self, name: str, doc_id: str) -> tuple[TermMap, dict[str, Any]]:
        """The stored term map (raw, not quantized) and fields of one document."""
        st = self._state(name)
        row = st.row_of.get(doc_id)
        if row is None:
            raise KeyError(doc_id)
        mat = st.matrix()
        r = mat[row]
        return TermMap({st.terms[c]: float(v) for c, v in zip(r.indices, r.data)}), st.fields[row]

    def document_frequencies(self, name: str, tokens: Iterable[str]) -> dict[str, float]:
        """Fraction of live documents containing each token (for FLOPS estimates)."""
        st = self._state(name)
        if st.n_alive == 0:
            return {t: 0.0 for t in tokens}
        self._prepare(st)
        _, inv, alive_mask = st.prepared()
        out: dict[str, float] = {}
        for t in tokens:
            tid = st.term_ids.get(t)
            if tid is None or tid >= inv.shape[1]:
                out[t] = 0.0
            else:
                rows = inv.indices[inv.indptr[tid]:inv.indptr[tid + 1]]
                out[t] = float(alive_mask[rows].sum()) / st.n_alive
        return out

    # ------------------------------------------------------------------ bulk build (benchmarks)
    def load_matrix(
        self, name: str, ids: list[str], matrix: sp.csr_matrix, terms: list[str], *,
        fingerprint: str, vocabulary: str | None = None,
    ) -> IndexInfo:
        """Create index `name` straight from a docs x terms CSR matrix (one transaction)."""
        if len(ids) != matrix.shape[0] or len(terms) != matrix.shape[1]:
            raise ValueError("ids/terms do not match the matrix shape")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        if len(set(terms)) != len(terms):
            raise ValueError("terms must be unique")
        data = np.asarray(matrix.data, dtype=np.float32)
        if len(data) and (not np.isfinite(data).all() or data.min() < np.finfo(np.float32).tiny):
            raise BackendError("matrix weights must be finite positive normal floats")
        self.create_index(name, fingerprint=fingerprint, vocabulary=vocabulary)
        m = sp.csr_matrix(matrix, dtype=np.float32)
        m.sort_indices()
        indptr, indices, values = m.indptr, m.indices.astype(np.int32), m.data
        with self._lock:
            store = self._state(name).store
            if store is None:  # create_index just made it: a new index is always format 2
                raise IndexWriteError(name, f"loading {len(ids)} documents", PermissionError(
                    errno.EROFS, f"{self._dir(name)} is read-only here"))
            try:
                with store.lock, store.write() as conn:
                    conn.executemany("INSERT INTO terms(id, token) VALUES (?, ?)", enumerate(terms))
                    conn.executemany(
                        "INSERT INTO ops(seq, doc_id, cols, vals, fields) VALUES (?, ?, ?, ?, '{}')",
                        ((i + 1, doc_id, indices[indptr[i]:indptr[i + 1]].tobytes(),
                          values[indptr[i]:indptr[i + 1]].tobytes()) for i, doc_id in enumerate(ids)))
            except (sqlite3.Error, OSError) as e:
                raise IndexWriteError(name, f"loading {len(ids)} documents", e) from e
            self._forget(name)
        return self.describe_index(name)


__all__ = ["AnnBuild", "AnnDamagedError", "AnnInfo", "AnnNotBuiltError", "AnnQuery", "EmbeddedBackend",
           "IndexCorruptError", "IndexWriteError", "check_index_name", "quantize_feature_values"]

