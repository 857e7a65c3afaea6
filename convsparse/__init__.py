"""convsparse: conversational learned-sparse search.

The public surface is re-exported here; imports are lazy so `import convsparse` stays light
(torch, scipy and the backends load only when a name that needs them is first used).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "ConversationalSearch",
    "EmbeddedBackend",
    "IndexReport",
    "PruningPolicy",
    "SearchResult",
    "SourceRecord",
    "TermMap",
    "open_backend",
]

_LAZY = {
    "ConversationalSearch": "convsparse.integration.client",
    "SearchResult": "convsparse.integration.client",
    "IndexReport": "convsparse.integration.client",
    "PruningPolicy": "convsparse.pruning",
    "TermMap": "convsparse.termmap",
    "EmbeddedBackend": "convsparse.integration.embedded",
    "SourceRecord": "convsparse.integration.ingestion",
    "open_backend": "convsparse.integration.backends",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'convsparse' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
