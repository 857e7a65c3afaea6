"""convsparse: conversational learned-sparse search.

The public surface is re-exported here; imports are lazy so `import convsparse` stays light
(torch, scipy and the backends load only when a name that needs them is first used).
"""

from __future__ import annotations

from convsparse._lazy import lazy_exports

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
    "EmbeddedBackend": "convsparse.integration.backends.embedded",
    "SourceRecord": "convsparse.documents",
    "open_backend": "convsparse.compose",
}


__getattr__, __dir__ = lazy_exports('convsparse', _LAZY, globals())
