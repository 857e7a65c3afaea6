"""The int8 graph that encodes conversations on a CPU, while documents keep float32.

A conversation is encoded on every chat turn, inside the turn's latency budget; a document is
encoded once, at ingest, and its term map is what the index's fingerprint promises. So the query
side may run a cheaper graph of the same model as long as its term maps rank the same: int8
dynamic quantization of the matrix products and the embedding tables
(`onnx_runtime.quantize_int8(..., embeddings=True)`) over the optimizer's fused graph. The index
is unchanged (same fingerprint: no re-index), and `query_precision="fp32"` (or
``CONVSPARSE_QUERY_PRECISION=fp32``) restores the float32 graph. Speed and the ranking change on
the dev turns and the held-out split: `benchmarks/results/query_precision.md`.

Where the int8 graph comes from, first found wins:
1. shipped beside the export (`QUERY_INT8` in the folder, named by its metadata's
   ``query_int8``): the package's SPLADE-tiny, and folders written by `convsparse export`;
2. built once from the float32 export into the cache (``…-query-int8.onnx``,
   `cached_query_int8`), which needs the ``onnx`` package (the ``torch`` extra);
3. neither: conversations run the float32 graph, and the log says why, once.

The re-ranker's bi-encoder reads the conversation the same way: its views run an int8 graph of
its export (`PassageVectors.use_query_int8`: per-channel scales, no fusions, built into the
cache) while passage vectors keep float32.

Only the ONNX Runtime student on a CPU has an int8 query graph: the PyTorch runtime, CUDA, and a
base opened on an optimized or int8 graph (`load_student`'s ``onnx_optimize`` / ``onnx_int8``
opt-ins: a choice made for both sides) encode conversations as they encode documents.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)
#: exports already said to run float32 for want of the onnx package (said once each)
_TOLD: set[str] = set()

#: The int8 query graph's file name inside an export folder.
QUERY_INT8 = "query-int8.onnx"
QueryPrecision = Literal["int8", "fp32"]
#: What conversations run unless told otherwise (`Settings.query_precision`).
DEFAULT_QUERY_PRECISION: QueryPrecision = "int8"


def build_query_int8(plain: str | Path, out: str | Path, *, per_channel: bool = False,
                     fuse: bool = True) -> Path:
    """`out`: the int8 query graph of float32 export `plain` (with `fuse`, the optimizer's
    fusions first; then int8 matrix products and embeddings); written atomically. Needs the
    ``onnx`` package."""
    from convsparse.encoders.onnx_runtime import optimize_onnx, quantize_int8

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not fuse:
        return quantize_int8(plain, out, embeddings=True, per_channel=per_channel)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fused = optimize_onnx(plain, Path(tmp) / "fused.onnx")
        return quantize_int8(fused, out, embeddings=True, per_channel=per_channel)


def cached_query_int8(plain: str | Path, key: str, *, cache_dir: str | Path | None = None,
                      per_channel: bool = False, fuse: bool = True,
                      prepare: Callable[[Path, Path], object] | None = None) -> Path | None:
    """The int8 query graph of export `plain`, cached as ``<key>-…-query-int8.onnx`` (`key`
    names the weights: a fingerprint or a model tag) and built there the first time
    (`prepare(plain, tmp)` first writes the float32 graph to quantize when `plain` is not one;
    `per_channel`, `fuse`: `build_query_int8`'s); None, logged once per export, where the
    ``onnx`` package is missing."""
    from convsparse.encoders.onnx_session import onnx_cache_path

    path = onnx_cache_path(key, cache_dir=cache_dir, query_int8=True)
    if path.is_file():
        return path
    try:
        import onnx  # noqa: F401 - the quantizer's own dependency, absent from the core install
    except ImportError:
        if str(plain) not in _TOLD:
            _TOLD.add(str(plain))
            log.info("conversations run the float32 graph of %s: building its int8 query graph "
                     "needs the onnx package (pip install onnx, or the torch extra)", plain)
        return None
    log.info("building the int8 query graph of %s once, into %s", plain, path)
    if prepare is None:
        return build_query_int8(plain, path, per_channel=per_channel, fuse=fuse)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        source = Path(tmp) / "float32.onnx"
        prepare(Path(plain), source)
        return build_query_int8(source, path, per_channel=per_channel, fuse=fuse)


def _shipped(base: Any) -> Path | None:
    from convsparse.encoders.onnx_runtime import read_export_metadata
    from convsparse.errors import UnsupportedModelError

    folder = Path(base.onnx_path).parent
    try:
        meta = read_export_metadata(folder)
    except UnsupportedModelError:
        return None
    name = meta.get("query_int8")
    if not isinstance(name, str) or meta.get("fingerprint") != base.fingerprint:
        return None
    path = folder / name
    return path if path.is_file() and Path(base.onnx_path).name != name else None


def query_encoder(base: Any, precision: QueryPrecision = DEFAULT_QUERY_PRECISION, *,
                  cache_dir: str | Path | None = None) -> Any:
    """The encoder that `base`'s conversations run through at `precision` (module docstring):
    `base` on its int8 query graph, or `base` itself."""
    if precision not in ("int8", "fp32"):
        raise ValueError(f"query_precision must be 'int8' or 'fp32', got {precision!r}")
    if (precision == "fp32" or getattr(base, "runtime", "") != "onnx"
            or getattr(base, "device", "cpu") != "cpu"):
        return base
    path = _shipped(base) or cached_query_int8(base.onnx_path, base.fingerprint, cache_dir=cache_dir)
    return base.with_graph(path) if path is not None else base


__all__ = ["DEFAULT_QUERY_PRECISION", "QUERY_INT8", "QueryPrecision", "build_query_int8",
           "cached_query_int8", "query_encoder"]
