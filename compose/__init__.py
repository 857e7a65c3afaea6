"""The composition root: the one place that turns `Settings` into an encoder and a backend.

Every entry point goes through here (the CLI commands, `ConversationalSearch`'s defaults, the
Celery workers, the evaluation harness), so `CONVSPARSE_MODEL`, `CONVSPARSE_RUNTIME`,
`CONVSPARSE_DEVICE`, `CONVSPARSE_MAX_LENGTH`, `CONVSPARSE_CACHE_DIR` and `CONVSPARSE_BACKEND`
mean the same thing whichever way a user came in. It sits on top of the dependency order (it
imports the implementations); nothing below it imports it, except lazily for a default.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from convsparse.extras import naming_missing_extras
from convsparse.settings import Settings, get_settings

if TYPE_CHECKING:  # imported for the annotations only: `convsparse --help` never loads numpy
    from convsparse.encoders.protocol import Encoder
    from convsparse.integration.backends.base import Backend


def _max_length(settings: Settings) -> int | None:
    """`settings.max_length` (None = the model's own), clamped to a local model's position
    embeddings."""
    limit = settings.max_length
    if limit is None or not (settings.model and os.path.isdir(settings.model)):
        return limit
    try:
        from transformers import AutoConfig

        positions = AutoConfig.from_pretrained(settings.model).max_position_embeddings
    except (ImportError, OSError, ValueError, AttributeError):  # not a HF folder (an ONNX
        return limit  # export, say) or no transformers: the loader decides
    return min(limit, int(positions)) if positions else limit


def load_encoder(settings: Settings | None = None) -> Encoder:
    """The student named by `settings`: `model` ('' = the shipped student), `runtime`
    (torch | onnx), `device`, `max_length`, `cache_dir`, `dtype` (PyTorch: "auto" = bf16 on CUDA),
    `query_precision` (int8 | fp32: the graph conversations run on a CPU)."""
    from convsparse.encoders.loading import load_student

    settings = settings or get_settings()
    with naming_missing_extras():  # e.g. runtime torch without the torch extra
        return load_student(settings.model or None, runtime=settings.runtime, device=settings.device,
                            max_length=_max_length(settings), cache_dir=settings.cache_dir,
                            dtype=settings.dtype, query_precision=settings.query_precision)


def open_backend(settings: Settings | None = None, **options: object) -> Backend:
    """`settings.backend == "embedded"` -> `EmbeddedBackend(settings.data_dir)`;
    `"opensearch"` -> `OpenSearchBackend.from_settings(settings)`; `"elasticsearch"` ->
    `ElasticsearchBackend.from_settings(settings)` (each imported only then, so the embedded path
    never imports a search client). Extra `options` go to the backend."""
    settings = settings or get_settings()
    with naming_missing_extras():  # e.g. elasticsearch without the elasticsearch extra
        return _open_backend(settings, **options)


def _open_backend(settings: Settings, **options: object) -> Backend:
    if settings.backend == "embedded":
        from convsparse.integration.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings.data_dir, **options)
    if settings.backend == "opensearch":
        from convsparse.integration.backends.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, **options)
    if settings.backend == "elasticsearch":
        from convsparse.integration.backends.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend.from_settings(settings, **options)
    from convsparse.errors import UsageError

    raise UsageError(
        f"unknown backend {settings.backend!r}; expected 'embedded', 'opensearch' or 'elasticsearch'")


def load_generator(settings: Settings | None = None):
    """The LLM generator named by `CONVSPARSE_LLM_*` (`convsparse.training.generators.
    generator_from_settings`): an OpenAI-compatible endpoint, or a local Hugging Face LM on
    `settings.device`."""
    from convsparse.training.generators import generator_from_settings

    return generator_from_settings(settings or get_settings())


__all__ = ["load_encoder", "load_generator", "open_backend"]
