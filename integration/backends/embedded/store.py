"""The embedded backend's store of record: one SQLite database per index (format 2).

``<root>/<index>/index.sqlite`` (plus SQLite's ``-wal`` and ``-shm`` while it is open)::

    meta(key, value)                      format, name, fingerprint, vocabulary, generation
    terms(id, token)                      the term dictionary; ids are never reused
    ops(seq, doc_id, cols, vals, fields)  one row per upsert (cols int32 term ids, vals float32,
                                          fields JSON) or delete (cols NULL), in commit order
    vectors(doc_id, data)                 the re-ranker's passage vectors of each live document
                                          (`integration.vectors.DocumentVectors.to_bytes`), only
                                          in an index whose meta records ``rerank_vectors``;
                                          written and deleted in the transaction of its ops row

Why SQLite and not a log of our own: its commit is atomic (a batch is one transaction, all or
nothing), a failed write (``SQLITE_FULL``, ``SQLITE_IOERR``, a read-only file system) rolls
back and leaves the database exactly as it was, and its own test suite simulates I/O errors,
full disks and power loss at every write. The CSR/CSC matrices `EmbeddedBackend` searches are a
derived cache, rebuilt in memory from ``ops`` (`convsparse.integration.backends.embedded.cache`:
``seq`` tells a reader what it has already seen; a compaction bumps ``generation``, which tells
it to reload).

Every SQL statement on the store is here: the backend calls these functions inside one
`IndexStore.write` (or `IndexStore.read`) transaction and never writes SQL of its own.

Durability (the fsync policy): the database runs in WAL mode with ``synchronous=FULL`` by
default, so ``COMMIT`` returns only after the write-ahead log is fsynced: an acknowledged batch
(and a Celery chunk, acknowledged after its upsert returned) survives a crash or power loss.
``durable=False`` selects ``synchronous=NORMAL``: commits survive a crash of the process but
the last ones may be lost on power loss (no fsync per commit; see
`benchmarks/results/embedded_store.md` for what the fsync costs). New files are created with
mode 0666 minus the umask (SQLite's ``-wal``/``-shm`` copy the database's mode), and the
folder is fsynced after the database file is created.

Reading never needs write access: searches use a second connection opened
``file:...?mode=ro`` (SQLite's shared locks on a read-only descriptor), and on read-only media
where SQLite cannot create its ``-shm`` file, ``immutable=1`` (then nothing can change the file).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from convsparse.errors import BackendError
from convsparse.integration.backends.embedded.faults import fault_point

FORMAT = 2
DB_NAME = "index.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    cols BLOB,
    vals BLOB,
    fields TEXT
);
"""
#: created when an index starts holding passage vectors (older files lack it)
_VECTORS_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (doc_id TEXT PRIMARY KEY, data BLOB NOT NULL)"

#: one stored operation: (seq, doc_id, cols, vals, fields); cols/vals/fields None for a delete
OpRow = tuple[int, str, bytes | None, bytes | None, str | None]


class IndexWriteError(BackendError):
    """A write to an embedded index failed and was rolled back; earlier batches are intact."""

    def __init__(self, index: str, what: str, cause: BaseException):
        self.index = index
        self.cause = cause
        reason = f"{type(cause).__name__}: {cause}"
        hint = _hint(cause)
        super().__init__(
            f"index {index!r}: {what} failed and was rolled back (nothing of it is stored; "
            f"everything acknowledged before is intact): {reason}; {hint}"
        )


class IndexCorruptError(BackendError):
    """The store of an embedded index is damaged (not a database, malformed, truncated, or
    its rows do not decode): nothing can be read from it. The message names the fix."""

    def __init__(self, index: str, path: Path, reason: str):
        self.index = index
        self.path = path
        super().__init__(
            f"index {index!r} is damaged: {path} cannot be read ({reason}); restore the folder "
            f"{path.parent} from a backup, or delete the index with `convsparse index delete "
            f"{index}` and ingest its documents again")


