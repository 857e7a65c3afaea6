"""A document to index, and the one rule for the text it is encoded from.

`document_text(title, text)` is the only place that decides what an encoder reads for a
document: the title, a newline, then the text (the text alone when there is no title). Every
path uses it: ingestion (`convsparse ingest`, `collection index`, `quickstart`,
`ConversationalSearch.index_documents`, the Celery workers), `convsparse encode --documents`,
evaluation indexing, BM25 baselines, distillation and its teachers. The stored `text` field is
always the source text itself, never the title-prefixed one. (WordPiece tokenizers treat the
newline as whitespace; the shipped student was distilled on exactly this form.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def document_text(title: Any, text: str) -> str:
    """What an encoder reads for a document: ``"<title>\\n<text>"``, or ``text`` without a
    title (None or blank)."""
    title = str(title).strip() if title is not None else ""
    return f"{title}\n{text}" if title else text


@dataclass(frozen=True)
class SourceRecord:
    """One document to index: its source id, its text, and fields to store (``title`` among
    them, when the source has one)."""

    id: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str | None:
        title = self.fields.get("title") if isinstance(self.fields, Mapping) else None
        return str(title) if title is not None else None

    @property
    def encoded_text(self) -> str:
        """The text the encoder reads (`document_text`)."""
        return document_text(self.title, self.text)

    @classmethod
    def from_mapping(
        cls, row: Mapping[str, Any], *, id_field: str = "id", text_field: str = "text"
    ) -> SourceRecord:
        """Build from a dict (other keys become stored fields). Does not validate."""
        extra = {k: v for k, v in row.items() if k not in (id_field, text_field)}
        rid = row.get(id_field)
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        return cls(id=rid, text=row.get(text_field), fields=extra)  # type: ignore[arg-type]


__all__ = ["SourceRecord", "document_text"]
