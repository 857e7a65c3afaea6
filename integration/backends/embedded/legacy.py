"""Format 1 of the embedded backend (snapshot + JSON-lines append log): read it, convert it once.

Format 1 (until issue 13), one folder per index::

    meta.json           name, fingerprint, vocabulary, generation
    snapshot-<g>.npz    CSR matrix docs x terms (indptr, indices, data)
    snapshot-<g>.json   row ids, stored fields, the term dictionary
    log-<g>.jsonl       one JSON line per upsert/delete since snapshot <g>
    .lock               fcntl lock

`read_legacy` loads it without writing anything (a shared lock on a read-only descriptor) and
survives the damage a full disk did to it: a torn last line is dropped, and a line where a
later append was glued onto a torn one (the ``JSONDecodeError`` of issue 13) yields the
complete record it ends with. `migrate` writes the live documents, in their row order, into a
new SQLite store (`convsparse.integration.backends.embedded.store`) under a temporary name,
fsyncs it and renames it into place: a crash at any point leaves either the old layout or the
new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convsparse.integration.backends.embedded import store as store_mod
from convsparse.integration.backends.embedded.faults import fault_point

logger = logging.getLogger(__name__)

_OP_START = b'{"op": '


@dataclass
class LegacyIndex:
    meta: dict[str, Any]
    # live documents in row order: (id, tokens, weights, fields)
    docs: list[tuple[str, list[str], list[float], dict[str, Any]]] = field(default_factory=list)
    torn_lines: int = 0
    recovered_records: int = 0


def is_legacy(folder: Path) -> bool:
    return (folder / "meta.json").exists() and not store_mod.is_store(folder)


@contextmanager
def _shared_lock(folder: Path) -> Iterator[None]:
    try:
        fd = os.open(folder / ".lock", os.O_RDONLY)
    except OSError:  # no lock file (or unreadable): read-only media, nobody can write
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def parse_log(data: bytes) -> tuple[list[dict[str, Any]], int, int]:
    """(operations, torn lines dropped, records recovered from glued lines) of a format-1 log."""
    ops: list[dict[str, Any]] = []
    torn = recovered = 0
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        torn += 1  # an append cut before its newline
    decoder = json.JSONDecoder()
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            ops.append(json.loads(line))
            continue
        except ValueError:
            pass
        torn += 1
        # A torn record followed by a complete one on the same line: JSON escapes every quote
        # inside a string, so '{"op": ' can only start a record.
        pos = line.find(_OP_START, 1)
        while pos > 0:
            try:
                text = line[pos:].decode("utf-8")
                op, end = decoder.raw_decode(text)
                if not text[end:].strip() and isinstance(op, dict) and "op" in op:
                    ops.append(op)
                    recovered += 1
                    break
            except ValueError:
                pass
            pos = line.find(_OP_START, pos + 1)
    return ops, torn, recovered


def read_legacy(folder: Path, *, lock: bool = True) -> LegacyIndex:
    """The live documents of a format-1 index (never writes). `lock=False` when the caller
    already holds the exclusive lock."""
    with _shared_lock(folder) if lock else _no_lock():
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        gen = int(meta["generation"])
        rows: dict[str, tuple[int, list[str], list[float], dict[str, Any]]] = {}
        n = 0
        snap = folder / f"snapshot-{gen}.json"
        if snap.exists():
            info = json.loads(snap.read_text(encoding="utf-8"))
            terms = info["terms"]
            with np.load(folder / f"snapshot-{gen}.npz", allow_pickle=False) as z:
                indptr, indices, data = z["indptr"], z["indices"], z["data"]
            for i, (doc_id, fields) in enumerate(zip(info["ids"], info["fields"])):
                a, b = int(indptr[i]), int(indptr[i + 1])
                rows[doc_id] = (n, [terms[c] for c in indices[a:b]],
                                data[a:b].astype(np.float64).tolist(), fields)
                n += 1
        log = folder / f"log-{gen}.jsonl"
        ops, torn, recovered = parse_log(log.read_bytes() if log.exists() else b"")
    for op in ops:
        if op.get("op") == "upsert":
            rows.pop(op["id"], None)
            rows[op["id"]] = (n, list(op["t"]), [float(w) for w in op["w"]], op.get("f") or {})
            n += 1
        elif op.get("op") == "delete":
            rows.pop(op["id"], None)
    out = LegacyIndex(meta=meta, torn_lines=torn, recovered_records=recovered)
    out.docs = [(doc_id, t, w, f) for doc_id, (_, t, w, f) in sorted(rows.items(), key=lambda x: x[1][0])]
    if torn:
        logger.warning("index %s: %d damaged log line(s) (a write cut by a full disk?); "
                       "%d complete record(s) recovered from them", folder.name, torn, recovered)
    return out


def legacy_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir()
            if p.name == "meta.json" or p.name.startswith(("snapshot-", "log-", ".meta.json."))]


def migrate(folder: Path, *, durable: bool = True) -> bool:
    """Convert a format-1 index to the SQLite store in place; False if another process did it
    first. Raises `OSError`/`sqlite3.Error` when the folder cannot be written (read it with
    `read_legacy` then)."""
    import sqlite3

    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if store_mod.is_store(folder):
            return False
        legacy = read_legacy(folder, lock=False)
        tmp = folder / f".{store_mod.DB_NAME}.migrating"
        for leftover in folder.glob(f".{store_mod.DB_NAME}.migrating*"):
            leftover.unlink()
        meta = legacy.meta
        store_meta = store_mod.encode_meta({
            "format": store_mod.FORMAT, "name": meta.get("name") or folder.name,
            "fingerprint": meta["fingerprint"], "vocabulary": meta.get("vocabulary"),
            "generation": 0, "migrated_from": 1})
        store_mod.create_file(tmp)
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            # a fresh file written in one go: a rollback journal (no WAL) so that the renamed
            # file is complete on its own; the store switches to WAL when opened for writing
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            conn.execute("BEGIN IMMEDIATE")
            store_mod.create_tables(conn)
            conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(store_meta.items()))
            term_ids: dict[str, int] = {}
            for _, tokens, _, _ in legacy.docs:
                for t in tokens:
                    if t not in term_ids:
                        term_ids[t] = len(term_ids)
            conn.executemany("INSERT INTO terms(id, token) VALUES (?, ?)",
                             ((i, t) for t, i in term_ids.items()))
            fault_point("migrate:terms")
            conn.executemany(
                "INSERT INTO ops(seq, doc_id, cols, vals, fields) VALUES (?, ?, ?, ?, ?)",
                ((seq, doc_id, np.asarray([term_ids[t] for t in tokens], dtype=np.int32).tobytes(),
                  np.asarray(weights, dtype=np.float32).tobytes(),
                  json.dumps(fields, ensure_ascii=False))
                 for seq, (doc_id, tokens, weights, fields) in enumerate(legacy.docs, 1)))
            fault_point("migrate:commit")
            conn.execute("COMMIT")
        finally:
            conn.close()
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fault_point("migrate:rename")
        os.replace(tmp, folder / store_mod.DB_NAME)
        store_mod.fsync_dir(folder)
        fault_point("migrate:cleanup")
        for p in legacy_files(folder):  # meta.json last: until then the folder still reads
            if p.name != "meta.json":
                p.unlink(missing_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
    logger.info("index %s: converted from the format-1 layout (%d documents)",
                folder.name, len(legacy.docs))
    return True


__all__ = ["LegacyIndex", "is_legacy", "legacy_files", "migrate", "parse_log", "read_legacy"]
