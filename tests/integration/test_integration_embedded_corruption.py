"""EmbeddedBackend with damaged files (issue 29), as a new operator would break them.

- ``index.sqlite`` damaged (header, bytes mid-file, truncated, not a database, rows that do not
  decode): every read is one `IndexCorruptError` line naming the index and the fix, and
  ``convsparse index delete`` removes the index all the same.
- ``ann.json`` or the ANN file damaged (derived, rebuildable): exact search, describe, writes,
  `ensure_index` and delete are unaffected, an approximate search searches exactly with a
  warning, ``describe`` says the build is unusable and why, and a build replaces it.
- Limits and truthful messages: ``k`` is bounded, ``describe`` reports the read-only state
  it observes, bad ``build-ann`` parameters are one line with exit 2.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from convsparse.cli import app
from convsparse.errors import UsageError
from convsparse.integration.backends.base import MAX_K, IndexedDocument
from convsparse.integration.backends.embedded import EmbeddedBackend, IndexCorruptError, IndexWriteError
from convsparse.termmap import TermMap

N_BATCHES, BATCH = 20, 50
QUERY = TermMap({"common": 1.0, "t3": 2.0})


def docs(n: int) -> list[IndexedDocument]:
    return [IndexedDocument(f"d{n}-{j}", TermMap({f"t{j % 40}": 1.0, "common": 1.0, f"x{n}": 2.0}),
                            {"text": "y" * 300}) for j in range(BATCH)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A 1,000-document index (~400 KB: damage mid-file lands in its rows) with an ANN build."""
    root = tmp_path_factory.mktemp("pristine")
    be = EmbeddedBackend(root, durable=False)
    be.create_index("i", fingerprint="fp")
    for n in range(N_BATCHES):
        list(be.upsert("i", docs(n)))
    be.build_ann("i", threads=1)
    be.close()
    return root


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(pristine, root)
    return root


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def overwrite(path: Path, offset: int | None, n: int) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2 if offset is None else offset)
        f.write(b"\xa5" * n)


def sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement)
    conn.commit()
    conn.close()


STORE_DAMAGE = {
    "header": lambda p: overwrite(p, 0, 100),
    "bytes_mid_file": lambda p: overwrite(p, None, 8192),
    "truncated": lambda p: os.truncate(p, p.stat().st_size // 2),
    "not_a_database": lambda p: p.write_bytes(b"hello, this is not a database\n" * 100),
    "blob_not_int32": lambda p: sql(p, "UPDATE ops SET cols = x'010203' WHERE seq = 7"),
    "meta_not_json": lambda p: sql(p, "UPDATE meta SET value = '{' WHERE key = 'generation'"),
    "fields_not_json": lambda p: sql(p, "UPDATE ops SET fields = '{\"a\"' WHERE seq = 3"),
}


# ---------------------------------------------------------------------------- index.sqlite
@pytest.mark.parametrize("damage", sorted(STORE_DAMAGE))
def test_damaged_store_is_one_line_naming_the_fix_and_delete_works(copy, damage, monkeypatch):
    STORE_DAMAGE[damage](copy / "i" / "index.sqlite")
    be = EmbeddedBackend(copy)
    fix = r"is damaged: .*index\.sqlite cannot be read .*restore the folder .* from a backup, " \
          r"or delete the index with `convsparse index delete i`"
    for call in (lambda: be.describe_index("i"), lambda: be.search("i", QUERY),
                 lambda: list(be.upsert("i", docs(99))), lambda: be.count("i")):
        with pytest.raises(IndexCorruptError, match=fix):
            call()
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(copy))
    code, out = cli("index", "describe", "i")
    assert code == 1 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: index 'i' is damaged:") and "convsparse index delete i" in out
    code, out = cli("index", "delete", "i")
    assert code == 0 and out.strip() == "deleted index i", out
    assert not (copy / "i").exists()
    code, out = cli("index", "create", "i", "--fingerprint", "fp")  # the fix, to its end
    assert code == 0, out
    assert EmbeddedBackend(copy).count("i") == 0


def test_store_damaged_under_an_open_backend_is_one_line(copy):
    be = EmbeddedBackend(copy)
    assert be.count("i") == N_BATCHES * BATCH
    # another process commits a row that does not decode: the next call reads it
    sql(copy / "i" / "index.sqlite", "INSERT INTO ops(doc_id, cols, vals, fields) "
                                     "VALUES ('z', x'010203', x'01020304', '{}')")
    with pytest.raises(IndexCorruptError, match="convsparse index delete i"):
        be.search("i", QUERY)


