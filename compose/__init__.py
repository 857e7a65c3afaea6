"""`open_backend(settings)`: the configured `Backend` (embedded by default, or OpenSearch)."""

from __future__ import annotations

from typing import Any

from convsparse.integration.backend import Backend


def open_backend(settings: Any = None, **options: Any) -> Backend:
    """`Settings.backend == "embedded"` -> `EmbeddedBackend(settings.data_dir)`;
    `"opensearch"` -> `OpenSearchBackend.from_settings(settings)` (imported only then, so the
    embedded path never imports opensearch-py). Extra `options` go to the backend."""
    if settings is None:
        from convsparse.settings import get_settings

        settings = get_settings()
    kind = getattr(settings, "backend", "embedded")
    if kind == "embedded":
        from convsparse.integration.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings.data_dir, **options)
    if kind == "opensearch":
        from convsparse.integration.backends.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, **options)
    raise ValueError(f"unknown backend {kind!r}; expected 'embedded' or 'opensearch'")


__all__ = ["open_backend"]
