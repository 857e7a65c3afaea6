"""How an ingestion reads and groups its records: small values, passed whole.

In the style of httpx's `Timeout` / `Limits`: options that belong together are one frozen value,
and a front door takes that value instead of a long list of keyword parameters.

- `SourceOptions`: how `read_records` reads the source (id and text fields, the fields kept,
  the text limit, the file format);
- `Batching`: documents per forward pass, per chunk (the unit encoded and written together,
  one task on the queue) and how many chunks the queue holds at once;
- `IngestOptions`: both, what `integration.ingestion.ingest` takes. The Celery submitter's
  `workers.submit.JobOptions` is an `IngestOptions` with the queue's timeouts added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convsparse.documents import DEFAULT_MAX_TEXT_CHARS

#: Documents per forward pass in this process (the workers use CONVSPARSE_INGEST_BATCH_SIZE).
DEFAULT_BATCH_SIZE = 32
#: Documents per chunk when neither the caller nor CONVSPARSE_INGEST_CHUNK_SIZE says otherwise.
DEFAULT_CHUNK_SIZE = 1024
#: Characters of text per chunk (a few MB per message: small batches through the broker).
DEFAULT_MAX_CHUNK_CHARS = 2_000_000
#: Chunks queued or running at once (backpressure on the broker).
DEFAULT_MAX_IN_FLIGHT = 8


def _at_least_one(owner: str, **values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{owner}.{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class SourceOptions:
    """How the source is read (`convsparse.sources.read_records`): which fields
    hold the id and the text, which other fields are kept (None: all of them), the longest
    text accepted, and the file format (None: from the suffix)."""

    id_field: str = "id"
    text_field: str = "text"
    fields: tuple[str, ...] | None = None
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    format: str | None = None

    def __post_init__(self) -> None:
        if self.fields is not None and not isinstance(self.fields, tuple):
            object.__setattr__(self, "fields", tuple(self.fields))
        _at_least_one("SourceOptions", max_text_chars=self.max_text_chars)


@dataclass(frozen=True)
class Batching:
    """How records are grouped on their way to the backend.

    `batch_size` documents go through the encoder at once (None: `DEFAULT_BATCH_SIZE` in this
    process, ``CONVSPARSE_INGEST_BATCH_SIZE`` on the workers). `chunk_size` documents, and at
    most `max_chunk_chars` characters of text, are encoded and written as one unit (several
    forward passes, so tokenizing overlaps them and sorting by length spans them) and travel
    as one task through the queue (None: `DEFAULT_CHUNK_SIZE` in this process,
    ``CONVSPARSE_INGEST_CHUNK_SIZE`` through the queue). The queue holds at most
    `max_in_flight` chunks at once."""

    batch_size: int | None = None
    chunk_size: int | None = None
    max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT

    def __post_init__(self) -> None:
        _at_least_one("Batching", batch_size=self.batch_size, chunk_size=self.chunk_size,
                      max_chunk_chars=self.max_chunk_chars, max_in_flight=self.max_in_flight)


@dataclass(frozen=True)
class IngestOptions:
    """Everything an ingestion in this process is told: how to read the source and how to
    group its records."""

    source: SourceOptions = field(default_factory=SourceOptions)
    batching: Batching = field(default_factory=Batching)


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_CHUNK_SIZE", "DEFAULT_MAX_CHUNK_CHARS",
           "DEFAULT_MAX_IN_FLIGHT", "Batching", "IngestOptions", "SourceOptions"]