#: SQLite's primary result codes that mean the file itself is damaged (sqlite3.h)
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def is_corruption(error: BaseException) -> bool:
    """Whether a sqlite3 error says the database file is damaged (not a passing condition such
    as a lock, a full disk or a read-only folder)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(error).lower()
    return "malformed" in text or "not a database" in text


def read_error(index: str, path: Path, error: BaseException) -> BackendError:
    """The one-line error for a failed read of an index's store: `IndexCorruptError` when the
    file is damaged, else a `BackendError` naming the file and what to check."""
    if isinstance(error, (ValueError, KeyError, TypeError)) or (
            isinstance(error, sqlite3.Error) and is_corruption(error)):
        return IndexCorruptError(index, path, str(error) or type(error).__name__)
    return BackendError(
        f"index {index!r}: cannot read {path} ({type(error).__name__}: {error}); check the disk "
        "(dmesg) and the folder's permissions and retry; if the file is damaged, restore it from "
        f"a backup or delete the index with `convsparse index delete {index}`")


def _hint(cause: BaseException) -> str:
    # the codes first: the message's text includes the path, and an index may be named "full"
    code = getattr(cause, "errno", None)
    sqlite_code = getattr(cause, "sqlite_errorcode", None)
    primary = sqlite_code & 0xFF if sqlite_code is not None else None
    if code == errno.ENOSPC or primary == 13:  # SQLITE_FULL
        return "free disk space (or raise the quota) and re-run: finished batches are kept"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or primary == 8 or (  # SQLITE_READONLY
            code is None and isinstance(cause, PermissionError)):
        return "the index folder is read-only here: write from a host that can write it"
    if code is None and primary is None:
        text = str(cause).lower()
        if "database or disk is full" in text or "no space left" in text:
            return "free disk space (or raise the quota) and re-run: finished batches are kept"
        if "readonly" in text or "read-only" in text:
            return "the index folder is read-only here: write from a host that can write it"
    return "check the disk (dmesg) and re-run: finished batches are kept"


def create_file(path: Path) -> bool:
    """Create an empty file with mode 0666 minus the umask; False if it already existed."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a created or renamed file) durable.

    Best effort: if the folder cannot be opened, or the file system refuses fsync on a
    directory (some do), it returns without error; the entries are then as durable as the
    file system makes them."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


class IndexStore:
    """The SQLite database of one index: a lazily opened writer and a read-only reader.

    Connections are opened per process (a forked Celery child reopens them) and used under
    `lock` (they are shared between threads)."""

    def __init__(self, folder: Path, *, durable: bool = True):
        self.folder = folder
        self.path = folder / DB_NAME
        self.durable = durable
        self.lock = threading.RLock()
        self.immutable = False
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._pid = os.getpid()
        st = self.path.stat()
        self.inode = (st.st_dev, st.st_ino)

    # ------------------------------------------------------------------ connections
    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # never use a connection across fork()
            self._reader = self._writer = None
            self._pid = os.getpid()

    def reader(self) -> sqlite3.Connection:
        self._check_fork()
        if self._reader is None:
            uri = self.path.resolve().as_uri()
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
                self.immutable = False
            except sqlite3.OperationalError as e:
                conn.close()
                if "no such table" in str(e):
                    raise
                # read-only media: SQLite cannot create the -shm it needs for WAL reads
                conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                                       isolation_level=None, check_same_thread=False)
                conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
                self.immutable = True
            self._reader = conn
        return self._reader

    def writer(self) -> sqlite3.Connection:
        self._check_fork()
        if self._writer is None:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                   timeout=60.0)
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
                conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            except sqlite3.Error:
                conn.close()
                raise
            self._writer = conn
        return self._writer

    def data_version(self) -> int:
        version: int = self.reader().execute("PRAGMA data_version").fetchone()[0]
        return version

    def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
        self._reader = self._writer = None

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot (one read transaction) on the read-only connection."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers in every process take turns);
        committed at the end, rolled back if anything raises."""
        conn = self.writer()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            fault_point("write:commit")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. SQLITE_FULL during COMMIT)
            raise

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: Path, meta: dict[str, Any], *, durable: bool = True) -> tuple[IndexStore, bool]:
        """Create (or open) the database and write `meta` unless an index is already there;
        returns (store, created)."""
        folder.mkdir(parents=True, exist_ok=True)
        new_file = create_file(folder / DB_NAME)
        store = cls(folder, durable=durable)
        conn = store.writer()
        created = False
        with store.write():
            create_tables(conn)
            if conn.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone() is None:
                conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                 sorted(encode_meta(meta).items()))
                created = True
        if new_file:
            fsync_dir(folder)
        return store, created


def create_tables(conn: sqlite3.Connection) -> None:
    """The tables of a new store (those missing), in the caller's transaction."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def encode_meta(meta: dict[str, Any]) -> dict[str, str]:
    """Meta values are stored as JSON text (None, numbers and strings round-trip)."""
    return {k: json.dumps(v, ensure_ascii=False) for k, v in meta.items()}


def decode_meta(rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in rows}


def is_store(folder: Path) -> bool:
    return (folder / DB_NAME).exists()


# ---------------------------------------------------------------------- reading
def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return decode_meta(conn.execute("SELECT key, value FROM meta").fetchall())


def read_terms(conn: sqlite3.Connection, first_id: int) -> list[tuple[int, str]]:
    """(id, token) of the terms from id `first_id` on, in id order."""
    rows: list[tuple[int, str]] = conn.execute(
        "SELECT id, token FROM terms WHERE id >= ? ORDER BY id", (first_id,)).fetchall()
    return rows


