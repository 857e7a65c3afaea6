"""Every error convsparse raises on purpose. Each names the record and says how to fix it.

    ConvsparseError
    ├── InvalidTermMapError        (also ValueError)   a weight/token OpenSearch would reject
    ├── InvalidConversationError   (also ValueError)   a conversation cannot become student input
    ├── InvalidDocumentError       (also ValueError)   a source record cannot be indexed
    ├── InvalidCollectionError     (also ValueError)   a collection file cannot be read
    ├── UnsupportedModelError      (also ValueError)   a model folder is not a SPLADE student
    ├── TooManyClausesError        (also ValueError)   a query above the clause limit
    ├── EmptyQueryError            (also ValueError)   pruning removed every query term
    ├── InvalidIndexNameError      (also ValueError)   an index name the backends refuse
    ├── UnsupportedSourceError     (also ValueError)   a source file format that cannot be read
    ├── UsageError                 (also ValueError)   a command-line argument cannot be used
    ├── FingerprintMismatchError                       query/documents and index from different encoders
    ├── IndexNotFoundError         (also LookupError)
    ├── IndexExistsError
    ├── JobNotFoundError           (also LookupError)  no ingestion job with that id
    ├── WorkerUnavailableError                         Redis or a Celery worker is not there
    └── BackendError                                   the backend failed; not the input's fault

`except ConvsparseError` catches all of them; the `ValueError` / `LookupError` bases let
callers that already catch those keep working.
"""

from __future__ import annotations

from pathlib import Path


class ConvsparseError(Exception):
    """Base class for every error convsparse raises on purpose."""


class InvalidTermMapError(ConvsparseError, ValueError):
    """A term map holds a weight or token OpenSearch would reject (or silently ignore)."""

    def __init__(self, reason: str, *, record_id: str | None = None, token: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.token = token
        where = f"record {record_id!r}: " if record_id is not None else ""
        what = f"token {token!r}: " if token is not None else ""
        super().__init__(f"{where}{what}{reason}")


class InvalidConversationError(ConvsparseError, ValueError):
    """A conversation cannot be turned into student input. `where` names the file (and line)
    it was read from (``conv.jsonl:3``), when it was read from one."""

    def __init__(self, reason: str, *, record_id: str | None = None, where: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.where = where
        what = f"conversation {record_id!r}: " if record_id is not None else "conversation: "
        if where is not None:
            what = f"{where}: " + (what if record_id is not None else "")
        super().__init__(f"{what}{reason}")


class InvalidDocumentError(ConvsparseError, ValueError):
    """A source record cannot be indexed (missing id, empty text, bad encoding...). `where`
    names the file and line (``docs.jsonl:3``) when the record was read from one."""

    def __init__(self, reason: str, *, record_id: str | None = None, where: str | None = None):
        self.reason = reason
        self.record_id = record_id
        self.where = where
        if where is None:
            super().__init__(f"document {record_id!r}: {reason}")
        else:
            what = f"document {record_id!r}: " if record_id is not None else ""
            super().__init__(f"{where}: {what}{reason}")


class InvalidCollectionError(ConvsparseError, ValueError):
    """A collection file cannot be read; names the file, the line and the fix."""

    def __init__(self, reason: str, *, path: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.line = line
        where = f"{path}" if path is not None else "collection"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {reason}")


class UnsupportedModelError(ConvsparseError, ValueError):
    """The folder is a sentence-transformers model we cannot run as a SPLADE student."""


class FingerprintMismatchError(ConvsparseError):
    """Term maps (a query, or documents being written) come from a different encoder than the
    index's. `writing=True` is the write path: nothing was written."""

    def __init__(self, index: str, index_fingerprint: str, query_fingerprint: str, *,
                 writing: bool = False):
        self.index = index
        self.index_fingerprint = index_fingerprint
        self.query_fingerprint = query_fingerprint
        self.writing = writing
        if writing:
            msg = (f"index {index!r} was built with encoder {index_fingerprint}, but these documents "
                   f"come from encoder {query_fingerprint}; nothing was written. Ingest with the "
                   f"index's encoder (--model), or write to a new index (or `convsparse index "
                   f"delete {index}` and re-ingest everything with this encoder)")
        else:
            msg = (f"index {index!r} was built with encoder {index_fingerprint}, but the query comes "
                   f"from encoder {query_fingerprint}; load the index's encoder or re-index with "
                   f"this one")
        super().__init__(msg)

    # picklable with its keyword (Celery results, multiprocessing)
    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_fingerprint_mismatch, (self.index, self.index_fingerprint,
                                        self.query_fingerprint, self.writing))


def _fingerprint_mismatch(index: str, index_fp: str, other_fp: str,
                          writing: bool) -> FingerprintMismatchError:
    return FingerprintMismatchError(index, index_fp, other_fp, writing=writing)


class EmptyQueryError(ConvsparseError, ValueError):
    """Query pruning removed every term: the search would silently return nothing."""

    def __init__(self, terms_before: int, policy: str):
        self.terms_before = terms_before
        self.policy = policy
        super().__init__(
            f"query pruning ({policy}) kept 0 of {terms_before} query terms, so nothing can "
            f"match; loosen it (e.g. a lower --min-weight, a higher --top-k or --alpha-mass)"
        )


class UnsupportedSourceError(ConvsparseError, ValueError):
    """A source file whose format cannot be read (unknown suffix or --format)."""


class InvalidIndexNameError(ConvsparseError, ValueError):
    """An index name the backends would refuse (the OpenSearch naming rules)."""


class UsageError(ConvsparseError, ValueError):
    """A command-line argument or option cannot be used; the message says which and how."""


class JobNotFoundError(ConvsparseError, LookupError):
    """No ingestion job with that id in Redis."""


class WorkerUnavailableError(ConvsparseError):
    """Redis cannot be reached, or no Celery worker consumes the queue a job needs."""


class IndexNotFoundError(ConvsparseError, LookupError):
    """The index does not exist on the backend."""

    def __init__(self, index: str):
        self.index = index
        super().__init__(f"index {index!r} does not exist; create it with `convsparse index create`")


class IndexExistsError(ConvsparseError):
    """`create_index` on a name that exists (without exist_ok)."""

    def __init__(self, index: str):
        self.index = index
        super().__init__(f"index {index!r} already exists; delete it first or pass exist_ok=True")


class TooManyClausesError(ConvsparseError, ValueError):
    """A query has more terms than the backend's boolean clause limit."""

    def __init__(self, terms: int, limit: int):
        self.terms = terms
        self.limit = limit
        super().__init__(
            f"query has {terms} terms but the backend allows {limit} clauses "
            f"(indices.query.bool.max_clause_count); prune it, e.g. PruningPolicy(top_k={limit})"
        )


class BackendError(ConvsparseError):
    """The search backend failed in a way the caller cannot fix by changing input."""
