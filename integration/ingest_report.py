"""What an ingestion did: one report for every path, in this process or through the workers.

`IndexReport` counts the records read, indexed and failed, and keeps each failure as a
`DeadLetter` (its id, the reason, and where it was). `ingest` builds one from the engine's
per-record results (`IndexReport.add`); a Celery job's `workers.jobs.JobStatus` is an
`IndexReport` whose counts come from the job's state in Redis, with the job's own fields added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convsparse.integration.backends.base import DocumentResult
from convsparse.sources import RecordError


@dataclass(frozen=True)
class DeadLetter:
    """A record that was not indexed: its id (None when the reader could not tell), why, and
    where: the `position` in the source (counted in `unit`: "line", "row" or "item") of a
    record the reader rejected, the `chunk` of a document that failed to encode or write."""

    id: str | None
    reason: str
    position: int | None = None
    chunk: str | None = None
    unit: str | None = None

    @classmethod
    def rejected(cls, error: RecordError) -> DeadLetter:
        """The dead letter of a record the reader rejected."""
        return cls(error.id, error.reason, error.position, unit=error.unit)

    @classmethod
    def failed(cls, result: DocumentResult, chunk: str | None = None) -> DeadLetter:
        """The dead letter of a document the encoder or the backend failed."""
        return cls(result.id, result.error or f"status {result.status}", chunk=chunk)

    def labelled(self) -> tuple[str, str]:
        """(name, reason) as `convsparse ingest` prints it: a record without an id is named by
        where it was ("line 3"); with an id, where it was leads the reason."""
        if self.position is None or self.unit is None:
            return (self.id if self.id is not None else "?", self.reason)
        where = f"{self.unit} {self.position}"
        reason = self.reason.removeprefix(f"{where}: ")
        return (where, reason) if self.id is None else (self.id, f"{where}: {reason}")


@dataclass
class IndexReport:
    """Outcome of one ingestion: records read, indexed and failed, and each failure as a
    `DeadLetter` (`failures` lists them as (name, reason) pairs)."""

    index: str | None
    records_read: int = 0
    indexed: int = 0
    failed: int = 0
    dead_letter: list[DeadLetter] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failures(self) -> list[tuple[str, str]]:
        """Each failure as (id, reason); a record the reader rejected without an id is named by
        where it was ("line N", "row N", "item N")."""
        return [d.labelled() for d in self.dead_letter]

    def add(self, result: DocumentResult | RecordError, chunk: str | None = None) -> None:
        """Count one record's result (the engine yields one per record)."""
        self.records_read += 1
        if isinstance(result, RecordError):
            self._fail(DeadLetter.rejected(result))
        elif result.ok:
            self.indexed += 1
        else:
            self._fail(DeadLetter.failed(result, chunk))

    def _fail(self, letter: DeadLetter) -> None:
        self.failed += 1
        self.dead_letter.append(letter)


__all__ = ["DeadLetter", "IndexReport"]
