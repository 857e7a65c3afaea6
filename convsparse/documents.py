"""A document to index, the one place its record is validated, and the one rule for the text
it is encoded from.

`SourceRecord` is a pydantic model: a record that exists is valid (a non-empty string id, a
non-blank string text within `max_text_chars`, JSON-able stored fields), so nothing downstream
checks it again. `SourceRecord.parse(row, ...)` reads one source row (the id and text under the
source's own field names) and raises `InvalidDocumentError` naming the record and the reason;
`convsparse/sources.py` turns that into a per-record report and reads on.

`document_text(title, text)` is the only place that decides what an encoder reads for a
document: the title, a newline, then the text (the text alone when there is no title). Every
path uses it: ingestion (`convsparse ingest`, `collection index`, `quickstart`,
`ConversationalSearch.index_documents`, the Celery workers), `convsparse encode --documents`,
evaluation indexing, BM25 baselines, distillation and its teachers. The stored `text` field is
always the source text itself, never the title-prefixed one. (WordPiece tokenizers treat the
newline as whitespace; the shipped student was distilled on exactly this form.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from convsparse.errors import InvalidDocumentError

#: Default cap on a document's text length, in characters. A longer text is rejected, not
#: truncated: truncating silently indexes something other than the source, and SPLADE models
#: read only the first few hundred tokens anyway, so a huge text is almost always an
#: extraction bug worth seeing.
DEFAULT_MAX_TEXT_CHARS = 1_000_000

#: How deep stored fields may nest (lists and objects inside each other). Fields travel as
#: JSON through Celery messages, bulk bodies and the embedded store, whose encoders recurse; a
#: record nested deeper is rejected with this reason instead of failing somewhere downstream.
MAX_FIELD_DEPTH = 64


def document_text(title: Any, text: str) -> str:
    """What an encoder reads for a document: ``"<title>\\n<text>"``, or ``text`` without a
    title (None or blank)."""
    title = str(title).strip() if title is not None else ""
    return f"{title}\n{text}" if title else text


def text_too_long(n_chars: int, max_text_chars: int) -> str:
    """The one reason every ingestion path gives for a text over `max_text_chars`."""
    return (f"text too long: {n_chars:,} characters, above max_text_chars={max_text_chars:,}; "
            "split the document or raise the limit")


def _reject(message: str) -> PydanticCustomError:
    # A custom error keeps our sentence as the message (no "Value error, " prefix, no URL).
    return PydanticCustomError("invalid_record", message)


def _field_name(info: ValidationInfo, which: str) -> str:
    return str((info.context or {}).get(f"{which}_field", which))


def _jsonable(value: Any, where: str, depth: int = 0) -> Any:
    """Stored fields travel through JSON (Celery messages, bulk bodies, the embedded store)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _reject(f"field {where!r} is {value}, which JSON cannot carry")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (Mapping, list, tuple)) and depth >= MAX_FIELD_DEPTH:
        top = where.split(".")[0].split("[")[0]
        raise _reject(f"field {top!r} nests deeper than {MAX_FIELD_DEPTH} levels "
                      "(MAX_FIELD_DEPTH); flatten it")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class SourceRecord(BaseModel):
    """One valid document to index: its source id, its text, and fields to store (``title``
    among them, when the source has one). Build it with keywords, or from a source row with
    `SourceRecord.parse`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    fields: dict[str, Any] = {}

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, raw: Any, info: ValidationInfo) -> str:
        name = _field_name(info, "id")
        if raw is None:
            raise _reject(f"missing id field {name!r}")
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise _reject(f"id field {name!r} is a {type(raw).__name__}, not a string")
        if not str(raw).strip():
            raise _reject(f"empty id field {name!r}")
        return str(raw)

    @field_validator("text", mode="before")
    @classmethod
    def _check_text(cls, raw: Any, info: ValidationInfo) -> str:
        name = _field_name(info, "text")
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _reject(f"invalid UTF-8 in field {name!r}: {e}") from None
        if raw is None:
            raise _reject(f"missing text field {name!r}")
        if not isinstance(raw, str):
            raise _reject(f"text field {name!r} is a {type(raw).__name__}, not a string")
        if not raw.strip():
            raise _reject("empty text")
        limit = (info.context or {}).get("max_text_chars", DEFAULT_MAX_TEXT_CHARS)
        if len(raw) > limit:
            raise _reject(text_too_long(len(raw), limit))
        return raw

    @field_validator("fields", mode="before")
    @classmethod
    def _check_fields(cls, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise _reject(f"fields must be a mapping, got {type(raw).__name__}")
        return {str(k): _jsonable(v, str(k)) for k, v in raw.items() if v is not None}

    @property
    def title(self) -> str | None:
        title = self.fields.get("title")
        return str(title) if title is not None else None

    @property
    def encoded_text(self) -> str:
        """The text the encoder reads (`document_text`)."""
        return document_text(self.title, self.text)

    @classmethod
    def parse(
        cls, row: Mapping[str, Any], *, id_field: str = "id", text_field: str = "text",
        fields: Sequence[str] | None = None, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> SourceRecord:
        """Validate one source row: the id under `id_field` (an integer becomes its string),
        the text under `text_field`, and the stored fields (`fields` lists which to keep; None
        keeps every other key). Raises `InvalidDocumentError` with the record's id (when it
        has one) and the reason."""
        keep = list(fields) if fields is not None else [
            k for k in row if k not in (id_field, text_field)]
        data = {"id": row.get(id_field), "text": row.get(text_field),
                "fields": {k: row[k] for k in keep if k in row}}
        context = {"id_field": id_field, "text_field": text_field,
                   "max_text_chars": max_text_chars}
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as e:
            raw_id = row.get(id_field)
            known = (str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool)
                     and str(raw_id).strip() else None)
            raise InvalidDocumentError(e.errors()[0]["msg"], record_id=known) from None


__all__ = ["DEFAULT_MAX_TEXT_CHARS", "MAX_FIELD_DEPTH", "SourceRecord", "document_text", "text_too_long"]
