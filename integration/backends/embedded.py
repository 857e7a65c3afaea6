"""`EmbeddedBackend`: the default, server-less search backend (scipy.sparse, persisted on disk).

Layout, one folder per index under ``root_dir``::

    <root>/<index>/meta.json          name, fingerprint, vocabulary, generation (atomic replace)
    <root>/<index>/snapshot-<g>.npz   CSR matrix docs x terms (indptr, indices, data; no pickle)
    <root>/<index>/snapshot-<g>.json  row ids, stored fields, the term dictionary
    <root>/<index>/log-<g>.jsonl      append log of upserts/deletes since snapshot <g>
    <root>/<index>/.lock              fcntl lock: exclusive for writers, shared for reloads

Writes append one JSON line per operation to the current log under the exclusive lock; a
compaction (automatic when the log outgrows the snapshot, or `compact()`) writes snapshot
``g+1`` with only live rows, starts an empty ``log-<g+1>`` and swaps ``meta.json`` atomically.
Every call first checks (two ``stat``s) whether another process wrote since this object last
looked and, if so, replays the new log lines or loads the new snapshot: workers upsert in one
process and a client reads in another.

Search is exact: a CSC copy of the document matrix is the inverted index (column t = term
t's posting list); scipy slices the query terms' columns and multiplies them by the query
weights in C++ (``X[:, q_terms] @ q_weights``), dead rows (overwritten or deleted) are masked
and the top k taken with ``argpartition``. Ties are broken by insertion order, like Lucene's doc ids.
`benchmarks/search_latency.py` compares this with the other candidates.

``quantize=True`` stores document weights the way Lucene's ``FeatureField`` does (the float's
top 9 significant bits, ``bits >>> 15``, truncated), so scores equal a real OpenSearch server's:
``boost x quantized(value)``; the query weight (the boost) is not quantized.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
)
from convsparse.integration.backend import DocumentResult, Hit, IndexedDocument, IndexInfo
from convsparse.termmap import TermMap

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,254}$")
_FORMAT = 1


def _log_line(op: Mapping[str, Any]) -> bytes:
    """One append-log line. orjson (a dependency of ranx, so always installed with us) writes
    the same JSON ~6x faster than `json` (float formatting dominates a term map's line);
    anything it refuses (an integer beyond 64 bits in stored fields) goes through `json`."""
    if _orjson is not None:
        try:
            return _orjson.dumps(op) + b"\n"
        except TypeError:
            pass
    return (json.dumps(op, ensure_ascii=False) + "\n").encode("utf-8")


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - ranx brings it
    _orjson = None


def quantize_feature_values(values: np.ndarray) -> np.ndarray:
    """Lucene FeatureField storage: keep the top 9 significant bits of each float32."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    return ((v.view(np.uint32) >> np.uint32(15)) << np.uint32(15)).view(np.float32)


def check_index_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"invalid index name {name!r}: use lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (the OpenSearch rules)"
        )
    return name


