"""One reader per format, seen from the commands: `collection index`, `ingest` and `encode
--documents` accept the same document files and reject the same bad records with the same
reason (the all-or-nothing commands with the same one-line error); `search -c FILE` and `encode
--conversation` accept the same conversation files and reject the same bad ones with the same
one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convsparse.cli import app

runner = CliRunner()

TASKS = json.dumps({"id": "t1", "turns": [{"role": "user", "text": "Where is Lisbon?"}]}) + "\n"


@pytest.fixture
def env(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVSPARSE_DEBUG", raising=False)
    return ["--model", str(tiny_model_dir), "--runtime", "torch"]


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def error_line(out: str) -> str:
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    return lines[0]


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


LISBON = {"id": "a", "title": "Lisbon", "text": "Lisbon is the capital of Portugal."}
HEARTS = {"id": "b", "text": "Octopuses have three hearts."}

# (case, file suffix, content, the reason every command gives, or None: accepted)
DOCUMENT_FILES = [
    ("jsonl", ".jsonl", _jsonl(LISBON, HEARTS), None),
    ("jsonl with a byte-order mark", ".jsonl", b"\xef\xbb\xbf" + _jsonl(LISBON, HEARTS), None),
    ("csv", ".csv", b"id,title,text\na,Lisbon,Lisbon is the capital.\nb,,Octopuses have hearts.\n",
     None),
    ("tsv", ".tsv", b"id\ttitle\ttext\na\tLisbon\tLisbon is the capital.\nb\t\tOctopuses.\n", None),
    ("parquet", ".parquet", None, None),
    ("broken JSON line", ".jsonl", _jsonl(LISBON) + b'{"id": "b", broken\n',
     ":2: document 'b': not valid JSON (Expecting"),
    ("no text", ".jsonl", _jsonl(LISBON, {"id": "b"}), ":2: document 'b': missing text field 'text'"),
    ("no id", ".jsonl", _jsonl(LISBON, {"_id": "b", "text": "x"}), ":2: missing id field 'id'"),
    ("empty text", ".jsonl", _jsonl(LISBON, {"id": "b", "text": " "}), ":2: document 'b': empty text"),
    ("duplicate id", ".jsonl", _jsonl(LISBON, LISBON),
     ":2: document 'a': duplicate id, first seen at position 1"),
    ("invalid UTF-8", ".jsonl", _jsonl(LISBON) + b'{"id": "b", "text": "caf\xe9"}\n',
     ":2: document 'b': invalid UTF-8 at byte"),
    ("a list, not an object", ".jsonl", _jsonl(LISBON, ["b", "x"]),
     ":2: JSON line is a list, not an object"),
    ("CSV row without text", ".csv", b"id,text\na,Lisbon\nb,\n", ":3: document 'b': empty text"),
]


@pytest.mark.parametrize("case, suffix, content, reason", DOCUMENT_FILES,
                         ids=[c[0] for c in DOCUMENT_FILES])
def test_document_files_read_alike_by_collection_index_ingest_and_encode(
        env, tmp_path, case, suffix, content, reason):
    if content is None:
        pytest.importorskip("pyarrow")
        content = _parquet([LISBON, HEARTS])
    folder = tmp_path / "col"
    folder.mkdir()
    corpus = folder / f"corpus{suffix}"
    corpus.write_bytes(content)
    (folder / "conversations.jsonl").write_text(TASKS, encoding="utf-8")

    indexed = run("collection", "index", folder, "--index", "col", *env)
    ingested = run("ingest", corpus, "--index", "ing", *env)
    encoded = run("encode", "--documents", corpus, "--out", tmp_path / "maps.json", *env)
    if reason is None:
        assert indexed[0] == 0 and "indexed 2 passages" in indexed[1], indexed
        assert ingested[0] == 0 and "indexed 2, failed 0" in ingested[1], ingested
        assert encoded[0] == 0, encoded
        maps = json.loads((tmp_path / "maps.json").read_text())["term_maps"]
        assert [m["id"] for m in maps] == ["a", "b"]
        return
    # the all-or-nothing commands: the same one line, naming the file, the line and the reason
    assert indexed[0] == 2 and encoded[0] == 2, (indexed, encoded)
    line = error_line(indexed[1])
    assert line == error_line(encoded[1]), (indexed, encoded)
    assert line.startswith(f"error: {corpus}{reason}"), line
    # ingest indexes the good records and reports the bad one with the same reason
    assert ingested[0] == 1 and "indexed 1, failed 1" in ingested[1], ingested
    where, _, bare = reason.lstrip(":").partition(": ")
    bare = bare.removeprefix("document 'a': ").removeprefix("document 'b': ")
    assert f"line {where}: {bare}" in ingested[1], ingested


CONVERSATION = [{"role": "user", "text": "Tell me about octopuses"},
                {"role": "assistant", "text": "They are clever."},
                {"role": "user", "text": "How many hearts?"}]
ASSISTANT_LAST = [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]

# (case, file suffix, content, ids `encode` gives (None: rejected), the reason both give)
CONVERSATION_FILES = [
    ("turn list", ".json", json.dumps(CONVERSATION).encode(), ["0"], None),
    ("turns object", ".json", json.dumps({"id": "c1", "turns": CONVERSATION}).encode(), ["c1"], None),
    ("OpenAI messages", ".json", json.dumps({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Octopus hearts?"}]}]}).encode(),
     ["0"], None),
    ("a string", ".json", b'"how many hearts do octopuses have"', ["0"], None),
    ("byte-order mark", ".json", b"\xef\xbb\xbf" + json.dumps(CONVERSATION).encode(), ["0"], None),
    ("one JSONL line", ".jsonl", json.dumps({"id": "c1", "turns": CONVERSATION}).encode() + b"\n",
     ["c1"], None),
    ("latin-1", ".json", '[{"role": "user", "text": "caf\u00e9"}]'.encode("latin-1"), None,
     ": the file is not UTF-8 (invalid byte at offset 30)"),
    ("latin-1 line", ".jsonl", b'{"turns": [{"role": "user", "text": "caf\xe9"}]}\n', None,
     ":1: the line is not UTF-8 (invalid byte at offset 40)"),
    ("not JSON", ".json", b"[{role: user}]", None, ": not valid JSON (Expecting property name"),
    ("broken second line", ".jsonl", json.dumps(CONVERSATION).encode() + b"\n[{\n", None,
     ":2: not valid JSON ("),
    ("assistant last", ".json", json.dumps(ASSISTANT_LAST).encode(), None,
     ": the last turn must be the user's current question"),
    ("assistant last, with id", ".jsonl", json.dumps({"id": "x", "turns": ASSISTANT_LAST}).encode(),
     None, ":1: conversation 'x': the last turn must be the user's current question"),
    ("a number", ".json", b"42", None, ": holds a JSON number, not a conversation"),
    ("no turns", ".json", b"[]", None, ": it has no turns"),
    ("nested too deeply", ".json", b"[" * 10000 + b"]" * 10000, None,
     ": nested too deeply to be a conversation"),
    ("blank", ".jsonl", b"\n\n", None, ": holds no conversation"),
]


@pytest.fixture
def docs_index(env, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_bytes(_jsonl(LISBON, HEARTS))
    code, out = run("ingest", src, "--index", "docs", *env)
    assert code == 0, out
    return "docs"


@pytest.mark.parametrize("case, suffix, content, ids, reason", CONVERSATION_FILES,
                         ids=[c[0] for c in CONVERSATION_FILES])
def test_conversation_files_read_alike_by_search_and_encode(env, docs_index, tmp_path, case, suffix,
                                                           content, ids, reason):
    path = tmp_path / f"conv{suffix}"
    path.write_bytes(content)
    searched = run("search", "--index", docs_index, "-c", path, "--json", *env)
    encoded = run("encode", "--conversation", path, *env)
    if reason is None:
        assert searched[0] == 0 and '"hits"' in searched[1], searched
        assert encoded[0] == 0, encoded
        assert [m["id"] for m in json.loads(encoded[1])["term_maps"]] == ids
        return
    assert searched[0] == 2 and encoded[0] == 2, (searched, encoded)
    line = error_line(searched[1])
    assert line == error_line(encoded[1]), (searched, encoded)
    assert line.startswith(f"error: {path}{reason}"), line


@pytest.mark.parametrize("suffix, content", [
    (".jsonl", (json.dumps(CONVERSATION) + "\n" + json.dumps({"id": "c2", "turns": CONVERSATION})
                + "\n").encode()),
    (".json", json.dumps([CONVERSATION, {"id": "c2", "turns": CONVERSATION}]).encode()),
])
def test_a_file_of_several_conversations_is_encoded_whole_and_refused_by_search(
        env, docs_index, tmp_path, suffix, content):
    path = tmp_path / f"convs{suffix}"
    path.write_bytes(content)
    code, out = run("encode", "--conversation", path, *env)
    assert code == 0, out
    assert [m["id"] for m in json.loads(out)["term_maps"]] == ["0", "c2"]
    code, out = run("search", "--index", docs_index, "-c", path, *env)
    assert code == 2 and f"{path} holds 2 conversations; search takes one" in error_line(out), out


def test_the_benchmark_corpus_reader_is_the_ingest_reader(tmp_path):
    from convsparse.benchmark_collections import load_corpus
    from convsparse.sources import read_documents

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(_jsonl(LISBON, {"pid": "b", "body": "Octopuses."}))
    with pytest.raises(ValueError) as collection_error:
        load_corpus(path)
    with pytest.raises(ValueError) as documents_error:
        read_documents(path)
    assert str(collection_error.value) == str(documents_error.value) == \
        f"{path}:2: missing id field 'id'"
    other = tmp_path / "other.jsonl"
    other.write_bytes(_jsonl({"pid": "b", "body": "Octopuses.", "title": "Octopus"}))
    corpus = load_corpus(other, id_field="pid", text_field="body")  # named, never guessed
    assert corpus["b"].text == "Octopuses." and corpus["b"].title == "Octopus"


def test_shipped_sample_and_shared_corpora_use_the_default_id_field():
    from convsparse.benchmark_collections import SAMPLE_DIR, load_corpus

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    for folder in [SAMPLE_DIR, *(shared / n for n in ("mtrag", "mtrag-pooled"))]:
        if (folder / "corpus.jsonl").is_file():
            assert load_corpus(folder / "corpus.jsonl")
