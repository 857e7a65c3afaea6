"""Exception classes. Each names the record and says how to fix it."""

from __future__ import annotations


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
    """A conversation cannot be turned into student input."""

    def __init__(self, reason: str, *, record_id: str | None = None):
        self.reason = reason
        self.record_id = record_id
        where = f"conversation {record_id!r}: " if record_id is not None else "conversation: "
        super().__init__(f"{where}{reason}")


class InvalidDocumentError(ConvsparseError, ValueError):
    """A source record cannot be indexed (missing id, empty text, bad encoding...)."""

    def __init__(self, reason: str, *, record_id: str | None = None):
        self.reason = reason
        self.record_id = record_id
        super().__init__(f"document {record_id!r}: {reason}")


class FingerprintMismatchError(ConvsparseError):
    """Query term maps come from a different encoder than the index's documents."""

    def __init__(self, index: str, index_fingerprint: str, query_fingerprint: str):
        self.index = index
        self.index_fingerprint = index_fingerprint
        self.query_fingerprint = query_fingerprint
        super().__init__(
            f"index {index!r} was built with encoder {index_fingerprint}, but the query comes from "
            f"encoder {query_fingerprint}; load the index's encoder or re-index with this one"
        )


class IndexNotFoundError(ConvsparseError, LookupError):
    def __init__(self, index: str):
        self.index = index
        super().__init__(f"index {index!r} does not exist; create it with `convsparse index create`")


class IndexExistsError(ConvsparseError):
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