@dataclass
class _IndexState:
    """One index as loaded in memory (rows are never reordered between compactions)."""

    meta: dict[str, Any]
    generation: int
    terms: list[str] = field(default_factory=list)
    term_ids: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    fields: list[dict[str, Any]] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)
    row_of: dict[str, int] = field(default_factory=dict)
    base: sp.csr_matrix | None = None  # first `base.shape[0]` rows
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    log_offset: int = 0
    log_ops: int = 0
    meta_stamp: tuple[int, int] = (0, 0)
    # search structures, rebuilt lazily
    docs: sp.csr_matrix | None = None
    inverted: sp.csr_matrix | None = None
    alive_mask: np.ndarray | None = None
    quantized: bool = False

    @property
    def n_alive(self) -> int:
        return len(self.row_of)

    def term_id(self, token: str) -> int:
        tid = self.term_ids.get(token)
        if tid is None:
            tid = len(self.terms)
            self.terms.append(token)
            self.term_ids[token] = tid
        return tid

    def add_row(self, doc_id: str, tokens: list[str], weights: list[float], fields: dict) -> None:
        old = self.row_of.get(doc_id)
        if old is not None:
            self.alive[old] = False
        get = self.term_ids.get
        ids = [get(t) for t in tokens]  # known terms: one dict lookup each, no method call
        if None in ids:
            ids = [i if i is not None else self.term_id(t) for i, t in zip(ids, tokens)]
        cols = np.asarray(ids, dtype=np.int32)
        vals = np.asarray(weights, dtype=np.float32)
        row = len(self.ids)
        self.ids.append(doc_id)
        self.fields.append(fields)
        self.alive.append(True)
        self.row_of[doc_id] = row
        self.pending.append((cols, vals))
        self.docs = self.inverted = self.alive_mask = None

    def delete_row(self, doc_id: str) -> bool:
        row = self.row_of.pop(doc_id, None)
        if row is None:
            return False
        self.alive[row] = False
        self.alive_mask = None
        return True

    def apply(self, op: Mapping[str, Any]) -> None:
        if op["op"] == "upsert":
            self.add_row(op["id"], op["t"], op["w"], op.get("f") or {})
        elif op["op"] == "delete":
            self.delete_row(op["id"])

    def matrix(self) -> sp.csr_matrix:
        """All rows (live and dead) as one CSR matrix docs x terms."""
        n_terms = len(self.terms)
        if self.base is None:
            self.base = sp.csr_matrix((0, n_terms), dtype=np.float32)
        if self.pending:
            indptr = np.zeros(len(self.pending) + 1, dtype=np.int64)
            np.cumsum([len(c) for c, _ in self.pending], out=indptr[1:])
            cols = np.concatenate([c for c, _ in self.pending]) if indptr[-1] else np.zeros(0, np.int32)
            vals = np.concatenate([v for _, v in self.pending]) if indptr[-1] else np.zeros(0, np.float32)
            extra = sp.csr_matrix((vals, cols, indptr), shape=(len(self.pending), n_terms))
            base = self.base
            base = sp.csr_matrix((base.data, base.indices, base.indptr), shape=(base.shape[0], n_terms))
            self.base = sp.vstack([base, extra], format="csr", dtype=np.float32)
            self.pending = []
        if self.base.shape[1] != n_terms:
            b = self.base
            self.base = sp.csr_matrix((b.data, b.indices, b.indptr), shape=(b.shape[0], n_terms))
        return self.base


