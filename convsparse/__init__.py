"""convsparse: conversational learned-sparse search.

The public surface is declared here (`__all__`, pinned by tests/core/test_public_surface.py);
everything else is internal. `convsparse.__version__` is the installed distribution's version
(defined once, in pyproject.toml). Imports are lazy,
so `import convsparse` stays light (torch, scipy and the backends load only when a name that
needs them is first used).

>>> from convsparse import ConversationalSearch, PruningPolicy, Settings, load_encoder  # doctest: +SKIP
"""

from __future__ import annotations

from convsparse._lazy import lazy_exports as _lazy_exports

__all__ = [
    "Backend",
    "BackendError",
    "ConversationalSearch",
    "ConvsparseError",
    "EmbeddedBackend",
    "EmptyQueryError",
    "Encoder",
    "FingerprintMismatchError",
    "Hit",
    "IndexExistsError",
    "IndexNotFoundError",
    "IndexReport",
    "InvalidIndexNameError",
    "InvalidCollectionError",
    "InvalidConversationError",
    "InvalidDocumentError",
    "InvalidTermMapError",
    "OpenSearchBackend",
    "PruningPolicy",
    "SearchResult",
    "Settings",
    "SourceRecord",
    "TermMap",
    "TooManyClausesError",
    "UnsupportedModelError",
    "UsageError",
    "WorkerUnavailableError",
    "document_text",
    "load_collection",
    "load_encoder",
    "load_student",
    "open_backend",
    "sample_collection",
]

_ERRORS = ("BackendError", "ConvsparseError", "EmptyQueryError", "FingerprintMismatchError",
           "IndexExistsError", "InvalidIndexNameError",
           "IndexNotFoundError", "InvalidCollectionError", "InvalidConversationError",
           "InvalidDocumentError", "InvalidTermMapError", "TooManyClausesError",
           "UnsupportedModelError", "UsageError", "WorkerUnavailableError")

_LAZY = {
    "Backend": "convsparse.integration.backends.base",
    "Hit": "convsparse.hits",
    "ConversationalSearch": "convsparse.integration.client",
    "SearchResult": "convsparse.integration.client",
    "IndexReport": "convsparse.integration.ingest_report",
    "EmbeddedBackend": "convsparse.integration.backends.embedded",
    "OpenSearchBackend": "convsparse.integration.backends.opensearch",
    "Encoder": "convsparse.encoders.protocol",
    "load_student": "convsparse.encoders.loading",
    "load_encoder": "convsparse.compose",
    "open_backend": "convsparse.compose",
    "PruningPolicy": "convsparse.pruning",
    "Settings": "convsparse.settings",
    "SourceRecord": "convsparse.documents",
    "document_text": "convsparse.documents",
    "TermMap": "convsparse.termmap",
    "load_collection": "convsparse.benchmark_collections",
    "sample_collection": "convsparse.benchmark_collections",
    **dict.fromkeys(_ERRORS, "convsparse.errors"),
}

_lazy_getattr, __dir__ = _lazy_exports("convsparse", _LAZY, globals())


def __getattr__(name: str) -> object:
    if name == "__version__":  # one definition: pyproject.toml's, read from the installed metadata
        from importlib.metadata import version

        return version("convsparse")
    return _lazy_getattr(name)