def test_delete_missing_index_still_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path))
    assert cli("index", "delete", "nope")[0] == 1
    code, out = cli("index", "delete", "nope", "--missing-ok")
    assert code == 0 and "does not exist; nothing deleted" in out


# ---------------------------------------------------------------------------- ann.json and the ANN file
def ann_json(root: Path) -> dict:
    return json.loads((root / "i" / "ann.json").read_text())


def ann_file(root: Path) -> Path:
    return root / "i" / ann_json(root)["file"]


ANN_DAMAGE = {
    "garbage": lambda r: (r / "i" / "ann.json").write_bytes(b"\x00garbage{\xff"),
    "empty": lambda r: (r / "i" / "ann.json").write_bytes(b""),
    "missing_keys": lambda r: (r / "i" / "ann.json").write_text('{"file": "x"}'),
    "not_an_object": lambda r: (r / "i" / "ann.json").write_text("[1, 2]"),
    "wrong_types": lambda r: (r / "i" / "ann.json").write_text(json.dumps({**ann_json(r), "n_rows": "many"})),
    "file_escapes_folder": lambda r: (r / "i" / "ann.json").write_text(
        json.dumps({**ann_json(r), "file": "../../../../etc/passwd"})),
    "file_absolute": lambda r: (r / "i" / "ann.json").write_text(json.dumps({**ann_json(r), "file": "/etc/hosts"})),
    "index_file_missing": lambda r: ann_file(r).unlink(),
    "index_file_truncated": lambda r: os.truncate(ann_file(r), ann_file(r).stat().st_size // 2),
    "index_file_garbage": lambda r: overwrite(ann_file(r), 0, 256),
}


@pytest.mark.parametrize("damage", sorted(ANN_DAMAGE))
def test_damaged_ann_never_blocks_and_is_rebuilt_on_request(copy, damage, caplog, monkeypatch):
    from convsparse.integration.ingestion import ensure_index

    ANN_DAMAGE[damage](copy)
    be = EmbeddedBackend(copy)
    exact = be.search("i", QUERY, k=10)
    assert len(exact) == 10
    with caplog.at_level(logging.WARNING):
        assert be.search("i", QUERY, k=10, approximate=True) == exact  # searched exactly
        ann = be.describe_index("i").extra["ann"]
    assert ann["status"] == "unusable" and "convsparse index build-ann i" in ann["problem"], ann
    assert "build-ann i" in caplog.text and "exact" in caplog.text
    encoder = SimpleNamespace(fingerprint="fp", vocabulary_name=None)
    assert ensure_index(be, "i", encoder).count == N_BATCHES * BATCH  # the workers' check
    assert all(r.ok for r in be.upsert("i", docs(N_BATCHES)))
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(copy))
    code, out = cli("index", "describe", "i")
    # another process: bytes damaged in place show only when a search loads the file
    assert code == 0 and ('"status": "unusable"' in out or damage == "index_file_garbage"), out
    assert not Path("/etc/passwd.index.seismic").exists()
    info = be.build_ann("i", threads=1)  # rebuilt on request
    assert be.describe_index("i").extra["ann"]["status"] == "ready"
    assert {p.name for p in (copy / "i").glob("ann-*")} == {info.file}
    assert [h.id for h in be.search("i", QUERY, k=10, approximate=True)] == \
        [h.id for h in be.search("i", QUERY, k=10)]
    code, out = cli("index", "delete", "i")
    assert code == 0 and not (copy / "i").exists()


def test_damaged_ann_warns_once_per_reason(copy, caplog):
    ANN_DAMAGE["garbage"](copy)
    be = EmbeddedBackend(copy)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            be.search("i", QUERY, k=3, approximate=True)
    assert caplog.text.count("cannot be used") == 1


def test_describe_shows_a_dead_build_as_unusable(copy):
    """Issue 29 item 9: an ann.json naming a removed file was shown as a valid build."""
    ann_file(copy).unlink()
    ann = EmbeddedBackend(copy).describe_index("i").extra["ann"]
    assert ann["status"] == "unusable" and "is missing" in ann["problem"]
    assert ann["n_docs"] == N_BATCHES * BATCH  # what the dead build covered, still shown


def test_describe_says_when_the_build_is_stale(copy):
    be = EmbeddedBackend(copy)
    list(be.delete_documents("i", ["d0-0"]))
    be.compact("i")
    ann = be.describe_index("i").extra["ann"]
    assert ann["status"] == "unusable" and "compacted" in ann["problem"]


