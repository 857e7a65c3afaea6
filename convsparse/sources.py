"""The one document reader: JSONL, CSV/TSV, Parquet files or Python iterables, one result per
record. Every path that reads documents goes through it: `convsparse ingest`, `collection index`
and every benchmark corpus (`benchmark_collections.load_corpus`), `encode --documents`, the
Celery submitter, `ConversationalSearch.index_documents`, training and evaluation.

The id rule: a record's id is the value under `id_field` (default `DEFAULT_ID_FIELD`, ``"id"``)
and its text the value under `text_field` (default ``"text"``); nothing is guessed from other
keys. A source with other names passes them (`--id-field` / `--text-field` on the command line).
The format comes from the file suffix (`detect_format`): ``.jsonl``/``.ndjson`` (one JSON object
a line), ``.csv``/``.tsv`` (a header row naming the columns), ``.parquet``/``.pq``; `format=`
overrides it.

`read_records(source)` yields, in source order, either a valid `SourceRecord` or a
`RecordError(position, id, reason)`; it never raises for a single bad record, so one broken line
never sinks a file (the `streaming_bulk` habit: a bad item is a reported item, the rest stream on).
`read_documents(source)` is the all-or-nothing form (`collection index`, `encode --documents`,
training): every record, or `InvalidDocumentError` for the first bad one, in one line naming the
file, the line and the same reason (``docs.jsonl:3: document 'b': empty text``).

Checks, each reported with its reason:

- broken JSON line ("line N: not valid JSON (...)") / CSV row, a line that is not a JSON object;
- invalid UTF-8 (JSONL and CSV are read as bytes and decoded per line, so only that line fails;
  a leading byte-order mark is skipped);
- what a record itself must be (id, text, `max_text_chars`, JSON-able fields) is the
  `SourceRecord` model's rule (`convsparse/documents.py`), applied here once per record;
- a duplicate id within the source: the first occurrence wins, later ones are rejected
  ("duplicate id, first seen at line N"), so a re-ingest never depends on which copy came last;
- anything else that goes wrong while reading, parsing or checking one record (JSON nested
  deeper than the parser's recursion limit, a record too large for memory, any exception) is
  that record's error ("line N: cannot read this record (RecursionError: ...)"), never the
  file's.

`position` is the 1-based line number for JSONL and CSV (the physical line where the record
ends, as `csv` counts it), and the 1-based row / item number for Parquet and iterables.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from convsparse.documents import DEFAULT_MAX_TEXT_CHARS, SourceRecord
from convsparse.errors import InvalidDocumentError

SourceFormat = Literal["jsonl", "csv", "tsv", "parquet"]

#: The field a record's id is read from, unless the caller names another (`id_field`).
DEFAULT_ID_FIELD = "id"
#: The field a record's text is read from, unless the caller names another (`text_field`).
DEFAULT_TEXT_FIELD = "text"

_SUFFIX_FORMATS: dict[str, SourceFormat] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
}


@dataclass(frozen=True)
class RecordError:
    """A source record that cannot be indexed: where it is, its id if known, and why."""

    position: int
    id: str | None
    reason: str
    unit: str = "line"  # what `position` counts: "line" (JSONL, CSV), "row" (Parquet), "item"

    @property
    def where(self) -> str:
        return f"{self.unit} {self.position}"

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "id": self.id, "reason": self.reason}

    @property
    def bare_reason(self) -> str:
        """The reason without a leading ``"line N: "`` (some readers' reasons carry it)."""
        return self.reason.removeprefix(f"{self.where}: ")

    def location(self, source: object = None) -> str:
        """Where the record is: ``docs.jsonl:3`` for a line of a file, ``docs.parquet row 3``,
        ``item 3`` for an iterable."""
        if not is_path_source(source):
            return self.where
        return f"{source}:{self.position}" if self.unit == "line" else f"{source} {self.where}"

    def error(self, source: object = None) -> InvalidDocumentError:
        """This record's one-line error: ``docs.jsonl:3: document 'b': empty text``."""
        return InvalidDocumentError(self.bare_reason, record_id=self.id,
                                    where=self.location(source))


RecordResult = SourceRecord | RecordError


FORMATS: tuple[SourceFormat, ...] = ("jsonl", "csv", "tsv", "parquet")


def detect_format(path: str | Path) -> SourceFormat:
    """The source format from the file suffix; an unknown suffix raises
    `UnsupportedSourceError` naming the fix (`--format` / `format=`)."""
    from convsparse.errors import UnsupportedSourceError

    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIX_FORMATS[suffix]
    except KeyError:
        raise UnsupportedSourceError(
            f"cannot tell the format of {str(path)!r} from its suffix {suffix!r} (known: "
            f"{', '.join(sorted(_SUFFIX_FORMATS))}); pass --format jsonl|csv|tsv|parquet "
            "(format= in Python). A .json file must hold one JSON object per line (jsonl), not "
            "one array"
        ) from None


def check_format(format: str | None) -> SourceFormat | None:
    from convsparse.errors import UnsupportedSourceError

    if format is not None and format not in FORMATS:
        raise UnsupportedSourceError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    return format


def count_records(path: str | Path, format: SourceFormat | None = None) -> int | None:
    """Lines (JSONL; data rows for CSV/TSV, header excluded; a CSV row with a quoted newline
    counts twice) or rows (Parquet) of a file, for a progress bar's total. Fast: bytes only."""
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        return int(pq.ParquetFile(path).metadata.num_rows)
    n, last = 0, b"\n"
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    n += last != b"\n"
    return max(0, n - 1) if fmt in ("csv", "tsv") else n


def is_path_source(source: object) -> bool:
    return isinstance(source, (str, Path))


def read_records(
    source: str | Path | Iterable[Any], *, id_field: str = DEFAULT_ID_FIELD,
    text_field: str = DEFAULT_TEXT_FIELD,
    fields: Sequence[str] | None = None, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    format: SourceFormat | None = None,
) -> Iterator[RecordResult]:
    """Yield a `SourceRecord` or a `RecordError` for every record of `source`, in order.

    `source` is a path (format from the suffix unless `format` is given) or an iterable of
    mappings / `SourceRecord`s. `fields` lists the extra fields to keep (stored with the
    document); None keeps every field except the id and text fields.
    """
    validator = _RecordValidator(id_field, text_field, fields, max_text_chars)
    unit = "item"
    if isinstance(source, (str, Path)):
        path = Path(source)
        fmt = format or detect_format(path)
        unit = "row" if fmt == "parquet" else "line"
        if fmt == "jsonl":
            raw = _jsonl_rows(path)
        elif fmt in ("csv", "tsv"):
            raw = _csv_rows(path, delimiter="\t" if fmt == "tsv" else ",")
        elif fmt == "parquet":
            raw = _parquet_rows(path)
        else:  # pragma: no cover - Literal guards this
            raise ValueError(f"unknown format {fmt!r}")
    else:
        raw = _iterable_rows(source)
    for position, row in raw:
        try:
            result = validator.check(position, row)
        except Exception as e:  # RecursionError, MemoryError, a bug: this record's error only
            result = RecordError(position, _row_id(row, id_field), record_failure(e))
        if isinstance(result, RecordError) and result.unit != unit:
            result = replace(result, unit=unit)
        yield result


def read_documents(
    source: str | Path | Iterable[Any], *, id_field: str = DEFAULT_ID_FIELD,
    text_field: str = DEFAULT_TEXT_FIELD, fields: Sequence[str] | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, format: SourceFormat | None = None,
) -> list[SourceRecord]:
    """Every record of `source` (as `read_records` reads it), or `InvalidDocumentError` for the
    first bad one, naming the file, the line and the reason."""
    records = []
    for item in read_records(source, id_field=id_field, text_field=text_field, fields=fields,
                             max_text_chars=max_text_chars, format=format):
        if isinstance(item, RecordError):
            raise item.error(source)
        records.append(item)
    return records


def record_failure(error: BaseException) -> str:
    """The reason given for a record whose reading or checking raised `error` (one line)."""
    if isinstance(error, RecursionError):
        return ("nested too deeply to read (RecursionError: more levels of lists/objects than "
                "the parser allows); flatten it")
    if isinstance(error, MemoryError):
        return "too large to hold in memory (MemoryError); split it"
    text = " ".join(str(error).split())[:200]
    return f"cannot read this record ({type(error).__name__}: {text})"


def _row_id(row: object, id_field: str) -> str | None:
    try:
        if isinstance(row, Mapping):
            rid = row.get(id_field)
            if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip():
                return str(rid)
    except Exception:
        pass
    return None


class _RecordValidator:
    """Turns rows into `SourceRecord`s (the model validates), remembering ids for duplicates."""

    def __init__(
        self, id_field: str, text_field: str, fields: Sequence[str] | None, max_text_chars: int
    ):
        self.id_field = id_field
        self.text_field = text_field
        self.fields = list(fields) if fields is not None else None
        self.max_text_chars = max_text_chars
        self.seen: dict[str, int] = {}

    def check(self, position: int, row: object) -> RecordResult:
        if isinstance(row, RecordError):
            return row
        if isinstance(row, SourceRecord):
            row = {self.id_field: row.id, self.text_field: row.text, **row.fields}
        if not isinstance(row, Mapping):
            return RecordError(position, None, f"record is a {type(row).__name__}, not an object")
        try:
            record = SourceRecord.parse(row, id_field=self.id_field, text_field=self.text_field,
                                        fields=self.fields, max_text_chars=self.max_text_chars)
        except InvalidDocumentError as e:
            return RecordError(position, e.record_id, e.reason)
        if record.id in self.seen:
            return RecordError(
                position, record.id, f"duplicate id, first seen at position {self.seen[record.id]}"
            )
        self.seen[record.id] = position
        return record


def _guess_id(line: str, id_field: str = "id") -> str | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError, MemoryError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get(id_field), (str, int)):
        return str(obj[id_field])
    return None


