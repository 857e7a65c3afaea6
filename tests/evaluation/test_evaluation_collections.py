"""Collection loaders: the shipped sample, hand-written files, and the shared real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convsparse.benchmark_collections import (
    InvalidCollectionError,
    load_collection,
    load_conversations,
    load_corpus,
    load_qrels,
    sample_collection,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_sample_collection_shape(sample):
    assert len(sample.corpus) == 60
    assert len(sample.conversations) >= 20
    assert len({c.conversation_id for c in sample.conversations}) == 8
    assert all(c.rewrite for c in sample.conversations)
    assert all(c.turns[-1].role == "user" for c in sample.conversations)
    # every judged passage exists, every turn is judged
    assert {q for q in sample.qrels} == {c.id for c in sample.conversations}
    assert all(d in sample.corpus for rel in sample.qrels.values() for d in rel)
    # later turns depend on context and carry earlier turns
    lis = {c.id: c for c in sample.conversations}["lisbon_2"]
    assert "its population" in lis.question and len(lis.turns) == 3
    assert lis.rewrite == "What is the population of Lisbon?"
    # dotted tokens are in the corpus (escaping matters downstream)
    assert any("U.S." in p.text for p in sample.corpus.values())
    assert any("v2.1" in p.text for p in sample.corpus.values())


def test_sample_subset_and_source_records(sample):
    sub = sample.subset(["lisbon_1", "mars_2"])
    assert [c.id for c in sub.conversations] == ["lisbon_1", "mars_2"]
    assert set(sub.qrels) == {"lisbon_1", "mars_2"}
    assert len(sample.subset(limit=3).conversations) == 3


def test_tsv_corpus_beir_qrels_and_cast_topics(tmp_path):
    (tmp_path / "corpus.tsv").write_text("id\ttitle\ttext\np1\tPenguins\tPenguins cannot fly.\n"
                                         "p2\tKiwi\tThe kiwi lays a huge egg.\n")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nt1_2\tp2\t1\n")
    topics = [{"number": "t1", "turn": [
        {"number": 1, "raw_utterance": "Tell me about flightless birds.",
         "manual_rewritten_utterance": "Tell me about flightless birds."},
        {"number": 2, "raw_utterance": "Which one lays the biggest egg?",
         "manual_rewritten_utterance": "Which flightless bird lays the biggest egg?"}]}]
    (tmp_path / "topics.json").write_text(json.dumps(topics))
    col = load_collection(tmp_path)
    assert col.corpus["p1"].title == "Penguins" and col.corpus["p2"].text.startswith("The kiwi")
    assert col.qrels == {"t1_2": {"p2": 1}}
    second = col.conversations[1]
    assert second.id == "t1_2" and len(second.turns) == 2
    assert second.rewrite == "Which flightless bird lays the biggest egg?"


def test_speaker_aliases_and_standalone_queries(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"task_id": "a", "input": [
        {"speaker": "user", "text": "Who wrote Dracula?"},
        {"speaker": "agent", "text": "Bram Stoker."},
        {"speaker": "user", "text": "When was he born?"}]}) + "\n"
        + json.dumps({"qid": "b", "query": "boiling point of water"}) + "\n")
    a, b = load_conversations(f)
    assert [t.role for t in a.turns] == ["user", "assistant", "user"]
    assert b.turns[0].text == "boiling point of water" and b.rewrite is None


@pytest.mark.parametrize("content, needle", [
    ('{"id": "x"}\n', "document 'x': missing text field 'text'"),
    ("not json\n", "not valid JSON"),
])
def test_bad_corpus_lines_name_the_line(tmp_path, content, needle):
    f = tmp_path / "corpus.jsonl"
    f.write_text('{"id": "ok", "text": "fine"}\n' + content)
    with pytest.raises(InvalidCollectionError, match=needle) as e:
        load_corpus(f)
    assert e.value.line == 2


def test_bad_conversation_and_qrels(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": "t", "turns": [{"role": "assistant", "text": "hi"}]}) + "\n")
    with pytest.raises(InvalidCollectionError, match="last turn must be the user"):
        load_conversations(f)
    q = tmp_path / "q.tsv"
    q.write_text("t1 0 d1 1\nt1 0 d2 yes\n")
    with pytest.raises(InvalidCollectionError, match="not a number"):
        load_qrels(q)
    with pytest.raises(InvalidCollectionError, match="no conversations"):
        load_collection(tmp_path / "..")


@pytest.mark.skipif(not (SHARED / "mtrag").is_dir(), reason="shared MTRAG data not present")
def test_shared_mtrag_loads():
    col = load_collection(SHARED / "mtrag")
    assert len(col.corpus) == 1488
    assert len(col.conversations) == 409
    assert sum(1 for c in col.conversations if c.rewrite) == 164
    assert len(col.judged_conversations) == 409
    assert all(d in col.corpus for rel in col.qrels.values() for d in rel)


@pytest.mark.skipif(not (SHARED / "cast").is_dir(), reason="shared CAsT data not present")
def test_shared_cast_loads_without_corpus():
    col = load_collection(SHARED / "cast")
    assert len(col.conversations) == 934 and not col.corpus and not col.qrels
    assert all(c.rewrite for c in col.conversations)


def test_sample_collection_is_packaged():
    from importlib.resources import files

    root = files("convsparse") / "sample_data"
    assert all((root / n).is_file() for n in ("corpus.jsonl", "conversations.jsonl", "qrels.tsv"))
    assert sample_collection().name == "sample"