# ---------------------------------------------------------------------------- read-only, as observed
def test_describe_reports_a_read_only_mount_while_a_writer_is_open(copy, read_only_view):
    """Item 9: with a writer open elsewhere (its -shm exists), SQLite reads without
    immutable=1 and describe said read_only: false on a read-only mount."""
    writer = EmbeddedBackend(copy)
    list(writer.upsert("i", docs(N_BATCHES)))  # the writer connection stays open
    assert (copy / "i" / "index.sqlite-shm").exists()
    with read_only_view(copy) as view:
        ro = EmbeddedBackend(view)
        assert ro.describe_index("i").extra["read_only"] is True
        # a copy made read-only (not root) may be opened immutable=1, which skips the -wal
        assert ro.count("i") in ((N_BATCHES + 1) * BATCH, N_BATCHES * BATCH)
        with pytest.raises(IndexWriteError, match="read-only"):
            list(ro.upsert("i", docs(N_BATCHES + 1)))
        ro.close()
    assert writer.describe_index("i").extra["read_only"] is False
    writer.close()


@pytest.mark.parametrize("name", ["full", "disk-full", "readonly"])
def test_write_error_hint_reads_the_error_code_not_the_path(name):
    """Item 9: an index named `full` on a read-only mount was told to free disk space."""
    ro = IndexWriteError(name, "a batch", PermissionError(errno.EROFS, f"/data/{name} is read-only here"))
    assert "read-only here: write from a host" in str(ro) and "free disk space" not in str(ro)
    full = IndexWriteError(name, "a batch", OSError(errno.ENOSPC, f"No space left on device: /data/{name}"))
    assert "free disk space" in str(full)
    io = IndexWriteError(name, "a batch", OSError(errno.EIO, f"I/O error on /data/{name}/readonly-full"))
    assert "check the disk" in str(io)


# ---------------------------------------------------------------------------- limits
def test_k_is_bounded_with_one_line(copy):
    be = EmbeddedBackend(copy)
    assert len(be.search("i", TermMap({"common": 1.0}), k=MAX_K)) == N_BATCHES * BATCH
    for k in (MAX_K + 1, 10**9, 0, -3):
        for approximate in (False, True):
            with pytest.raises(UsageError, match=f"k must be an integer from 1 to {MAX_K}"):
                be.search("i", QUERY, k=k, approximate=approximate)
    with pytest.raises(UsageError, match="rescore_window"):
        be.search("i", QUERY, k=10, rescore=QUERY, rescore_window=MAX_K + 1)
    assert len(be.search("i", QUERY, k=MAX_K, approximate=True)) == N_BATCHES * BATCH


def test_huge_k_with_ann_does_not_kill_the_process(copy):
    """Item 5: seismic allocated k slots (24 GB for k=10**9) and aborted the process."""
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
        from convsparse.integration.backends.embedded import EmbeddedBackend
        from convsparse.termmap import TermMap
        be = EmbeddedBackend({str(copy)!r})
        try:
            be.search("i", TermMap({{"common": 1.0}}), k=10**9, approximate=True)
        except ValueError as e:
            print("refused:", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"refused: k must be an integer from 1 to {MAX_K}" in proc.stdout


def test_server_search_body_is_bounded():
    from convsparse.integration.backends.opensearch_query import search_body

    assert search_body({"match_all": {}}, MAX_K)["size"] == MAX_K
    with pytest.raises(UsageError, match="k must be"):
        search_body({"match_all": {}}, MAX_K + 1)
    with pytest.raises(UsageError, match="rescore_window"):
        search_body({"match_all": {}}, 10, rescore={"match_all": {}}, rescore_window=MAX_K + 1)


def test_client_k_is_bounded(sample_index, tiny_student):
    from convsparse import ConversationalSearch

    root, name = sample_index
    client = ConversationalSearch(name, encoder=tiny_student, backend=EmbeddedBackend(root))
    with pytest.raises(UsageError, match=f"from 1 to {MAX_K}"):
        client.search("lisbon", k=10**9)
    assert client.search("lisbon", k=MAX_K).hits


# ---------------------------------------------------------------------------- build-ann parameters
@pytest.mark.parametrize("args, what", [
    (["--centroid-fraction", "2"], "centroid_fraction must be > 0 and <= 1, got 2.0"),
    (["--summary-energy", "0"], "summary_energy must be > 0 and <= 1, got 0.0"),
    (["--centroid-fraction", "nan"], "centroid_fraction must be > 0 and <= 1, got nan"),
    (["--n-postings", "0"], "n_postings must be an integer >= 1, got 0"),
    (["--threads", "-1"], "threads must be an integer >= 0"),
])
def test_bad_build_ann_parameters_are_one_line_exit_2(copy, monkeypatch, args, what):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(copy))
    before = ann_json(copy)
    code, out = cli("index", "build-ann", "i", *args)
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: invalid ANN build parameters:") and what in out
    assert ann_json(copy) == before