def _guess_id_loose(line: str, id_field: str = "id") -> str | None:
    """The id of a broken JSON line, when it starts like {"id": "x", ... (for the report)."""
    import re

    m = re.match(r'\s*\{\s*"' + re.escape(id_field) + r'"\s*:\s*"([^"\\]{1,200})"', line)
    return m.group(1) if m else None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, object]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines (a trailing newline) are not records
            try:
                # a byte-order mark (Windows tools write one) is not part of the first record
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                rid = _guess_id(raw.decode("utf-8", errors="replace"))
                yield lineno, RecordError(lineno, rid, f"invalid UTF-8 at byte {e.start}: {e.reason}")
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                msg = getattr(e, "msg", str(e))
                yield lineno, RecordError(lineno, _guess_id_loose(line),
                                          f"line {lineno}: not valid JSON ({msg})")
                continue
            except Exception as e:  # RecursionError (deep nesting), MemoryError: this line only
                yield lineno, RecordError(lineno, _guess_id_loose(line),
                                          f"line {lineno}: {record_failure(e)}")
                continue
            if not isinstance(obj, dict):
                yield lineno, RecordError(
                    lineno, None, f"JSON line is a {type(obj).__name__}, not an object"
                )
                continue
            yield lineno, obj


def _has_surrogates(value: object) -> bool:
    return isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value)


