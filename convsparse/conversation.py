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
            raise ValueError("text is empty")
        return v


Conversation = Sequence[Turn]
ConversationLike = Sequence[Turn | Mapping[str, Any]] | str


def parse_conversation(
    raw: ConversationLike | Any, *, record_id: str | None = None, require_user_last: bool = True
) -> list[Turn]:
    """Validate `raw` into turns, or raise `InvalidConversationError` naming the problem.

    A bare string is taken as a one-turn user conversation (a standalone query).
    """
    if isinstance(raw, str):
        raw = [{"role": "user", "text": raw}]
    if isinstance(raw, Mapping) and "turns" in raw:
        raw = raw["turns"]
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
            turns.append(Turn.model_validate(dict(item)))
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "turn"
            raise InvalidConversationError(
                f"turn {i} field {loc!r}: {first['msg']} (roles allowed: user, assistant, system)",
                record_id=record_id,
            ) from None
    if require_user_last and turns[-1].role != "user":
        raise InvalidConversationError(
            f"the last turn must be the user's current question, got role {turns[-1].role!r}",
            record_id=record_id,
        )
    return turns
