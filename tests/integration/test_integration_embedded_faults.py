"""EmbeddedBackend under faults: full disk, I/O errors, read-only media, crashes, old layouts.

Every scenario ends the same way: the index loads, holds exactly the acknowledged batches (a
batch whose commit happened but whose acknowledgement was cut off by a crash is there whole,
never in part), and a re-run of the source completes with exactly the source count.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convsparse.integration.backends.base import IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend, IndexWriteError, faults
from convsparse.termmap import TermMap

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_v1"
BATCH = 10
N_BATCHES = 8
WRITE_STEPS = ["write:begin", "write:terms", "write:ops", "write:commit"]


def batch(n: int) -> list[IndexedDocument]:
    return [IndexedDocument(f"b{n}-{i}", TermMap({f"t{n}": 1.0 + i, "common": 1.0, f"w{i}": 2.0}),
                            {"text": f"batch {n} doc {i}"}) for i in range(BATCH)]


def ingest(be: EmbeddedBackend, batches=range(N_BATCHES)) -> None:
    for n in batches:
        assert all(r.ok for r in be.upsert("i", batch(n)))


def stored_ids(root) -> set[str]:
    be = EmbeddedBackend(root)
    hits = be.search("i", TermMap({"common": 1.0}), k=10_000)
    assert len(hits) == be.count("i")
    return {h.id for h in hits}


def ids_of(batches) -> set[str]:
    return {f"b{n}-{i}" for n in batches for i in range(BATCH)}


@pytest.fixture
def hook():
    """Install a fault hook for one test."""
    def install(fn):
        faults.fault_hook = fn
    yield install
    faults.fault_hook = None


# ---------------------------------------------------------------------------- full disk
def test_disk_full_loses_nothing_acknowledged_and_rerun_completes(tmp_path):
    """Issue 13's row: disk full during ingest, space freed, ingest re-run."""
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, range(3))
    writer = be._states["i"].store.writer()
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full (SQLITE_FULL)
    acked = set(range(3))
    failures = 0
    for n in range(3, N_BATCHES):
        try:
            ingest(be, [n])
            acked.add(n)
        except IndexWriteError as e:
            failures += 1
            assert "rolled back" in str(e) and "free disk space" in str(e)
    assert failures >= 1
    # a fresh process view and this object agree: exactly the acknowledged batches
    assert stored_ids(tmp_path) == ids_of(acked)
    assert {h.id for h in be.search("i", TermMap({"common": 1.0}), k=10_000)} == ids_of(acked)
    writer.execute("PRAGMA max_page_count = 1073741823")  # space freed
    ingest(be)  # the re-run
    assert EmbeddedBackend(tmp_path).count("i") == BATCH * N_BATCHES
    assert stored_ids(tmp_path) == ids_of(range(N_BATCHES))


def test_failed_batch_is_all_or_nothing(tmp_path):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, [0])
    writer = be._states["i"].store.writer()
    writer.execute(f"PRAGMA max_page_count = {writer.execute('PRAGMA page_count').fetchone()[0]}")
    big = [IndexedDocument(f"x{i}", TermMap({f"new{i}-{j}": 1.0 for j in range(200)}), {"text": "y" * 2000})
           for i in range(10)]
    with pytest.raises(IndexWriteError):
        list(be.upsert("i", big))
    assert be.count("i") == BATCH and EmbeddedBackend(tmp_path).count("i") == BATCH
    with pytest.raises(KeyError):
        be.get_document("i", "x0")


@pytest.mark.parametrize("step", WRITE_STEPS)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_os_error_at_each_write_step_rolls_back(tmp_path, hook, step, code):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, range(2))
    calls = []

    def fail(name):
        calls.append(name)
        if name == step:
            raise OSError(code, os.strerror(code))

    hook(fail)
    with pytest.raises(IndexWriteError) as info:
        ingest(be, [2])
    assert step in calls and os.strerror(code) in str(info.value)
    hook(None)
    assert be.count("i") == 2 * BATCH and stored_ids(tmp_path) == ids_of(range(2))
    ingest(be)
    assert stored_ids(tmp_path) == ids_of(range(N_BATCHES))


def test_error_during_compaction_keeps_the_index(tmp_path, hook):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, range(3))
    ingest(be, range(3))  # every row overwritten once
    hook(lambda name: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
         if name == "compact:meta" else None)
    with pytest.raises(IndexWriteError, match="compaction"):
        be.compact("i")
    hook(None)
    assert stored_ids(tmp_path) == ids_of(range(3))
    assert EmbeddedBackend(tmp_path).describe_index("i").extra["generation"] == 0
    be.compact("i")
    info = EmbeddedBackend(tmp_path).describe_index("i")
    assert (info.extra["generation"], info.extra["rows"], info.count) == (1, 30, 30)


