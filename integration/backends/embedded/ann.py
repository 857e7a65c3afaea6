"""Approximate search for the embedded backend: a SEISMIC index derived from the stored term maps.

Exact search (`EmbeddedBackend.search`) stays the default and the source of truth; this is a
rebuildable structure next to the index files, built on demand with
`EmbeddedBackend.build_ann(name, ...)` and used by ``search(..., approximate=AnnQuery(...))``.

Why pyseismic-lsr (SEISMIC, Bruch et al., "Efficient Inverted Indexes for Approximate Retrieval
over Learned Sparse Representations", SIGIR 2024) and not bmp (Block-Max Pruning, Mallia et al.,
SIGIR 2024): measured by `benchmarks/ann_library_choice.py` on 100k synthetic SPLADE-like
documents (``benchmarks/results/ann_library_choice.md``, one search thread), seismic keeps
recall@10 against our exact float search near 1 at a fraction of bmp's latency, for short
questions and long conversation queries alike (query_cut=20, heap_factor=0.9). bmp stores 8-bit
impacts, so even its safe setting (alpha = beta = 1) loses recall against float scores, and its
faster settings lose more. bmp builds faster: that price is paid once per rebuild, off the query
path.

Files, in the index folder (``<root>/<index>/``)::

    ann.json                     what is built: the file name, the generation and row count of
                                 the index it covers, the build parameters
    ann-<token>.index.seismic    the SEISMIC index (seismic's own binary format)

    ann.lock                     the build lock (``flock``): one build at a time per index

A build takes the lock (a second build, in any process, waits for the first), writes a new
``ann-<token>`` file, then replaces ``ann.json`` atomically (``os.replace``, both fsynced), then
removes the older files: a reader sees the old build or the new one, never half of one, and
nothing needs write access to read. Without the lock two builds could each remove the other's
file and one of them publish an ``ann.json`` naming a removed file. A build killed before it
published leaves its ``ann-<token>`` file behind: the next build, or the next process that
opens the index with write access while no build runs, removes it (`remove_orphans`).
`delete_index` removes them with the rest of the folder.

These files are derived and rebuildable: a damaged ``ann.json`` (not JSON, missing fields, a
``file`` that is not a plain ``ann-<hex>.index.seismic`` name in the index folder) or a missing
or unreadable index file never blocks exact search, ``describe``, writes or ``delete``; an
approximate search then searches exactly and logs a warning naming the fix (build again).

What the build covers: the rows ``0 .. n_rows-1`` of generation ``generation`` (rows are never
reordered between compactions). At search time:

- rows the build covers that were deleted or overwritten since are dropped from its answer
  (up to ``max(k, 100)`` of them are made up for by fetching more candidates);
- rows added since the build (new and overwritten documents) are searched exactly and merged,
  so a document is found the moment its upsert returns;
- every candidate is rescored exactly from the stored term maps (seismic keeps 16-bit weights),
  so ANN scores equal exact scores, ``quantize=True`` included.

After a compaction (``generation`` changed) the rows were renumbered and the build no longer
lines up: the search falls back to exact and logs a warning naming the fix (``build_ann`` again).
Asking for approximate search on an index that never had one built raises `AnnNotBuiltError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import secrets
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from convsparse.errors import BackendError, UsageError
from convsparse.integration.backends.embedded.faults import fault_point
from convsparse.integration.backends.embedded.store import create_file, fsync_dir

logger = logging.getLogger(__name__)

META_NAME = "ann.json"
LOCK_NAME = "ann.lock"
_SUFFIX = ".index.seismic"  # seismic's save() appends it to the path it is given
#: the only names `ann.json` may point to: a plain file in the index folder, made by `build`
_FILE_RE = re.compile(r"ann-[0-9a-f]{1,64}" + re.escape(_SUFFIX))
_TMP_GLOB = f".{META_NAME}.*.tmp"


class AnnNotBuiltError(BackendError):
    """Approximate search was asked for on an index that has no ANN structure built."""

    def __init__(self, index: str):
        self.index = index
        super().__init__(
            f"index {index!r} has no approximate-search structure: build it with "
            f"EmbeddedBackend.build_ann({index!r}) (or `convsparse index build-ann {index}`), "
            "or search without approximate= (exact)")


class AnnDamagedError(BackendError):
    """The ANN files of an index cannot be used (a damaged ``ann.json``, a missing or
    unreadable index file). They are derived: exact search is unaffected, a build replaces them."""

    def __init__(self, folder: Path, reason: str):
        self.folder = folder
        self.reason = reason
        index = folder.name
        super().__init__(
            f"index {index!r}: the approximate-search structure cannot be used ({reason}); exact "
            f"search is unaffected; rebuild it with `convsparse index build-ann {index}` "
            f"(or EmbeddedBackend.build_ann({index!r}))")


@dataclass(frozen=True)
class AnnBuild:
    """SEISMIC build parameters (the library's defaults; see its docs for the trade-offs).

    ``n_postings``: average posting-list length kept per term (longer: higher recall, slower);
    ``centroid_fraction``: blocks per posting list as a fraction of its length;
    ``summary_energy``: share of each block's weight mass its summary keeps;
    ``threads``: build threads (0 = all cores)."""

    n_postings: int = 3500
    centroid_fraction: float = 0.1
    summary_energy: float = 0.4
    threads: int = 0

    def __post_init__(self) -> None:
        wrong = [f"{name} must be {rule}, got {value!r}" for name, value, rule, ok in (
            ("n_postings", self.n_postings, "an integer >= 1", _is_int(self.n_postings) and self.n_postings >= 1),
            ("centroid_fraction", self.centroid_fraction, "> 0 and <= 1", _fraction(self.centroid_fraction)),
            ("summary_energy", self.summary_energy, "> 0 and <= 1", _fraction(self.summary_energy)),
            ("threads", self.threads, "an integer >= 0 (0 = all cores)", _is_int(self.threads) and self.threads >= 0),
        ) if not ok]
        if wrong:
            raise UsageError("invalid ANN build parameters: " + "; ".join(wrong))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


@dataclass(frozen=True)
class AnnQuery:
    """SEISMIC query-time knobs.

    ``query_cut``: only the query's ``query_cut`` heaviest terms walk the posting lists (the
    candidates are still scored with the whole query); ``heap_factor``: a block is skipped
    when its summary's score is below ``heap_factor`` x the current k-th best (lower: more
    blocks scored, slower, higher recall). The defaults reached recall@10 >= 0.95 in `benchmarks/ann_search.py`."""

    query_cut: int = 20
    heap_factor: float = 0.9

    def __post_init__(self) -> None:
        if not _is_int(self.query_cut) or self.query_cut < 1 or not _fraction(self.heap_factor):
            raise UsageError(f"invalid ANN query {self}: query_cut >= 1, 0 < heap_factor <= 1")

    @property
    def label(self) -> str:
        return f"ann cut={self.query_cut} hf={self.heap_factor:g}"


@dataclass(frozen=True)
class AnnInfo:
    """What an ``ann.json`` says: the build it points to and what that build covers."""

    file: str
    generation: int
    n_rows: int  # rows 0..n_rows-1 of `generation` are in the build (dead ones were left out)
    n_docs: int  # live rows indexed
    n_terms: int  # term ids below this exist in the build; newer terms cannot match it
    build: AnnBuild
    build_seconds: float
    file_bytes: int | None = None  # the file's size when published (None: written before it was recorded)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "build": asdict(self.build)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnInfo:
        """An `ann.json`'s content, checked: `ValueError`/`TypeError`/`KeyError` if it is not one
        `build` wrote (a `file` outside the index folder included)."""
        if not isinstance(d, dict) or not isinstance(d.get("build"), dict):
            raise ValueError("not an object with a build object")
        info = cls(**{**d, "build": AnnBuild(**d["build"])})
        if not isinstance(info.file, str) or not _FILE_RE.fullmatch(info.file):
            raise ValueError(f"file {info.file!r} is not an ANN file name of this folder")
        for name in ("generation", "n_rows", "n_docs", "n_terms", "file_bytes"):
            value = getattr(info, name)
            if name == "file_bytes" and value is None:
                continue
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} {value!r} is not a count")
        if not isinstance(info.build_seconds, (int, float)) or not math.isfinite(info.build_seconds):
            raise ValueError(f"build_seconds {info.build_seconds!r} is not a number")
        return info


def _seismic() -> types.ModuleType:
    """The `seismic` module (pyseismic-lsr ships no type information)."""
    try:
        import seismic
    except ImportError as e:  # the `ann` extra
        raise BackendError("approximate search needs pyseismic-lsr: pip install 'convsparse[ann]'") from e
    module: types.ModuleType = seismic
    return module


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """seismic prints progress from Rust straight to file descriptor 1; a CLI printing JSON on
    stdout must not get it mixed in, so fd 1 points to stderr while seismic runs."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real fd 1 (embedded interpreter): let it print
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def read_info(folder: Path) -> AnnInfo | None:
    """The current ``ann.json`` of an index folder, or None if no build exists;
    `AnnDamagedError` if it cannot be used."""
    path = folder / META_NAME
    try:
        return AnnInfo.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError, OSError) as e:  # UnicodeDecodeError is a ValueError
        raise AnnDamagedError(folder, f"{path} is damaged: {type(e).__name__}: {e}") from e


