"""`EmbeddedBackend`: the default, server-less search backend, composed of the package's parts.

One folder per index under ``root_dir``; the store of record is ``index.sqlite`` (`store`: its
tables, its fsync policy and why SQLite): a batch of upserts or deletes is one transaction, all
or nothing, and a failed write (full disk, I/O error, read-only file system) raises
`IndexWriteError` and leaves every batch acknowledged before it readable. A damaged database
(not a database, malformed, truncated, rows that do not decode) raises `IndexCorruptError` on
every call, one line naming the fix (restore the folder, or `convsparse index delete NAME`,
which reads nothing from it); see ``docs/guides/embedded-store-faults.md``. Indices written by
format 1 (snapshot + JSON-lines log) are converted on first open, or read as they are where the
folder cannot be written (`legacy`).

What is searched is an in-memory copy of the store (`cache`), brought up to date at the start
of every call; opening an index for search never needs write access (a ``mode=ro``
connection). Search itself is `search` (exact by default); approximate search is opt-in:
`EmbeddedBackend.build_ann` derives a SEISMIC index from the stored term maps, and
``search(..., approximate=AnnQuery(...))`` uses it, merged with an exact search of the rows
written since the build (`ann`).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
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
from convsparse.integration.backends.base import (
    DocumentResult,
    Hit,
    IndexedDocument,
    IndexInfo,
    check_k,
    indexed_document,
)
from convsparse.integration.backends.embedded import ann, legacy, search
from convsparse.integration.backends.embedded import store as store_mod
from convsparse.integration.backends.embedded.ann import AnnBuild, AnnInfo, AnnQuery
from convsparse.integration.backends.embedded.cache import IndexCache, catch_up, store_rows
from convsparse.integration.backends.embedded.faults import fault_point
from convsparse.integration.backends.embedded.store import (
    FORMAT,
    IndexCorruptError,
    IndexStore,
    IndexWriteError,
    is_corruption,
    is_store,
    read_error,
)
from convsparse.integration.vectors import (
    META_KEY,
    DocumentVectors,
    VectorSpec,
    VectorSpecMismatchError,
)
from convsparse.termmap import TermMap

__all__ = ["EmbeddedBackend", "check_index_name"]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,254}$")


def check_index_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidIndexNameError(
            f"invalid index name {name!r}: use lowercase letters, digits, '-', '_' or '.', "
            "starting with a letter or digit (the OpenSearch rules)"
        )
    return name


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


class EmbeddedBackend:
    """In-process `Backend` persisted under ``root_dir`` (one folder per index).

    ``durable=True`` (the default) fsyncs every committed batch (SQLite ``synchronous=FULL``);
    ``durable=False`` survives a crash of the process but may lose the last batches on power
    loss. See `convsparse.integration.backends.embedded.store`.

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
        compact_min_ops: int = 20_000, durable: bool = True,
    ):
        self.root = Path(root_dir).expanduser()
        self.quantize = quantize
        self.compact_ratio = compact_ratio
        self.compact_min_ops = compact_min_ops
        self.durable = durable
        self._states: dict[str, IndexCache] = {}
        self._anns = ann.AnnBuilds()
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
            self._anns.unload()

    # ------------------------------------------------------------------ opening
    def _dir(self, name: str) -> Path:
        return self.root / check_index_name(name)

    def _forget(self, name: str) -> None:
        self._anns.forget(name)
        st = self._states.pop(name, None)
        if st is not None and st.store is not None:
            st.store.close()

    def _open(self, name: str) -> IndexCache:
        d = self._dir(name)
        if not is_store(d) and legacy.is_legacy(d):
            try:
                legacy.migrate(d, durable=self.durable)
            except (OSError, sqlite3.Error) as e:
                if is_store(d):
                    raise
                logger.warning("index %s is in the format-1 layout and its folder cannot be "
                               "written (%s): reading it as it is, read-only", name, e)
                old = legacy.read_legacy(d)
                return IndexCache.from_documents(old.meta, old.docs)
        try:
            store = IndexStore(d, durable=self.durable)
        except FileNotFoundError:
            raise IndexNotFoundError(name) from None
        try:
            with store.lock:
                dv = store.data_version()
                with store.read() as conn:
                    st = catch_up(conn, None, store)
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

    def _state(self, name: str) -> IndexCache:
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
                                st = catch_up(conn, st, store)
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
                   "ann": self._anns.status(name, d, st.generation, len(st.ids)),
                   META_KEY: st.meta.get(META_KEY)},
        )

    def delete_index(self, name: str, *, missing_ok: bool = False) -> None:
        d = self._dir(name)
        with self._lock:
            self._forget(name)
            if not is_store(d) and not (d / "meta.json").exists():
                if missing_ok:
                    return
                raise IndexNotFoundError(name)
            store_mod.remove_folder(d)

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
                    fault_point("write:begin")
                    st = catch_up(conn, st, store)
                    first_seq = max(store_mod.last_seq(conn), st.last_seq)
                    lens, cols, vals, new_terms = store_rows(
                        st, [tm for _, tm, _ in ops if tm is not None])
                    # one blob per document: slices of the batch's two arrays
                    rows = store_mod.op_rows(ops, first_seq, lens, cols, vals)
                    seq = first_seq + len(ops)
                    if new_terms:
                        store_mod.insert_terms(conn, ((i, t) for t, i in new_terms.items()))
                    fault_point("write:terms")
                    store_mod.insert_ops(conn, rows)
                    fault_point("write:ops")
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
            st.apply_batch(ops, new_terms, lens, cols, vals, first_seq, seq)
            self._states[name] = st
            fault_point("write:applied")
            if st.n_dead and st.n_dead >= max(self.compact_min_ops, self.compact_ratio * len(st.ids)):
                self._compact(name, st)

    # ------------------------------------------------------------------ passage vectors
    @staticmethod
    def _write_vectors(conn: sqlite3.Connection, name: str, st: IndexCache,
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
        deleted = [doc_id for doc_id, tm, _ in ops if tm is None]
        if deleted:
            store_mod.delete_vectors(conn, deleted)
        if vectors:
            store_mod.write_vectors(conn, vectors)
        fault_point("write:vectors")

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
                    st = catch_up(conn, st, store)
                    held = VectorSpec.from_dict(st.meta.get(META_KEY))
                    if held == spec:
                        return
                    if held is not None and not replace:
                        raise VectorSpecMismatchError(name, held, spec)
                    store_mod.start_vectors(conn, META_KEY, spec.to_dict())
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
            rows = store_mod.read_vectors(conn, ids)
        out = {}
        for doc_id, blob in rows:
            try:
                out[doc_id] = DocumentVectors.from_bytes(blob, spec.dimension)
            except ValueError as e:
                logger.warning("index %s: stored vectors of %r unreadable (%s); embedded again",
                               name, doc_id, e)
        return out

    def passage_sample(self, name: str, limit: int) -> list[str]:
        """Up to `limit` live documents' passages, evenly spaced over the rows (ingest order)."""
        from convsparse.documents import document_text

        st = self._state(name)
        if limit <= 0:
            return []
        rows = np.flatnonzero(np.asarray(st.alive, bool))
        if len(rows) > limit:
            rows = rows[np.linspace(0, len(rows) - 1, limit).round().astype(np.int64)]
        out = []
        for row in rows.tolist():
            fields = st.fields[row]
            text = fields.get("text")
            if isinstance(text, str):
                out.append(document_text(fields.get("title"), text))
        return out

    def passages_to_embed(self, name: str) -> Iterator[tuple[str, str]]:
        from convsparse.documents import document_text
        from convsparse.integration.vectors import text_key

        st = self._state(name)
        if META_KEY not in st.meta or st.store is None:
            return
        with st.store.lock, st.store.read() as conn:
            have = store_mod.vector_keys(conn)
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
                    st = catch_up(conn, st, store)
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
                    store_mod.write_vectors(conn, rows)
                    fault_point("vectors:put")
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

    def _compact(self, name: str, st: IndexCache) -> None:
        store = st.store
        if store is None:
            return
        try:
            with store.lock, store.write() as conn:
                fault_point("compact:begin")
                catch_up(conn, st, store)
                store_mod.drop_dead_ops(conn)
                fault_point("compact:delete")
                store_mod.set_generation(conn, st.generation + 1)
                fault_point("compact:meta")
        except (sqlite3.Error, OSError) as e:
            if isinstance(e, sqlite3.Error) and is_corruption(e):
                self._forget(name)
                raise IndexCorruptError(name, store.path, str(e)) from e
            raise IndexWriteError(name, "compaction", e) from e
        self._forget(name)
        self._states[name] = self._open(name)

    # ------------------------------------------------------------------ search
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
        search.prepare(st, self.quantize)
        window = max(k, rescore_window) if rescore is not None and rescore_window > 0 else k
        built = self._loaded_ann(name, st) if approximate else None
        if built is not None:
            q = approximate if isinstance(approximate, AnnQuery) else AnnQuery()
            rows, final = search.ann_top(st, built, query, window, q)
        else:
            rows, final = search.exact_top(st, query, window)
        if rescore is not None and rescore_window > 0 and len(rows):
            rows, final = search.rescore(st, rows, final, rescore, rescore_window)
        return search.hits(st, rows, final, k)

    # ------------------------------------------------------------------ approximate search
    def build_ann(
        self, name: str, *, n_postings: int = AnnBuild.n_postings,
        centroid_fraction: float = AnnBuild.centroid_fraction,
        summary_energy: float = AnnBuild.summary_energy, threads: int = AnnBuild.threads,
    ) -> AnnInfo:
        """(Re)build the approximate-search structure of index `name` from its stored term maps
        and publish it next to the index files (see `ann`). Searches in this and other
        processes keep using the previous build until the new one is in place."""
        params = AnnBuild(n_postings, centroid_fraction, summary_energy, threads)
        with self._lock:
            store = self._state(name).store
            if store is None or store.immutable or not os.access(store.folder, os.W_OK):
                raise IndexWriteError(name, "building the ANN index", PermissionError(
                    errno.EROFS, f"{self._dir(name)} is read-only here"))
        try:
            # one build at a time per index, in every process (see ann.build_lock)
            with ann.build_lock(store.folder):
                with self._lock:  # a consistent snapshot; the build itself runs without the lock
                    st = self._state(name)
                    docs, alive, generation = st.matrix(), np.asarray(st.alive, dtype=bool), st.generation
                info = ann.build(store.folder, docs, alive, generation, params)
        except OSError as e:
            raise IndexWriteError(name, "building the ANN index", e) from e
        with self._lock:
            self._anns.rebuilt(name)
        logger.info("index %s: ANN built over %d documents in %.1fs", name, info.n_docs, info.build_seconds)
        return info

    def ann_info(self, name: str) -> AnnInfo | None:
        """What the current ANN build of `name` covers, or None if none was built;
        `AnnDamagedError` if its ``ann.json`` cannot be used."""
        return ann.read_info(self._dir(name))

    def _loaded_ann(self, name: str, st: IndexCache) -> ann.LoadedAnn | None:
        """The ANN build to search, reloaded if another process rebuilt it; None (exact, with a
        warning) when the index was compacted since the build or the build cannot be used."""
        with self._lock:
            built = self._anns.load(name, self._dir(name))
        if built is None:
            return None
        info = built.info
        if not ann.covers(info, st.generation, len(st.ids)):
            if not built.warned_stale:
                logger.warning("%s", ann.stale_message(name, info, st.generation))
                built.warned_stale = True
            return None
        return built

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
        search.prepare(st, self.quantize)
        return search.document_frequencies(st, tokens)

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
                    store_mod.insert_terms(conn, enumerate(terms))
                    store_mod.insert_ops(conn, (
                        (i + 1, doc_id, indices[indptr[i]:indptr[i + 1]].tobytes(),
                         values[indptr[i]:indptr[i + 1]].tobytes(), "{}") for i, doc_id in enumerate(ids)))
            except (sqlite3.Error, OSError) as e:
                raise IndexWriteError(name, f"loading {len(ids)} documents", e) from e
            self._forget(name)
        return self.describe_index(name)