def _csv_rows(path: Path, *, delimiter: str) -> Iterator[tuple[int, object]]:
    # Undecodable bytes become lone surrogates (surrogateescape), so only the row that holds
    # them fails; csv's default 128 KiB field limit would abort the file on one long text, so
    # the length check is left to the validator (which reports it per record).
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open("rb") as fb:
        text = io.TextIOWrapper(fb, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter=delimiter)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield reader.line_num, RecordError(reader.line_num, None, f"broken CSV row: {e}")
                continue
            except MemoryError as e:
                yield reader.line_num, RecordError(reader.line_num, None, record_failure(e))
                continue
            line = reader.line_num
            if None in row:  # more cells than header columns
                yield line, RecordError(line, None, "broken CSV row: more cells than columns")
                continue
            bad = [k for k, v in row.items() if _has_surrogates(v) or _has_surrogates(k)]
            if bad:
                rid = row.get("id")
                yield line, RecordError(
                    line, rid if isinstance(rid, str) and not _has_surrogates(rid) else None,
                    f"invalid UTF-8 in column(s) {', '.join(map(repr, bad))}",
                )
                continue
            yield line, row


def _parquet_rows(path: Path) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    position = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            position += 1
            yield position, row


def _iterable_rows(items: Iterable[Any]) -> Iterator[tuple[int, object]]:
    yield from enumerate(items, start=1)


__all__ = [
    "DEFAULT_ID_FIELD",
    "DEFAULT_TEXT_FIELD",
    "FORMATS",
    "RecordError",
    "RecordResult",
    "SourceFormat",
    "check_format",
    "count_records",
    "detect_format",
    "is_path_source",
    "read_documents",
    "read_records",
    "record_failure",
]