# ---------------------------------------------------------------------------- crashes
CRASHER = textwrap.dedent("""
    import os, signal, sys
    from convsparse.integration.backends.embedded import faults
    from convsparse.integration.backends.base import IndexedDocument
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.termmap import TermMap

    root, mode, step, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    seen = {"n": 0}

    def kill(name):
        if name == step:
            seen["n"] += 1
            if seen["n"] == at:
                os.kill(os.getpid(), signal.SIGKILL)

    def batch(n):
        return [IndexedDocument(f"b{n}-{i}", TermMap({f"t{n}": 1.0 + i, "common": 1.0, f"w{i}": 2.0}),
                                {"text": f"batch {n} doc {i}"}) for i in range(__BATCH__)]

    be = EmbeddedBackend(root)
    faults.fault_hook = kill
    if mode == "write":
        for n in range(__N__):
            list(be.upsert("i", batch(n)))
            print(n, flush=True)  # the acknowledgement
    elif mode == "compact":
        be.compact("i")
    elif mode == "migrate":
        be.count("docs")
""").replace("__BATCH__", str(BATCH)).replace("__N__", str(N_BATCHES))


def run_crasher(root, mode, step, at=1) -> tuple[int, list[int]]:
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(root), mode, step, str(at)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, [int(x) for x in proc.stdout.split()]


@pytest.mark.parametrize("step", WRITE_STEPS + ["write:applied"])
def test_sigkill_between_write_steps(tmp_path, step):
    EmbeddedBackend(tmp_path).create_index("i", fingerprint="fp")
    rc, acked = run_crasher(tmp_path, "write", step, at=4)  # killed in the 4th batch
    assert rc == -signal.SIGKILL and acked == [0, 1, 2]
    have = stored_ids(tmp_path)
    if step == "write:applied":  # committed, killed before the acknowledgement: whole
        assert have == ids_of(range(4))
    else:
        assert have == ids_of(acked)
    be = EmbeddedBackend(tmp_path)
    ingest(be)  # the re-run
    assert be.count("i") == BATCH * N_BATCHES and stored_ids(tmp_path) == ids_of(range(N_BATCHES))


@pytest.mark.parametrize("step", ["compact:begin", "compact:delete", "compact:meta", "write:commit"])
def test_sigkill_during_compaction(tmp_path, step):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, range(4))
    ingest(be, range(2))  # 20 overwritten rows
    list(be.delete_documents("i", ["b3-0"]))
    expected = ids_of(range(4)) - {"b3-0"}
    rc, _ = run_crasher(tmp_path, "compact", step)
    assert rc == -signal.SIGKILL
    assert stored_ids(tmp_path) == expected
    again = EmbeddedBackend(tmp_path)
    again.compact("i")
    assert again.describe_index("i").extra["rows"] == len(expected) == again.count("i")
    assert be.count("i") == len(expected)  # the first object follows the compaction


