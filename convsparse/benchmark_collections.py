"""Conversational retrieval collections: a passage corpus, conversations and TREC qrels.

A `Collection` is what evaluation and tuning run on. `load_collection(dir)` reads the shapes
such benchmarks usually ship in:

- corpus: any document file `convsparse.sources` reads (JSONL, CSV/TSV with a header row,
  Parquet), through the same reader and id rule as `convsparse ingest`: the id under
  ``"id"`` and the text under ``"text"`` (`id_field` / `text_field` name others), an optional
  ``"title"``, every other field kept. A bad record stops the load with the reader's one-line
  error (``corpus.jsonl:3: document 'b': empty text``);
- conversations: JSONL, one retrieval task per line: ``{"id"|"task_id"|"qid", "turns": [{"role"
  |"speaker", "text"|"utterance"}], "rewrite"?, "conversation_id"?}``; the last user turn is the
  current question (MTRAG / MTRAG-UN and the shared CAsT export use this shape). The raw TREC CAsT
  topic JSON (``[{"number", "turn": [{"number", "raw_utterance", "manual_rewritten_utterance"}]}]``)
  is expanded into one task per turn;
- qrels: TREC (``qid 0 docid rel``, whitespace separated) or BEIR TSV (``query-id corpus-id score``
  with a header).

`sample_collection()` returns the small hand-written collection shipped in
``convsparse/sample_data`` (60 passages, 8 conversations, 25 turns).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convsparse.conversation import Turn, parse_conversation
from convsparse.documents import SourceRecord, document_text
from convsparse.errors import InvalidCollectionError, InvalidConversationError
from convsparse.sources import DEFAULT_ID_FIELD, DEFAULT_TEXT_FIELD, RecordError, read_records


def _sample_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("convsparse") / "sample_data"))


SAMPLE_DIR = _sample_dir()

_TASK_ID_KEYS = ("id", "task_id", "qid", "query_id", "_id")
_REWRITE_KEYS = ("rewrite", "manual_rewrite", "manual_rewritten_utterance", "rewritten_utterance",
                 "standalone_question")
_ROLE_ALIASES = {"user": "user", "human": "user", "question": "user", "assistant": "assistant",
                 "agent": "assistant", "system": "system", "bot": "assistant", "response": "assistant"}
_CORPUS_NAMES = ("corpus.jsonl", "corpus.tsv", "corpus.csv", "corpus.parquet", "collection.tsv",
                 "passages.jsonl", "documents.jsonl")
_CONV_NAMES = ("conversations.jsonl", "queries.jsonl", "topics.jsonl", "tasks.jsonl", "topics.json")
_QRELS_NAMES = ("qrels.tsv", "qrels.trec", "qrels.txt", "qrels")


@dataclass(frozen=True)
class Passage:
    id: str
    text: str
    title: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def encoded_text(self) -> str:
        """What an encoder reads (`convsparse.documents.document_text`)."""
        return document_text(self.title, self.text)


@dataclass(frozen=True)
class ConversationTask:
    """One retrieval task: a conversation whose last user turn is the current question."""

    id: str
    turns: tuple[Turn, ...]
    rewrite: str | None = None
    conversation_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return self.turns[-1].text

    def concatenated(self, *, include_assistant: bool = True) -> str:
        """All turns oldest first, joined by spaces (the BM25 'raw conversation' view)."""
        return " ".join(t.text for t in self.turns if include_assistant or t.role != "assistant")


@dataclass
class Collection:
    """A passage corpus, conversation tasks and relevance judgments (qrels[task][passage])."""

    corpus: dict[str, Passage]
    conversations: list[ConversationTask]
    qrels: dict[str, dict[str, int]]
    name: str = "collection"

    def __repr__(self) -> str:
        return (f"Collection({self.name!r}: {len(self.corpus)} passages, "
                f"{len(self.conversations)} conversation turns, {len(self.qrels)} judged)")

    @property
    def judged_conversations(self) -> list[ConversationTask]:
        """Tasks with at least one relevant passage."""
        return [c for c in self.conversations if any(r > 0 for r in self.qrels.get(c.id, {}).values())]

    def subset(self, conversation_ids: Iterable[str] | None = None, *, limit: int | None = None,
               judged_only: bool = False) -> Collection:
        """A collection with the same corpus and only some conversations (and their qrels)."""
        convs = self.judged_conversations if judged_only else list(self.conversations)
        if conversation_ids is not None:
            wanted = set(conversation_ids)
            convs = [c for c in convs if c.id in wanted]
        if limit is not None:
            convs = convs[:limit]
        ids = {c.id for c in convs}
        return Collection(self.corpus, convs, {q: r for q, r in self.qrels.items() if q in ids},
                          self.name)

    def source_records(self) -> Iterator[SourceRecord]:
        """The corpus as `SourceRecord`s (the title is a stored field, and encoded with the text
        by `document_text`; the stored text stays the passage's own)."""
        for p in self.corpus.values():
            yield SourceRecord(id=p.id, text=p.text, fields={"title": p.title, **dict(p.fields)})


# ---------------------------------------------------------------------------------------------
# Readers


def _first(record: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in record and record[k] is not None:
            return record[k]
    return None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig")  # a byte-order mark on the first line is skipped
            except UnicodeDecodeError as e:
                raise InvalidCollectionError(f"the line is not UTF-8 (invalid byte at offset "
                                             f"{e.start})", path=path, line=n) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidCollectionError(f"not valid JSON ({e.msg})", path=path, line=n) from None
            if not isinstance(obj, dict):
                raise InvalidCollectionError("expected one JSON object per line", path=path, line=n)
            yield n, obj


def load_corpus(path: str | Path, *, id_field: str = DEFAULT_ID_FIELD,
                text_field: str = DEFAULT_TEXT_FIELD) -> dict[str, Passage]:
    """Passages by id, read by `convsparse.sources.read_records` (the format from the suffix);
    the first bad record raises `InvalidCollectionError` with the reader's file, line and
    reason."""
    path = Path(path)
    corpus: dict[str, Passage] = {}
    for item in read_records(path, id_field=id_field, text_field=text_field):
        if isinstance(item, RecordError):
            error = item.error(path)
            raise InvalidCollectionError(str(error).removeprefix(f"{error.where}: "), path=path,
                                         line=item.position)
        fields = dict(item.fields)
        title = fields.pop("title", None)
        corpus[item.id] = Passage(item.id, item.text, str(title or ""), fields)
    return corpus


def _turns_from(raw_turns: Any, *, task_id: str, path: Path, line: int) -> tuple[Turn, ...]:
    if not isinstance(raw_turns, list):
        raise InvalidCollectionError(f"task {task_id!r}: 'turns' must be a list", path=path, line=line)
    normalised = []
    for t in raw_turns:
        if isinstance(t, str):
            normalised.append({"role": "user", "text": t})
            continue
        if not isinstance(t, Mapping):
            raise InvalidCollectionError(f"task {task_id!r}: a turn must be an object",
                                         path=path, line=line)
        role = str(t.get("role") or t.get("speaker") or "user").lower()
        text = _first(t, ("text", "utterance", "raw_utterance", "content"))
        normalised.append({"role": _ROLE_ALIASES.get(role, role), "text": text or ""})
    try:
        return tuple(parse_conversation(normalised, record_id=task_id))
    except InvalidConversationError as e:
        raise InvalidCollectionError(str(e), path=path, line=line) from None


def _cast_topics(path: Path, topics: list[Any]) -> list[tuple[ConversationTask, dict[str, Any]]]:
    """Raw TREC CAsT topics: each turn becomes a task carrying the previous user turns (its
    record: ``{id, conversation_id, turns, rewrite?}``)."""
    tasks = []
    for topic in topics:
        num = str(topic.get("number"))
        history: list[Turn] = []
        for turn in topic.get("turn", []):
            text = turn.get("raw_utterance") or turn.get("utterance")
            if not text:
                raise InvalidCollectionError(f"topic {num}: a turn has no raw_utterance", path=path)
            history.append(Turn(role="user", text=text))
            rewrite = _first(turn, _REWRITE_KEYS) or turn.get("automatic_rewritten_utterance")
            task = ConversationTask(f"{num}_{turn.get('number')}", tuple(history), rewrite, num)
            record = {"id": task.id, "conversation_id": num,
                      "turns": [{"role": t.role, "text": t.text} for t in task.turns],
                      **({"rewrite": rewrite} if rewrite else {})}
            tasks.append((task, record))
    return tasks


def load_task_records(path: str | Path) -> list[tuple[ConversationTask, dict[str, Any]]]:
    """Each conversation task of `path` (JSONL, one task per line, or raw CAsT topic JSON) with
    the record it came from (JSONL: the line's object, every field kept; CAsT: an ``{id,
    conversation_id, turns, rewrite}`` record built from the task), read once."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidCollectionError(f"not valid JSON ({getattr(e, 'msg', e)})",
                                         path=path) from None
        if isinstance(data, list) and data and isinstance(data[0], Mapping) and "turn" in data[0]:
            return _cast_topics(path, data)
        raise InvalidCollectionError("JSON conversations must be TREC CAsT topics "
                                     "([{number, turn: [...]}]); use JSONL otherwise", path=path)
    tasks = []
    for n, obj in _read_jsonl(path):
        tid = _first(obj, _TASK_ID_KEYS)
        if tid is None:
            raise InvalidCollectionError(f"a task needs an id ({'/'.join(_TASK_ID_KEYS)})",
                                         path=path, line=n)
        raw_turns = obj.get("turns") if "turns" in obj else obj.get("input")
        if raw_turns is None and isinstance(obj.get("text") or obj.get("query"), str):
            raw_turns = [obj.get("text") or obj.get("query")]  # a standalone query
        turns = _turns_from(raw_turns, task_id=str(tid), path=path, line=n)
        rewrite = _first(obj, _REWRITE_KEYS)
        known = {*_TASK_ID_KEYS, *_REWRITE_KEYS, "turns", "input", "conversation_id"}
        tasks.append((ConversationTask(
            str(tid), turns, str(rewrite) if rewrite else None,
            str(obj["conversation_id"]) if obj.get("conversation_id") is not None else None,
            {k: v for k, v in obj.items() if k not in known},
        ), obj))
    return tasks


def load_conversations(path: str | Path) -> list[ConversationTask]:
    """Conversation tasks from JSONL (one task per line) or raw CAsT topic JSON."""
    return [task for task, _ in load_task_records(path)]


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels (``qid iter docid rel``) or BEIR TSV (``qid docid score`` with a header)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:
                qid, _, docid, rel = parts
            elif len(parts) == 3:
                qid, docid, rel = parts
            else:
                raise InvalidCollectionError(
                    "expected 'qid 0 docid relevance' (TREC) or 'qid docid relevance'",
                    path=path, line=n)
            try:
                value = int(float(rel))
            except ValueError:
                if n == 1:
                    continue  # header line ("query-id corpus-id score")
                raise InvalidCollectionError(f"relevance {rel!r} is not a number",
                                             path=path, line=n) from None
            qrels.setdefault(qid, {})[docid] = value
    return qrels


def _find(directory: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def load_collection(
    path: str | Path, *, corpus: str | Path | None = None, conversations: str | Path | None = None,
    qrels: str | Path | None = None, name: str | None = None,
) -> Collection:
    """Read a collection folder (``corpus.jsonl|tsv``, ``conversations.jsonl``, ``qrels.tsv``).

    Explicit file paths override what is found in the folder. A folder without a corpus or qrels
    (e.g. CAsT conversations only) gives an empty corpus / empty qrels.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise InvalidCollectionError("not a folder; pass the folder holding corpus.jsonl, "
                                     "conversations.jsonl and qrels.tsv", path=directory)
    corpus_path = Path(corpus) if corpus else _find(directory, _CORPUS_NAMES)
    conv_path = Path(conversations) if conversations else _find(directory, _CONV_NAMES)
    qrels_path = Path(qrels) if qrels else _find(directory, _QRELS_NAMES)
    if conv_path is None:
        raise InvalidCollectionError(f"no conversations file (looked for {', '.join(_CONV_NAMES)})",
                                     path=directory)
    return Collection(
        corpus=load_corpus(corpus_path) if corpus_path else {},
        conversations=load_conversations(conv_path),
        qrels=load_qrels(qrels_path) if qrels_path else {},
        name=name or directory.resolve().name,
    )


def sample_collection() -> Collection:
    """The small hand-written collection shipped with convsparse (for tests and quickstarts)."""
    return load_collection(SAMPLE_DIR, name="sample")


__all__ = [
    "SAMPLE_DIR",
    "Collection",
    "ConversationTask",
    "InvalidCollectionError",
    "Passage",
    "load_collection",
    "load_conversations",
    "load_corpus",
    "load_qrels",
    "load_task_records",
    "sample_collection",
]