def check_file(folder: Path, info: AnnInfo) -> None:
    """`AnnDamagedError` if the index file `info` names is missing or not the size it was
    published with (bytes damaged in place show only when a search loads it)."""
    path = folder / info.file
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AnnDamagedError(folder, f"{path} is missing ({e.strerror})") from None
    if size == 0:
        raise AnnDamagedError(folder, f"{path} is empty")
    if info.file_bytes is not None and size != info.file_bytes:
        raise AnnDamagedError(folder, f"{path} has {size} bytes, not the {info.file_bytes} it was "
                                      "published with (truncated or overwritten)")


@contextlib.contextmanager
def build_lock(folder: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold the index folder's build lock (``flock`` on ``ann.lock``, so it serialises threads
    and processes and is released when a process dies); yields False without waiting when
    ``wait=False`` and another build holds it. `OSError` if the folder cannot be written."""
    path = folder / LOCK_NAME
    create_file(path)  # mode 0666 minus the umask, like every file of the index
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            logger.warning("index %s: another ANN build is running; waiting for it to finish", folder.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # releases the lock


def _unreferenced(folder: Path, keep: str | None) -> list[Path]:
    return [p for p in [*folder.glob("ann-*" + _SUFFIX), *folder.glob(_TMP_GLOB)] if p.name != keep]


def remove_orphans(folder: Path) -> int:
    """Remove what killed builds left in `folder` (index files ``ann.json`` does not name, its
    temporary copies), if no build is running; returns the bytes freed. Best effort: a folder
    that cannot be written, or an ``ann.json`` that cannot be read, is left as it is."""
    try:
        info = read_info(folder)
    except AnnDamagedError:
        return 0
    if not _unreferenced(folder, info.file if info else None):
        return 0  # the common case: no lock file touched
    freed = 0
    try:
        with build_lock(folder, wait=False) as locked:
            if not locked:
                return 0  # a build is running: its file is not published yet
            info = read_info(folder)
            for p in _unreferenced(folder, info.file if info else None):
                with contextlib.suppress(FileNotFoundError):
                    size = p.stat().st_size
                    p.unlink()
                    freed += size
    except (OSError, AnnDamagedError) as e:
        logger.debug("index %s: orphaned ANN files not removed: %s", folder.name, e)
        return freed
    if freed:
        logger.warning("index %s: removed %.1f MB of ANN files left by an interrupted build",
                       folder.name, freed / 1e6)
    return freed


def build(folder: Path, docs: sp.csr_matrix, alive: np.ndarray, generation: int, params: AnnBuild) -> AnnInfo:
    """Build a SEISMIC index over the live rows of `docs` and publish it in `folder`. The
    caller holds `build_lock`."""
    seismic = _seismic()
    t0 = time.perf_counter()
    try:  # what interrupted builds left: free the space before writing another
        current = read_info(folder)
    except AnnDamagedError:
        current = None
    for p in _unreferenced(folder, current.file if current else None):
        p.unlink(missing_ok=True)
    rows = np.flatnonzero(alive)
    live = docs[rows]
    live.sort_indices()  # seismic wants strictly increasing components per row
    ds = seismic.SeismicDataset()
    # documents are named by their row number: rows are stable until the next compaction
    with _quiet_stdout():
        ds.add_documents_by_id([str(r) for r in rows.tolist()], live.indices.astype(np.int64),
                               live.data.astype(np.float32), live.indptr.astype(np.int64))
        index = seismic.SeismicIndex.build_from_dataset(
            ds, n_postings=params.n_postings, centroid_fraction=params.centroid_fraction,
            summary_energy=params.summary_energy, num_threads=params.threads)
    name = f"ann-{secrets.token_hex(6)}"
    with _quiet_stdout():
        index.save(str(folder / name))
    path = folder / (name + _SUFFIX)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    fault_point("ann:saved")
    info = AnnInfo(name + _SUFFIX, generation, docs.shape[0], len(rows), docs.shape[1], params,
                   round(time.perf_counter() - t0, 3), path.stat().st_size)
    tmp = folder / f".{META_NAME}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info.to_dict(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / META_NAME)
    fsync_dir(folder)
    fault_point("ann:published")
    for old in folder.glob("ann-*" + _SUFFIX):  # older builds; a reader holding one keeps it open
        if old.name != info.file:
            old.unlink(missing_ok=True)
    return info


class LoadedAnn:
    """One build loaded in memory, with the `ann.json` signature it was loaded from."""

    def __init__(self, folder: Path):
        self.folder = folder
        for attempt in range(2):  # a build may replace the file between reading ann.json and loading it
            self.signature = signature(folder)
            read = read_info(folder)
            if read is None:
                raise FileNotFoundError(folder / META_NAME)
            info = read
            try:
                with _quiet_stdout():
                    self.index = _seismic().SeismicIndex.load(str(folder / info.file))
                break
            except OSError as e:
                if attempt:
                    raise AnnDamagedError(folder, f"{folder / info.file} cannot be loaded: {e}") from None
        self.info = info
        self._dtype = _seismic().get_seismic_string()
        self.warned_stale = False

    def current(self) -> bool:
        return signature(self.folder) == self.signature

    def candidates(self, cols: np.ndarray, vals: np.ndarray, k: int, q: AnnQuery) -> np.ndarray:
        """Rows the build proposes for the query (term ids `cols`, weights `vals`)."""
        keep = cols < self.info.n_terms  # terms added after the build are in no built row
        cols, vals = cols[keep], vals[keep]
        if len(cols) == 0:
            return np.zeros(0, dtype=np.int64)
        k = min(k, self.info.n_docs)  # the library allocates k slots whatever the index holds
        if k < 1:
            return np.zeros(0, dtype=np.int64)
        comps = np.array([str(c) for c in cols.tolist()], dtype=self._dtype)
        res = self.index.search("q", comps, np.asarray(vals, dtype=np.float32), k,
                                min(q.query_cut, len(cols)), q.heap_factor)
        return np.fromiter((int(doc) for _, _, doc in res), dtype=np.int64, count=len(res))


def signature(folder: Path) -> tuple[int, int, int] | None:
    """What identifies the current ``ann.json`` (a build replaces the file); None if none."""
    try:
        s = os.stat(folder / META_NAME)
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_mtime_ns, s.st_size)


def stale_message(name: str, info: AnnInfo, generation: int) -> str:
    """Why the build `info` of index `name`, now at `generation`, is not searched, and the fix."""
    return (f"index {name!r} was compacted after its ANN build (generation {info.generation}, now "
            f"{generation}): approximate searches search exactly; rebuild it with "
            f"`convsparse index build-ann {name}` (or EmbeddedBackend.build_ann({name!r}))")


def covers(info: AnnInfo, generation: int, n_rows: int) -> bool:
    """Whether the build `info` still lines up with an index at `generation` holding `n_rows`
    rows (no compaction since, so its row numbers are the index's)."""
    return info.generation == generation and info.n_rows <= n_rows


class AnnBuilds:
    """The ANN builds one backend object searches, per index: each loaded once (again when
    another process rebuilt it), a build that cannot be loaded remembered until it changes (not
    loaded again for every search), and each unusable build warned about once per reason. The
    caller serialises the calls (the backend's lock)."""

    def __init__(self) -> None:
        self._loaded: dict[str, LoadedAnn] = {}
        # index -> (ann.json signature, why its build could not be loaded): not loaded again
        self._failed: dict[str, tuple[Any, str]] = {}
        self._warned: set[tuple[str, str]] = set()  # (index, reason) already logged

    def loaded(self, name: str) -> LoadedAnn | None:
        """The build of index `name` loaded now, if any (as the last search left it)."""
        return self._loaded.get(name)

    def unload(self) -> None:
        """Drop the loaded builds (what was warned about and what failed is remembered)."""
        self._loaded.clear()

    def forget(self, name: str) -> None:
        """Drop what is known of index `name`'s build (the index was reopened or deleted)."""
        self._loaded.pop(name, None)
        self._failed.pop(name, None)

    def rebuilt(self, name: str) -> None:
        """Index `name` has a new build: load it on the next search, warn about it afresh."""
        self.forget(name)
        self._warned = {w for w in self._warned if w[0] != name}

    def warn(self, name: str, reason: str, message: str) -> None:
        """Log an unusable ANN build once per index and reason (searches go on exactly)."""
        if (name, reason) not in self._warned:
            self._warned.add((name, reason))
            logger.warning("%s", message)

    def status(self, name: str, folder: Path, generation: int, n_rows: int) -> dict[str, Any] | None:
        """The current build of index `name` (in `folder`, now at `generation` with `n_rows`
        rows) with its ``status``: "ready", or "unusable" and the ``problem`` with its fix;
        None if none was built."""
        try:
            info = read_info(folder)
        except AnnDamagedError as e:
            self.warn(name, e.reason, str(e))
            return {"status": "unusable", "problem": str(e)}
        if info is None:
            return None
        out: dict[str, Any] = {**info.to_dict(), "status": "ready"}
        failed = self._failed.get(name)
        try:
            check_file(folder, info)
            if failed is not None and failed[0] == signature(folder):  # a search could not load it
                out.update(status="unusable", problem=failed[1])
                return out
        except AnnDamagedError as e:
            self.warn(name, e.reason, str(e))
            out.update(status="unusable", problem=str(e))
        else:
            if not covers(info, generation, n_rows):
                out.update(status="unusable", problem=stale_message(name, info, generation))
        return out

    def load(self, name: str, folder: Path) -> LoadedAnn | None:
        """The build of index `name` to search, reloaded if another process rebuilt it; None
        (warned once) when it cannot be used. `AnnNotBuiltError` if none was built."""
        built = self._loaded.get(name)
        if built is None or not built.current():
            self._loaded.pop(name, None)
            sig = signature(folder)
            failed = self._failed.get(name)
            if failed is not None and failed[0] == sig and sig is not None:
                return None  # the same damaged build: warned already, not loaded again
            try:
                built = self._loaded[name] = LoadedAnn(folder)
            except FileNotFoundError:
                raise AnnNotBuiltError(name) from None
            except AnnDamagedError as e:  # derived: never blocks a search
                self._failed[name] = (sig, str(e))
                self.warn(name, e.reason, f"{e} (searching exactly)")
                return None
            self._failed.pop(name, None)
        return built


__all__ = ["AnnBuild", "AnnBuilds", "AnnDamagedError", "AnnInfo", "AnnNotBuiltError", "AnnQuery", "LoadedAnn",
           "build", "build_lock", "check_file", "covers", "read_info", "remove_orphans", "signature",
           "stale_message"]
