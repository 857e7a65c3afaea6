"""`ConversationFormatter`: a conversation -> the student's token ids.

Order: the current user turn first, then earlier turns newest first, joined by the
tokenizer's separator. What does not fit in `max_length` is cut from the oldest end, because
the newest context is what disambiguates the current question.
"""

from __future__ import annotations

from dataclasses import dataclass

from convsparse.conversation import ConversationLike, parse_conversation


@dataclass(frozen=True)
class FormattedConversation:
    input_ids: list[int]
    text: str
    turns_used: int


class ConversationFormatter:
    def __init__(self, tokenizer, max_length: int = 256, *, include_assistant: bool = True):
        if tokenizer.sep_token_id is None or tokenizer.cls_token_id is None:
            raise ValueError("the tokenizer needs [CLS] and [SEP] tokens (a BERT-style tokenizer)")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.include_assistant = include_assistant

    def format(self, conversation: ConversationLike, *, record_id: str | None = None) -> FormattedConversation:
        turns = parse_conversation(conversation, record_id=record_id)
        newest_first = [turns[-1]] + [
            t for t in reversed(turns[:-1]) if self.include_assistant or t.role == "user"
        ]
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids = [cls_id]
        budget = self.max_length - 1  # [CLS]
        used = 0
        for turn in newest_first:
            if budget <= 1:
                break
            piece = self.tokenizer.encode(turn.text, add_special_tokens=False)
            piece = piece[: budget - 1]  # keep room for this turn's [SEP]
            ids.extend(piece)
            ids.append(sep_id)
            budget -= len(piece) + 1
            used += 1
        return FormattedConversation(ids, self.tokenizer.decode(ids), used)
