"""`read_records`: JSONL, CSV/TSV, Parquet and iterables, one result per record, never a raise."""

from __future__ import annotations

import json

import pytest

from convsparse.documents import SourceRecord
from convsparse.sources import RecordError, read_records


def _split(results):
    ok = [r for r in results if isinstance(r, SourceRecord)]
    bad = [r for r in results if isinstance(r, RecordError)]
    assert len(ok) + len(bad) == len(results)
    return ok, bad


def bad_jsonl(path, big_chars=10 * 1024 * 1024):
    lines = [
        json.dumps({"id": "a", "text": "first valid document", "title": "A"}).encode(),
        json.dumps({"id": "empty", "text": "   "}).encode(),
        b'{"id": "broken", "text": "no closing brace"',
        json.dumps({"text": "a document without an id"}).encode(),
        json.dumps({"id": "a", "text": "duplicate of a"}).encode(),
        json.dumps({"id": "huge", "text": "x" * big_chars}).encode(),
        b'{"id": "latin1", "text": "caf\xe9 au lait"}',
        b"",
        json.dumps({"id": 7, "text": "integer ids are coerced to strings"}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
        json.dumps({"id": "b", "text": "second valid document"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_jsonl_every_bad_record_reported_with_reason(tmp_path):
    results = list(read_records(bad_jsonl(tmp_path / "bad.jsonl")))
    ok, bad = _split(results)
    assert [r.id for r in ok] == ["a", "7", "b"]
    assert ok[0].fields == {"title": "A"}
    reasons = {(e.position, e.id): e.reason for e in bad}
    assert reasons[(2, "empty")] == "empty text"
    assert reasons[(3, "broken")].startswith("line 3: not valid JSON")  # the id is kept
    assert reasons[(4, None)] == "missing id field 'id'"
    assert reasons[(5, "a")] == "duplicate id, first seen at position 1"
    assert reasons[(6, "huge")].startswith("text too long: 10,485,760 characters")
    assert reasons[(7, "latin1")].startswith("invalid UTF-8")
    assert "not an object" in reasons[(10, None)]
    assert len(bad) == 7  # the blank line is not a record


def test_configurable_fields_and_limits(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"pid": "p1", "body": "hello world", "title": "t", "x": 1}) + "\n"
                    + json.dumps({"pid": "p2", "body": "y" * 50}) + "\n")
    ok, bad = _split(list(read_records(path, id_field="pid", text_field="body",
                                       fields=["title"], max_text_chars=20)))
    assert [(r.id, r.text, dict(r.fields)) for r in ok] == [("p1", "hello world", {"title": "t"})]
    assert bad[0].id == "p2" and "max_text_chars=20" in bad[0].reason


def test_csv_and_tsv(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(
        b'id,text,title\n'
        b'1,"plain text, with a comma",T1\n'
        b'2,"multi\nline text",T2\n'
        b'3,,T3\n'
        b',no id here,T4\n'
        b'5,caf\xe9,T5\n'
        b'6,fine again,T6\n'
    )
    ok, bad = _split(list(read_records(csv_path)))
    assert [r.id for r in ok] == ["1", "2", "6"]
    assert ok[1].text == "multi\nline text" and ok[1].fields == {"title": "T2"}
    assert [e.reason for e in bad][:2] == ["empty text", "empty id field 'id'"]
    assert bad[2].id == "5" and bad[2].reason.startswith("invalid UTF-8")
    assert [e.position for e in bad] == [5, 6, 7]  # physical line numbers
    tsv = tmp_path / "d.tsv"
    tsv.write_text("id\ttext\nx\thello\n")
    assert [r.id for r in read_records(tsv)] == ["x"]


def test_csv_long_field_is_a_record_error_not_a_crash(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("id,text\nbig," + "z" * 300_000 + "\nok,short\n")
    ok, bad = _split(list(read_records(path, max_text_chars=100_000)))
    assert [r.id for r in ok] == ["ok"] and bad[0].id == "big"


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"doc_id": ["p1", "p2", "p3", None], "contents": ["one", "", "three", "x"],
                      "year": [2001, 2002, 2003, 2004]})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)
    ok, bad = _split(list(read_records(path, id_field="doc_id", text_field="contents")))
    assert [(r.id, r.fields["year"]) for r in ok] == [("p1", 2001), ("p3", 2003)]
    assert [(e.position, e.id, e.reason) for e in bad] == [
        (2, "p2", "empty text"), (4, None, "missing id field 'doc_id'")]


def test_iterables_of_dicts_and_records():
    items = [{"id": "a", "text": "x"}, SourceRecord(id="b", text="y", fields={"k": 1}),
             {"id": "c", "text": b"\xff"}, "not a mapping", {"id": "a", "text": "again"}]
    ok, bad = _split(list(read_records(items)))
    assert [r.id for r in ok] == ["a", "b"] and ok[1].fields == {"k": 1}
    assert [e.position for e in bad] == [3, 4, 5]
    assert bad[0].reason.startswith("invalid UTF-8")


def test_unknown_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="format"):
        list(read_records(tmp_path / "data.xml"))