# ---------------------------------------------------------------------------- format 1
def copy_fixture(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    return root


def check_legacy_docs(be: EmbeddedBackend) -> None:
    assert be.count("docs") == 7
    assert be.describe_index("docs").vocabulary == "bert-base-uncased"
    tm, fields = be.get_document("docs", "d1")
    assert tm == TermMap({"lisbon": 3.0}) and fields == {"title": "Doc 1 v2", "text": "new"}
    with pytest.raises(KeyError):
        be.get_document("docs", "d2")
    hits = be.search("docs", TermMap({"paris": 1.0}), k=10)
    assert [(h.id, h.score) for h in hits] == [("d0", 1.0), ("d6", 0.25)]
    assert be.get_document("docs", "d6")[0] == TermMap({"porto": 2.0, "paris": 0.25})


def test_format1_index_is_converted_once(tmp_path):
    root = copy_fixture(tmp_path)
    be = EmbeddedBackend(root)
    assert be.list_indices() == ["docs", "torn"]
    check_legacy_docs(be)
    files = sorted(p.name for p in (root / "docs").iterdir())
    assert "index.sqlite" in files and "meta.json" not in files
    assert not [f for f in files if f.startswith(("snapshot-", "log-"))]
    assert be.describe_index("docs").extra["format"] == 2
    check_legacy_docs(EmbeddedBackend(root))
    list(be.upsert("docs", [IndexedDocument("d8", TermMap({"paris": 5.0}))]))
    assert [h.id for h in EmbeddedBackend(root).search("docs", TermMap({"paris": 1.0}))][0] == "d8"


def test_format1_log_torn_by_a_full_disk_loads(tmp_path):
    """The issue's damage: a torn append with a later append glued on (JSONDecodeError before)."""
    be = EmbeddedBackend(copy_fixture(tmp_path))
    assert be.count("torn") == 4
    assert sorted(h.id for h in be.search("torn", TermMap({"x": 1.0}), k=10)) == ["t0", "t1", "t2", "t4"]
    assert be.get_document("torn", "t4")[0] == TermMap({"x": 5.0, "y": 1.0})


@pytest.mark.parametrize("step", ["migrate:terms", "migrate:commit", "migrate:rename",
                                  "migrate:cleanup", "write:begin"])
def test_sigkill_during_conversion(tmp_path, step):
    root = copy_fixture(tmp_path)
    rc, _ = run_crasher(root, "migrate", step)
    assert rc in (-signal.SIGKILL, 0)  # write:begin is never reached by a conversion
    check_legacy_docs(EmbeddedBackend(root))


# ---------------------------------------------------------------------------- read-only
def test_read_only_folder_searches(tmp_path, read_only_view):
    """Issue 13's row: an index on a read-only file system (or folder) can be searched."""
    src = tmp_path / "data"
    be = EmbeddedBackend(src)
    be.create_index("i", fingerprint="fp")
    ingest(be, range(3))
    be.close()
    with read_only_view(src) as view:
        ro = EmbeddedBackend(view)
        assert ro.count("i") == 3 * BATCH
        assert {h.id for h in ro.search("i", TermMap({"common": 1.0}), k=100)} == ids_of(range(3))
        assert ro.describe_index("i").extra["read_only"] is True
        with pytest.raises(IndexWriteError, match="read-only|readonly"):
            list(ro.upsert("i", batch(9)))
        assert ro.count("i") == 3 * BATCH
        ro.close()


def test_read_only_format1_index_searches_without_converting(tmp_path, read_only_view):
    root = copy_fixture(tmp_path)
    with read_only_view(root) as view:
        ro = EmbeddedBackend(view)
        check_legacy_docs(ro)
        assert ro.describe_index("docs").extra["format"] == 1
        with pytest.raises(IndexWriteError, match="read-only"):
            list(ro.upsert("docs", [IndexedDocument("z", TermMap({"a": 1.0}))]))
    assert (root / "docs" / "meta.json").exists()


def test_search_never_opens_for_writing(tmp_path):
    be = EmbeddedBackend(tmp_path)
    be.create_index("i", fingerprint="fp")
    ingest(be, [0])
    reader = EmbeddedBackend(tmp_path)
    assert reader.count("i") == BATCH and reader.search("i", TermMap({"common": 1.0}))
    store = reader._states["i"].store
    assert store._writer is None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.reader().execute("DELETE FROM ops")


# ---------------------------------------------------------------------------- files and fsync
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        be = EmbeddedBackend(tmp_path)
        be.create_index("i", fingerprint="fp")
        ingest(be, range(2))
        ingest(be, range(2))
        be.compact("i")
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "i").iterdir()}
    finally:
        os.umask(old)
    assert "index.sqlite" in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_fsync_policy_is_explicit(tmp_path):
    durable = EmbeddedBackend(tmp_path / "a")
    durable.create_index("i", fingerprint="fp")
    ingest(durable, [0])
    assert durable._states["i"].store.writer().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert durable._states["i"].store.writer().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    lazy = EmbeddedBackend(tmp_path / "b", durable=False)
    lazy.create_index("i", fingerprint="fp")
    ingest(lazy, [0])
    assert lazy._states["i"].store.writer().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert durable.describe_index("i").extra["durable"] is True


# ---------------------------------------------------------------------------- a real full disk
def test_real_tmpfs_filled_to_the_brim(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount is not permitted here")
    try:
        be = EmbeddedBackend(mnt)
        be.create_index("i", fingerprint="fp")
        acked, n = [], 0

        def big(n):
            return [IndexedDocument(f"b{n}-{i}", TermMap({f"t{n}-{i}-{j}": 1.0 for j in range(60)} | {"common": 1.0}),
                                    {"text": "x" * 400}) for i in range(BATCH)]

        while n < 200:
            try:
                list(be.upsert("i", big(n)))
                acked.append(n)
            except IndexWriteError as e:
                assert "full" in str(e).lower() or "No space" in str(e)
                break
            n += 1
        else:
            pytest.fail("the tmpfs never filled up")
        assert acked and stored_ids(mnt) == ids_of(acked)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space freed
        for m in range(n + 1):
            list(be.upsert("i", big(m)))
        assert EmbeddedBackend(mnt).count("i") == BATCH * (n + 1)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