def read_ops(conn: sqlite3.Connection, after_seq: int) -> list[OpRow]:
    """The operations committed after `after_seq`, in commit order."""
    rows: list[OpRow] = conn.execute(
        "SELECT seq, doc_id, cols, vals, fields FROM ops WHERE seq > ? ORDER BY seq",
        (after_seq,)).fetchall()
    return rows


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest seq ever given to an operation (compacted ones included)."""
    seq: int = conn.execute(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name='ops'), 0)").fetchone()[0]
    return seq


def read_vectors(conn: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[str, bytes]]:
    """(doc_id, blob) of the documents `ids` that have stored vectors."""
    rows: list[tuple[str, bytes]] = conn.execute(
        f"SELECT doc_id, data FROM vectors WHERE doc_id IN ({','.join('?' * len(ids))})",
        list(ids)).fetchall()
    return rows


def vector_keys(conn: sqlite3.Connection) -> dict[str, str]:
    """doc_id -> the text key (hex, upper case) its stored vectors were made under."""
    return dict(conn.execute("SELECT doc_id, hex(substr(data, 1, 12)) FROM vectors"))


# ---------------------------------------------------------------------- writing
def op_rows(ops: Sequence[tuple[str, object | None, str | None]], first_seq: int,
            lens: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> list[OpRow]:
    """The rows of `ops` ((id, term map, fields JSON), term map None for a delete), numbered
    from ``first_seq + 1``: the upserts' term ids (int32) and weights (float32) are the
    consecutive slices `lens` long of the batch's arrays `cols` and `vals`."""
    col_bytes, val_bytes = cols.tobytes(), vals.tobytes()
    bounds = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens * 4, out=bounds[1:])
    starts, ends = bounds[:-1].tolist(), bounds[1:].tolist()
    rows: list[OpRow] = []
    row = 0
    seq = first_seq
    for doc_id, tm, fields in ops:
        seq += 1
        if tm is None:
            rows.append((seq, doc_id, None, None, None))
            continue
        a, b = starts[row], ends[row]
        rows.append((seq, doc_id, col_bytes[a:b], val_bytes[a:b], fields))
        row += 1
    return rows


def insert_terms(conn: sqlite3.Connection, terms: Iterable[tuple[int, str]]) -> None:
    conn.executemany("INSERT INTO terms(id, token) VALUES (?, ?)", terms)


def insert_ops(conn: sqlite3.Connection, rows: Iterable[OpRow]) -> None:
    conn.executemany("INSERT INTO ops(seq, doc_id, cols, vals, fields) VALUES (?, ?, ?, ?, ?)", rows)


def drop_dead_ops(conn: sqlite3.Connection) -> None:
    """Delete the deletes and every upsert a later one of the same id replaced."""
    conn.execute("DELETE FROM ops WHERE cols IS NULL OR seq NOT IN "
                 "(SELECT MAX(seq) FROM ops GROUP BY doc_id)")


def set_generation(conn: sqlite3.Connection, generation: int) -> None:
    conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(generation),))


def start_vectors(conn: sqlite3.Connection, meta_key: str, spec: dict[str, Any]) -> None:
    """Record that the index holds vectors of `spec` (meta `meta_key`), with an empty table."""
    conn.execute(_VECTORS_SCHEMA)
    conn.execute("DELETE FROM vectors")
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (meta_key, json.dumps(spec)))


def write_vectors(conn: sqlite3.Connection, rows: Sequence[tuple[str, bytes]]) -> None:
    """Store (or replace) the vectors (doc_id, blob) of `rows`."""
    conn.executemany("INSERT OR REPLACE INTO vectors(doc_id, data) VALUES (?, ?)", rows)


def delete_vectors(conn: sqlite3.Connection, ids: Sequence[str]) -> None:
    conn.executemany("DELETE FROM vectors WHERE doc_id = ?", [(doc_id,) for doc_id in ids])


def remove_folder(folder: Path) -> None:
    """Delete an index folder and everything in it (the store, format-1 files, ANN builds),
    after a writer in another process finished its batch."""
    writer = None
    if is_store(folder):
        try:  # wait for a writer in another process to finish its batch
            writer = sqlite3.connect(str(folder / DB_NAME), timeout=60.0, isolation_level=None)
            writer.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            writer = None
    try:
        (folder / DB_NAME).unlink(missing_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        for p in folder.iterdir():
            if p.name != ".lock":
                p.unlink(missing_ok=True)
    finally:
        if writer is not None:
            writer.close()
    for p in folder.iterdir():  # SQLite's -wal/-shm, removed again if close() made them
        p.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


__all__ = ["DB_NAME", "FORMAT", "IndexCorruptError", "IndexStore", "IndexWriteError", "OpRow",
           "create_file", "create_tables", "decode_meta", "delete_vectors", "drop_dead_ops",
           "encode_meta", "fsync_dir", "insert_ops", "insert_terms", "is_corruption", "is_store",
           "last_seq", "op_rows", "read_error", "read_meta", "read_ops", "read_terms",
           "read_vectors", "remove_folder", "set_generation", "start_vectors", "vector_keys",
           "write_vectors"]