class EmbeddedBackend:
    """In-process `Backend` persisted under ``root_dir`` (one folder per index).

    >>> import tempfile
    >>> from convsparse.termmap import TermMap
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
        compact_min_ops: int = 20_000, durable: bool = False,
    ):
        self.root = Path(root_dir).expanduser()
        self.quantize = quantize
        self.compact_ratio = compact_ratio
        self.compact_min_ops = compact_min_ops
        self.durable = durable
        self._states: dict[str, _IndexState] = {}

    def __repr__(self) -> str:
        return f"EmbeddedBackend({str(self.root)!r}, quantize={self.quantize})"

    # ------------------------------------------------------------------ files and locks
    def _dir(self, name: str) -> Path:
        return self.root / check_index_name(name)

    @contextmanager
    def _locked(self, name: str, exclusive: bool):
        d = self._dir(name)
        if not (d / "meta.json").exists():
            raise IndexNotFoundError(name)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield d
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _write_json_atomic(path: Path, obj: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        try:
            st = path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_ino)

    # ------------------------------------------------------------------ loading
    def _load(self, name: str, d: Path) -> _IndexState:
        meta_path = d / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexNotFoundError(name) from None
        gen = int(meta["generation"])
        st = _IndexState(meta=meta, generation=gen, meta_stamp=self._stamp(meta_path))
        snap = d / f"snapshot-{gen}.json"
        if snap.exists():
            info = json.loads(snap.read_text(encoding="utf-8"))
            st.terms = list(info["terms"])
            st.term_ids = {t: i for i, t in enumerate(st.terms)}
            st.ids = list(info["ids"])
            st.fields = list(info["fields"])
            st.alive = [True] * len(st.ids)
            st.row_of = {doc_id: i for i, doc_id in enumerate(st.ids)}
            with np.load(d / f"snapshot-{gen}.npz", allow_pickle=False) as z:
                st.base = sp.csr_matrix(
                    (z["data"], z["indices"], z["indptr"]), shape=(len(st.ids), len(st.terms))
                )
        self._replay(st, d)
        return st

    def _replay(self, st: _IndexState, d: Path) -> None:
        log = d / f"log-{st.generation}.jsonl"
        try:
            fh = open(log, "rb")
        except FileNotFoundError:
            return
        with fh:
            fh.seek(st.log_offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # only complete lines
        for line in chunk[:end].splitlines():
            if line.strip():
                st.apply(json.loads(line))
                st.log_ops += 1
        st.log_offset += end

    def _state(self, name: str) -> _IndexState:
        """The index as of now: reload or replay if another process (or object) wrote."""
        d = self._dir(name)
        st = self._states.get(name)
        meta_path = d / "meta.json"
        if st is not None:
            stamp = self._stamp(meta_path)
            if stamp == (0, 0):
                self._states.pop(name, None)
                raise IndexNotFoundError(name)
            log = d / f"log-{st.generation}.jsonl"
            try:
                log_size = log.stat().st_size
            except FileNotFoundError:
                log_size = 0
            if stamp == st.meta_stamp and log_size == st.log_offset:
                return st
        with self._locked(name, exclusive=False):
            if st is not None and self._stamp(meta_path) == st.meta_stamp:
                self._replay(st, d)
            else:
                st = self._load(name, d)
                self._states[name] = st
        return st

    # ------------------------------------------------------------------ index management
    def list_indices(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "meta.json").exists())

    def create_index(
        self, name: str, *, fingerprint: str, vocabulary: str | None = None, exist_ok: bool = False
    ) -> IndexInfo:
        d = self._dir(name)
        if (d / "meta.json").exists():
            if not exist_ok:
                raise IndexExistsError(name)
            info = self.describe_index(name)
            if info.fingerprint != fingerprint:
                raise FingerprintMismatchError(name, info.fingerprint, fingerprint)
            return info
        d.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "name": name, "fingerprint": fingerprint,
                "vocabulary": vocabulary, "generation": 0}
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if (d / "meta.json").exists():  # lost a race with another creator
                    if not exist_ok:
                        raise IndexExistsError(name)
                else:
                    (d / "log-0.jsonl").touch()
                    self._write_json_atomic(d / "meta.json", meta)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self._states.pop(name, None)
        return self.describe_index(name)

    def describe_index(self, name: str) -> IndexInfo:
        st = self._state(name)
        return IndexInfo(
            name=name, fingerprint=st.meta["fingerprint"], count=st.n_alive,
            vocabulary=st.meta.get("vocabulary"),
            extra={"backend": "embedded", "path": str(self._dir(name)), "terms": len(st.terms),
                   "generation": st.generation, "rows": len(st.ids), "log_ops": st.log_ops,
                   "quantize": self.quantize},
        )

    def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        d = self._dir(name)
        if not (d / "meta.json").exists():
            self._states.pop(name, None)
            if missing_ok:
                return
            raise IndexNotFoundError(name)
        with self._locked(name, exclusive=True):
            (d / "meta.json").unlink()
            for p in d.iterdir():
                if p.name != ".lock":
                    p.unlink()
        try:
            (d / ".lock").unlink()
            d.rmdir()
        except OSError:
            pass
        self._states.pop(name, None)

    def count(self, name: str) -> int:
        return self._state(name).n_alive

    # ------------------------------------------------------------------ writes
    def _append(self, name: str, ops: list[dict[str, Any]]) -> None:
        """Append operations to the log under the exclusive lock, then apply them."""
        with self._locked(name, exclusive=True) as d:
            st = self._states.get(name)
            if st is None or self._stamp(d / "meta.json") != st.meta_stamp:
                st = self._load(name, d)
                self._states[name] = st
            else:
                self._replay(st, d)
            if ops:
                data = b"".join(_log_line(op) for op in ops)
                with open(d / f"log-{st.generation}.jsonl", "ab") as fh:
                    fh.write(data)
                    fh.flush()
                    if self.durable:
                        os.fsync(fh.fileno())
                for op in ops:
                    st.apply(op)
                st.log_ops += len(ops)
                st.log_offset += len(data)
            if st.log_ops >= max(self.compact_min_ops, self.compact_ratio * len(st.ids)):
                self._compact_locked(name, d, st)

    def upsert(self, name: str, documents: Iterable[IndexedDocument]) -> Iterator[DocumentResult]:
        """Write documents (same id overwrites). Runs eagerly; yields one result per input."""
        self._state(name)  # IndexNotFoundError before reading the documents
        results: list[DocumentResult] = []
        ops: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for doc in documents:
            doc_id = getattr(doc, "id", None)
            if not isinstance(doc_id, str) or not doc_id:
                results.append(DocumentResult(str(doc_id), False, 400, "document id must be a non-empty string"))
                continue
            tm = getattr(doc, "term_map", None)
            if not isinstance(tm, TermMap):
                results.append(DocumentResult(doc_id, False, 400, "term_map must be a TermMap"))
                continue
            try:
                fields = json.loads(json.dumps(dict(doc.fields or {}), ensure_ascii=False, allow_nan=False))
            except (TypeError, ValueError) as e:
                results.append(DocumentResult(doc_id, False, 400, f"fields are not JSON-serialisable: {e}"))
                continue
            tokens, weights = tm.tokens_and_weights()  # CSR-backed maps: straight from arrays
            ops.append({"op": "upsert", "id": doc_id, "t": tokens, "w": weights, "f": fields})
            seen[doc_id] = len(results)
            results.append(DocumentResult(doc_id, True, 200))
        self._append(name, ops)
        return iter(results)

    def delete_documents(self, name: str, ids: Iterable[str]) -> Iterator[DocumentResult]:
        st = self._state(name)
        results, ops = [], []
        present = set(st.row_of)
        for doc_id in ids:
            if doc_id in present:
                ops.append({"op": "delete", "id": doc_id})
                present.discard(doc_id)
                results.append(DocumentResult(doc_id, True, 200))
            else:
                results.append(DocumentResult(doc_id, False, 404, "not found"))
        self._append(name, ops)
        return iter(results)

    def compact(self, name: str) -> None:
        """Rewrite the index without dead rows and start an empty log."""
        with self._locked(name, exclusive=True) as d:
            st = self._load(name, d)
            self._compact_locked(name, d, st)

    def _compact_locked(self, name: str, d: Path, st: _IndexState) -> None:
        mat = st.matrix()
        rows = np.flatnonzero(np.asarray(st.alive, dtype=bool))
        live = mat[rows]
        live.sort_indices()
        # drop terms no live document uses any more
        used = np.unique(live.indices)
        remap = np.full(len(st.terms), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        terms = [st.terms[i] for i in used]
        live = sp.csr_matrix(
            (live.data.astype(np.float32), remap[live.indices].astype(np.int32), live.indptr.astype(np.int64)),
            shape=(len(rows), len(terms)),
        )
        gen = st.generation + 1
        np.savez(d / f"snapshot-{gen}.npz", indptr=live.indptr, indices=live.indices, data=live.data)
        self._write_json_atomic(
            d / f"snapshot-{gen}.json",
            {"terms": terms, "ids": [st.ids[i] for i in rows], "fields": [st.fields[i] for i in rows]},
        )
        (d / f"log-{gen}.jsonl").touch()
        meta = dict(st.meta, generation=gen)
        self._write_json_atomic(d / "meta.json", meta)
        for old in (f"snapshot-{st.generation}.npz", f"snapshot-{st.generation}.json",
                    f"log-{st.generation}.jsonl"):
            try:
                (d / old).unlink()
            except FileNotFoundError:
                pass
        self._states[name] = self._load(name, d)

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
            st.inverted = inv
            st.quantized = self.quantize
        if st.alive_mask is None:
            st.alive_mask = np.asarray(st.alive, dtype=bool)

    def _query_vector(self, st: _IndexState, query: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Column ids and weights (float32, like Lucene's boosts) of the query's known terms."""
        get = st.term_ids.get
        cols = np.fromiter((get(t, -1) for t in query), dtype=np.int64, count=len(query))
        vals = np.fromiter(query.values(), dtype=np.float32, count=len(query))
        keep = (cols >= 0) & (cols < st.inverted.shape[1])
        if not keep.all():
            cols, vals = cols[keep], vals[keep]
        return cols, vals

    def _scores(self, st: _IndexState, query: Mapping[str, float]) -> np.ndarray:
        cols, vals = self._query_vector(st, query)
        inv = st.inverted
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
    ) -> list[Hit]:
        """Exact top-k by dot product (see `Backend.search`)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        st = self._state(name)
        if fingerprint is not None and fingerprint != st.meta["fingerprint"]:
            raise FingerprintMismatchError(name, st.meta["fingerprint"], fingerprint)
        if st.n_alive == 0:
            return []
        self._prepare(st)
        window = max(k, rescore_window) if rescore is not None and rescore_window > 0 else k
        scores = self._scores(st, query)
        if st.n_alive < len(st.alive):  # some rows were overwritten or deleted
            scores[~st.alive_mask] = 0.0
        rows = self._top(scores, window)
        final = scores[rows].astype(np.float32)
        if rescore is not None and rescore_window > 0 and len(rows):
            n_re = min(rescore_window, len(rows))
            head = rows[:n_re]
            cols, vals = self._query_vector(st, rescore)
            dense = np.zeros(st.docs.shape[1], dtype=np.float64)
            dense[cols] = vals
            new = np.asarray(st.docs[head] @ dense).ravel()
            order = np.lexsort((head, -new))
            rows = np.concatenate([head[order], rows[n_re:]])
            final = np.concatenate([new[order], scores[rows[n_re:]]]).astype(np.float32)
        return [
            Hit(st.ids[r], float(s), st.fields[r]) for r, s in zip(rows[:k].tolist(), final[:k].tolist())
        ]

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
        inv = st.inverted
        out = {}
        for t in tokens:
            tid = st.term_ids.get(t)
            if tid is None or tid >= inv.shape[1]:
                out[t] = 0.0
            else:
                rows = inv.indices[inv.indptr[tid]:inv.indptr[tid + 1]]
                out[t] = float(st.alive_mask[rows].sum()) / st.n_alive
        return out

    # ------------------------------------------------------------------ bulk build (benchmarks)
    def load_matrix(
        self, name: str, ids: list[str], matrix: sp.csr_matrix, terms: list[str], *,
        fingerprint: str, vocabulary: str | None = None,
    ) -> IndexInfo:
        """Create index `name` straight from a docs x terms CSR matrix (no per-doc log)."""
        if len(ids) != matrix.shape[0] or len(terms) != matrix.shape[1]:
            raise ValueError("ids/terms do not match the matrix shape")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        data = np.asarray(matrix.data, dtype=np.float32)
        if len(data) and (not np.isfinite(data).all() or data.min() < np.finfo(np.float32).tiny):
            raise BackendError("matrix weights must be finite positive normal floats")
        self.create_index(name, fingerprint=fingerprint, vocabulary=vocabulary)
        with self._locked(name, exclusive=True) as d:
            m = sp.csr_matrix(matrix, dtype=np.float32)
            m.sort_indices()
            np.savez(d / "snapshot-1.npz", indptr=m.indptr.astype(np.int64),
                     indices=m.indices.astype(np.int32), data=m.data)
            self._write_json_atomic(d / "snapshot-1.json",
                                    {"terms": list(terms), "ids": list(ids), "fields": [{}] * len(ids)})
            (d / "log-1.jsonl").touch()
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            meta["generation"] = 1
            self._write_json_atomic(d / "meta.json", meta)
            (d / "log-0.jsonl").unlink(missing_ok=True)
            self._states[name] = self._load(name, d)
        return self.describe_index(name)


__all__ = ["EmbeddedBackend", "check_index_name", "quantize_feature_values"]

