"""Conversation types and their validation (independent of any tokenizer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from convsparse.errors import InvalidConversationError

Role = Literal["user", "assistant", "system"]


class Turn(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    text: str

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty (whitespace only)")
        return v


#: The most characters a conversation's turns may hold together. The student reads at most a
#: few hundred tokens (the current question and short history views), so a longer conversation
#: only costs time: tokenizing a 12 MB turn took 18.8 s. Send the recent turns instead.
MAX_CONVERSATION_CHARS = 100_000

Conversation = Sequence[Turn]
ConversationLike = Sequence[Turn | Mapping[str, Any]] | str


#: Chat-format roles and what becomes of them (the documented rule): `user` and `assistant`
#: turns are kept; `system` turns are kept as context for our own {role, text} format and
#: dropped in the OpenAI / Hugging Face message format (`content`), where they hold the app's
#: instructions, not the user's need; `developer`, `tool` and `function` turns (instructions,
#: tool payloads) are always dropped, as is an assistant message without text (tool calls only).
DROPPED_ROLES = frozenset({"developer", "tool", "function", "ipython"})
ROLES_ALLOWED = "user, assistant, system (tool, function and developer turns are skipped)"


def conversation_too_long(n_chars: int, max_chars: int) -> str:
    """The one reason given for a conversation over `max_chars` characters."""
    return (f"too long: {n_chars:,} characters in its turns, above the limit of {max_chars:,} "
            "(MAX_CONVERSATION_CHARS); send only the recent turns (the encoder reads a few "
            "hundred tokens)")


def _content_text(content: Any, where: str) -> str:
    """OpenAI / HF `content`: a string, or a list of parts whose text parts are joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping):
                if part.get("type", "text") in ("text", "input_text", "output_text") and \
                        isinstance(part.get("text"), str):
                    texts.append(part["text"])
                # images, audio, files: nothing to search with
            else:
                raise InvalidConversationError(
                    f"{where} field 'content' part {j} is a {type(part).__name__}, expected a "
                    f"string or {{\"type\": \"text\", \"text\": ...}}")
        return "\n".join(t for t in texts if t.strip())
    raise InvalidConversationError(
        f"{where} field 'content' is a {type(content).__name__}, expected a string or a list of "
        f"text parts")


def _normalise(item: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """Our {role, text} turn, from ours or a chat message; None for a turn the rule drops."""
    turn = dict(item)
    role = turn.get("role")
    chat = "content" in turn and "text" not in turn
    if isinstance(role, str) and role in DROPPED_ROLES:
        return None
    if chat:
        if role == "system":
            return None
        text = _content_text(turn.pop("content"), where)
        if role == "assistant" and not text.strip():
            return None  # tool calls only
        turn["text"] = text
    return turn


def _turn_error(i: int, err: Mapping[str, Any], record_id: str | None) -> InvalidConversationError:
    """One plain sentence for a pydantic error (no pydantic wording, no URL)."""
    loc = ".".join(str(p) for p in err.get("loc", ())) or "turn"
    field = loc.split(".")[0]
    kind = err.get("type", "")
    if kind == "missing":
        what = "is missing" if field != "text" else "is missing (give 'text', or 'content')"
    elif field == "role":
        what = f"is {err.get('input')!r}; roles allowed: {ROLES_ALLOWED}"
    elif kind == "value_error":
        what = str(err.get("ctx", {}).get("error", err.get("msg", "")))
    elif kind.startswith("string"):
        what = f"is a {type(err.get('input')).__name__}, expected a string"
    else:
        what = str(err.get("msg", "is invalid"))
    return InvalidConversationError(f"turn {i} field {field!r} {what}", record_id=record_id)


def parse_conversation(
    raw: ConversationLike | Any, *, record_id: str | None = None, require_user_last: bool = True,
    max_chars: int | None = MAX_CONVERSATION_CHARS,
) -> list[Turn]:
    """Validate `raw` into turns, or raise `InvalidConversationError` naming the problem.

    Accepted: a list of turns (ours, ``{"role", "text"}``, or OpenAI / Hugging Face chat
    messages, ``{"role", "content"}`` with ``content`` a string or a list of text parts and an
    optional ``name``), or an object holding that list under ``"turns"`` or ``"messages"``.
    Roles follow `DROPPED_ROLES` (see above). A bare string is taken as a one-turn user
    conversation (a standalone query); a string where the list of turns belongs is an error.
    The turns' texts may hold `max_chars` characters together (`MAX_CONVERSATION_CHARS`; None:
    no limit).
    """
    if isinstance(raw, str) and max_chars is not None and len(raw) > max_chars:
        raise InvalidConversationError(conversation_too_long(len(raw), max_chars),
                                       record_id=record_id)
    if isinstance(raw, str):
        raw = [{"role": "user", "text": raw}]
    elif isinstance(raw, Mapping):
        key = "turns" if "turns" in raw else "messages" if "messages" in raw else None
        if key is None:
            hint = "; wrap a single turn in a list: [{...}]" if "role" in raw else ""
            raise InvalidConversationError(
                "expected a list of turns, or an object with \"turns\" or \"messages\"; got an "
                f"object with keys {sorted(map(str, raw))[:5]}{hint}", record_id=record_id)
        raw = raw[key]
        if isinstance(raw, (str, bytes, bytearray)) or not isinstance(raw, Sequence):
            raise InvalidConversationError(
                f"\"{key}\" must be a list of turns {{role, text}}, got {type(raw).__name__}",
                record_id=record_id)
    if not isinstance(raw, Sequence) or isinstance(raw, (bytes, bytearray)):
        raise InvalidConversationError(
            f"expected a list of turns {{role, text}}, got {type(raw).__name__}", record_id=record_id
        )
    if len(raw) == 0:
        raise InvalidConversationError("it has no turns", record_id=record_id)
    turns: list[Turn] = []
    for i, item in enumerate(raw):
        if isinstance(item, Turn):
            turns.append(item)
            continue
        if not isinstance(item, Mapping):
            raise InvalidConversationError(
                f"turn {i} is a {type(item).__name__}, expected an object with role and text",
                record_id=record_id,
            )
        try:
            turn = _normalise(item, f"turn {i}")
        except InvalidConversationError as e:
            raise InvalidConversationError(e.reason, record_id=record_id) from None
        if turn is None:
            continue
        try:
            turns.append(Turn.model_validate(turn))
        except ValidationError as e:
            raise _turn_error(i, e.errors()[0], record_id) from None
    if not turns:
        raise InvalidConversationError(
            "no user or assistant turn left (system, tool and function turns are skipped)",
            record_id=record_id)
    total = sum(len(t.text) for t in turns)
    if max_chars is not None and total > max_chars:
        raise InvalidConversationError(conversation_too_long(total, max_chars), record_id=record_id)
    if require_user_last and turns[-1].role != "user":
        raise InvalidConversationError(
            f"the last turn must be the user's current question, got role {turns[-1].role!r}",
            record_id=record_id,
        )
    return turns
