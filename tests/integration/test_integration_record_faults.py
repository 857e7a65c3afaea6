"""Issue 29 item 2 (in-process path): one record that cannot be read, parsed or checked
(JSON nested past the parser's recursion limit, stored fields nested past `MAX_FIELD_DEPTH`,
a record that raises `MemoryError`, broken JSON, binary bytes, huge texts) is that record's
error, named with its line and reason; every other record is indexed and the counts add up.

The same generator feeds the Celery fuzz test (tests/workers/test_workers_record_faults.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from convsparse.integration.backends.embedded import EmbeddedBackend
from convsparse.integration.ingest_options import Batching, IngestOptions, SourceOptions
from convsparse.integration.ingestion import ingest
from convsparse.sources import RecordError, read_records

#: the issue's 4 KB line: 1,000 nested lists in a stored field
DEEP_LINE = '{"id":"deep","text":"t","m":' + "[" * 1000 + "]" * 1000 + "}"
MAX_TEXT = 2_000  # a small max_text_chars, so "huge" records stay cheap


def _valid(i: int, text: str) -> bytes:
    return json.dumps({"id": f"ok-{i}", "text": text or "fallback words"}).encode()


def record_lines():
    """One line of a JSONL file: (bytes, True if it must be indexed)."""
    words = st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=40).filter(str.strip)
    valid = st.tuples(st.integers(0, 10**9), words).map(lambda t: (_valid(*t), True))
    # Hypothesis raises the recursion limit by 2,000 while a test runs: depths go far past it.
    depths = st.sampled_from([70, 600, 1_500, 5_000, 100_000])
    deep = depths.map(
        lambda n: (f'{{"id":"d{n}","text":"t","m":' + "[" * n + "]" * n + "}").encode())
    deep_obj = depths.map(
        lambda n: (f'{{"id":"o{n}","text":"t","m":' + '{"a":' * n + "1" + "}" * n + "}").encode())
    malformed = st.sampled_from([b'{"id": "x", "text": "never closed"', b"[1, 2, 3]", b'"a string"',
                                 b"{", b"}}}", b'{"id": 5.5, "text": "float id"}', b"nul\x00l",
                                 b'{"id": "", "text": "empty id"}', b'{"id": "t", "text": ""}'])
    huge = st.integers(MAX_TEXT + 1, 4 * MAX_TEXT).map(
        lambda n: json.dumps({"id": f"huge-{n}", "text": "w" * n}).encode())
    binary = st.binary(min_size=1, max_size=64).filter(
        lambda b: b"\n" not in b and b.strip() and not _may_be_valid(b))
    bad = st.one_of(deep, deep_obj, malformed, huge, binary).map(lambda b: (b, False))
    return st.one_of(valid, bad)


#: Every kind of bad record at least once, next to valid ones (run before the random examples).
EVERY_KIND = [(b'{"id": "v", "text": "octopus"}', True), (DEEP_LINE.encode(), False),
              (('{"id":"o","text":"t","m":' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}").encode(),
               False),
              (('{"id":"l","text":"t","m":' + "[" * 100_000 + "]" * 100_000 + "}").encode(), False),
              (b'{"id": "x", "text": "never closed"', False), (b"\xff\xfe\x00binary\x80", False),
              (json.dumps({"id": "huge", "text": "w" * (MAX_TEXT + 1)}).encode(), False),
              (('{"id":"f","text":"t","m":' + "[" * 100 + "]" * 100 + "}").encode(), False),
              (b'{"id": "w", "text": "squid"}', True)]


def fuzz_file(path, lines: list[tuple[bytes, bool]]):
    """Write `lines` (valid ids made unique by position) and return (path, n_lines, n_valid)."""
    out, n_valid = [], 0
    for i, (raw, ok) in enumerate(lines):
        if ok:
            raw = _valid(i, json.loads(raw)["text"])
            n_valid += 1
        out.append(raw)
    path.write_bytes(b"\n".join(out) + b"\n")
    return path, len(out), n_valid


def _may_be_valid(raw: bytes) -> bool:
    """A random binary line could happen to be a JSON object (a record): not drawn."""
    try:
        obj = json.loads(raw)
    except Exception:
        return False
    return isinstance(obj, dict)


@pytest.fixture(scope="module")
def backend_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-index")


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(record_lines(), min_size=1, max_size=8))
@example(lines=EVERY_KIND)
def test_fuzz_local_ingest_completes_and_counts_add_up(lines, tiny_student, backend_dir,
                                                       tmp_path_factory):
    path, n_lines, n_valid = fuzz_file(tmp_path_factory.mktemp("fz") / "f.jsonl", lines)
    backend = EmbeddedBackend(backend_dir)
    index = f"fz{abs(hash(path)) % 10**9}"
    options = IngestOptions(SourceOptions(max_text_chars=MAX_TEXT), Batching(batch_size=4))
    report = ingest(path, encoder=tiny_student, backend=backend, index=index, options=options)
    assert report.indexed == n_valid, report.failures
    assert report.records_read == report.indexed + report.failed == n_lines
    assert len(report.dead_letter) == report.failed
    assert backend.count(index) == n_valid
    for _, reason in report.failures:
        assert "\n" not in reason and reason.strip()


def test_deep_record_between_valid_records_is_one_error_local_cli(tiny_model_dir, tmp_path):
    from convsparse.cli import app

    source = tmp_path / "deep.jsonl"
    source.write_text('{"id":"a","text":"octopus hearts"}\n' + DEEP_LINE + "\n"
                      '{"id":"b","text":"squid ink"}\n', encoding="utf-8")
    env = {"CONVSPARSE_MODEL": str(tiny_model_dir), "CONVSPARSE_RUNTIME": "torch",
           "CONVSPARSE_DEVICE": "cpu", "CONVSPARSE_DATA_DIR": str(tmp_path / "data")}
    result = CliRunner().invoke(app, ["ingest", str(source), "--index", "deep"], env=env)
    out = result.output
    assert result.exit_code == 1 and "Traceback" not in out, out
    assert "indexed 2, failed 1" in out, out
    assert "failed deep: line 2: nested too deeply" in out, out
    assert EmbeddedBackend(tmp_path / "data").count("deep") == 2


def test_every_record_level_exception_is_that_records_error():
    """Iterables too: a row whose reading raises anything (here `MemoryError` and
    `RecursionError` from the row itself) becomes that item's error."""

    class Exploding(dict):
        def __init__(self, error):
            super().__init__(id="boom", text="t")
            self.error = error

        def get(self, *args, **kwargs):
            raise self.error

    nested: list = []
    for _ in range(200):  # 200 levels: past MAX_FIELD_DEPTH, short of the recursion limit
        nested = [nested]
    rows = [{"id": "a", "text": "one"}, Exploding(MemoryError()), Exploding(RecursionError()),
            {"id": "n", "text": "t", "m": nested}, Exploding(KeyError("x")), {"id": "z", "text": "z"}]
    results = list(read_records(rows))
    assert [type(r).__name__ for r in results] == [
        "SourceRecord", "RecordError", "RecordError", "RecordError", "RecordError", "SourceRecord"]
    errors = {r.position: r.reason for r in results if isinstance(r, RecordError)}
    assert errors[2].startswith("too large to hold in memory (MemoryError)")
    assert errors[3].startswith("nested too deeply")
    assert errors[4] == "field 'm' nests deeper than 64 levels (MAX_FIELD_DEPTH); flatten it"
    assert errors[5].startswith("cannot read this record (KeyError")
