"""The one reader of conversation files: `convsparse search -c FILE`, `convsparse encode
--conversation FILE` and Python callers read them here; `parse_conversation`
(`convsparse/conversation.py`) validates each conversation in memory.

The rule:

- The file is UTF-8; a leading byte-order mark is skipped.
- ``.jsonl`` / ``.ndjson``: one conversation per non-blank line.
- Any other name: one JSON document, either one conversation (every form `parse_conversation`
  accepts: a list of turns, an object with ``"turns"`` or ``"messages"``, or a string, a
  one-turn question) or a list of conversations (a list whose first item is a list, a string or
  an object with ``"turns"`` / ``"messages"``).
- A conversation's id is its object's ``"id"``, else its 0-based position in the file.

`search` takes a file holding exactly one conversation, `encode` any number. Every problem is one
line naming the file, the line (JSONL) and the reason:
``conv.jsonl:3: conversation 'c2': the last turn must be the user's current question, ...``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convsparse.conversation import Turn, parse_conversation
from convsparse.errors import InvalidConversationError

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class FileConversation:
    """One validated conversation of a file: its id, its turns, and its line (JSONL)."""

    id: str
    turns: list[Turn]
    line: int | None = None


def _fail(reason: str, where: str, record_id: str | None = None) -> InvalidConversationError:
    return InvalidConversationError(reason, record_id=record_id, where=where)


def _decode(data: bytes, where: str, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fail(f"{what} is not UTF-8 (invalid byte at offset {e.start}); save it as UTF-8, "
                    "e.g. `iconv -f latin1 -t utf-8`", where) from None


def _load_json(text: str, where: str, *, jsonl: bool = False) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if jsonl else f"line {e.lineno} column {e.colno}"
        raise _fail(f"not valid JSON ({e.msg} at {at})", where) from None
    except RecursionError:
        raise _fail("nested too deeply to be a conversation", where) from None
    if not isinstance(value, (list, dict, str)):
        kind = {type(None): "null", bool: "boolean", int: "number", float: "number"}.get(
            type(value), "value")
        raise _fail(f"holds a JSON {kind}, not a conversation; pass a turn list, "
                    "{\"turns\": [...]} or a \"quoted string\"", where)
    return value


def _is_conversation_list(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    return isinstance(first, (list, str)) or (
        isinstance(first, Mapping) and ("turns" in first or "messages" in first))


def _checked(raw: Any, position: int, where: str, *, label_by_position: bool,
             line: int | None = None, require_user_last: bool = True) -> FileConversation:
    """`raw` validated; an error names it by its id, else (in a JSON list) by its position."""
    given = raw.get("id") if isinstance(raw, Mapping) else None
    rid = str(given) if given is not None else None
    label = rid if rid is not None else str(position) if label_by_position else None
    try:
        turns = parse_conversation(raw, record_id=label, require_user_last=require_user_last)
    except InvalidConversationError as e:
        raise InvalidConversationError(e.reason, record_id=e.record_id, where=where) from None
    return FileConversation(rid if rid is not None else str(position), turns, line)


def conversations_from_json(text: str, *, where: str,
                            require_user_last: bool = True) -> list[FileConversation]:
    """The conversations of one JSON document (`text`; a file's content, ``-c`` text, stdin),
    by the rule above; `where` names it in errors."""
    value = _load_json(text.strip(), where)
    if _is_conversation_list(value):
        return [_checked(raw, i, where, label_by_position=True, require_user_last=require_user_last)
                for i, raw in enumerate(value)]
    return [_checked(value, 0, where, label_by_position=False, require_user_last=require_user_last)]


def read_conversation_file(path: str | Path, *,
                           require_user_last: bool = True) -> list[FileConversation]:
    """Every conversation of the file at `path`, validated, by the rule above; the first
    problem raises `InvalidConversationError` naming the file, the line and the reason."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix.lower() not in JSONL_SUFFIXES:
        return conversations_from_json(_decode(data, str(path), "the file"), where=str(path),
                                       require_user_last=require_user_last)
    out: list[FileConversation] = []
    for n, raw_line in enumerate(data.splitlines(), start=1):
        where = f"{path}:{n}"
        line = _decode(raw_line, where, "the line")
        if not line.strip():
            continue
        value = _load_json(line, where, jsonl=True)
        out.append(_checked(value, len(out), where, label_by_position=False, line=n,
                            require_user_last=require_user_last))
    if not out:
        raise _fail("holds no conversation (every line is blank)", str(path))
    return out


__all__ = ["JSONL_SUFFIXES", "FileConversation", "conversations_from_json", "read_conversation_file"]
