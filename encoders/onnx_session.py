"""Opening ONNX exports, without torch: sessions, providers, where cached exports live, and
the temporary name an export is written under.

Split from `onnx_runtime` (which exports with torch) so that serving from exports that exist
(the re-ranker's ONNX path) never imports torch or transformers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# ONNX Runtime's telemetry writes a device id and an event database under the user's home
# cache (~/.cache/Microsoft/DeveloperTools/.onnxruntime) when the library loads; the variable
# must be set before the first import (a user who sets it keeps their choice).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def onnxruntime_module():
    """The onnxruntime module, with its telemetry events off where it offers the switch
    (for a process that imported it before this module set ``ORT_DISABLE_TELEMETRY``)."""
    import onnxruntime as ort

    if os.environ.get("ORT_DISABLE_TELEMETRY") == "1" and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    return ort

#: Bumped when the student's exported graph changes for the same weights (2: max-first SPLADE
#: pooling; 3: no (batch, tokens, vocab) mask or bias pass), so a cached export of an older
#: graph is not reused.
GRAPH_VERSION = 3


def onnx_cache_path(
    fingerprint: str, *, fp16: bool = False, top_k: int | None = None,
    cache_dir: str | Path | None = None, optimize: bool = False, int8: bool = False,
    query_int8: bool = False,
) -> Path:
    """Where the export of the encoder with this fingerprint is cached (`query_int8`: its int8
    query graph, `encoders/query_graph.py`)."""
    if cache_dir is None:
        from convsparse.settings import get_settings

        cache_dir = get_settings().cache_dir
    name = fingerprint.split(":", 1)[-1] + f"-g{GRAPH_VERSION}"
    if top_k:
        name += f"-top{top_k}"
    if fp16:
        name += "-fp16"
    if optimize or int8:
        name += "-opt"
    if int8:
        name += "-int8"
    if query_int8:
        name += "-query-int8"
    return Path(cache_dir) / "onnx" / f"{name}.onnx"


def temporary_sibling(path: str | Path) -> Path:
    """An unused hidden name beside `path` to write it under before an atomic `os.replace`.
    Not created here: the writer creates it, so it gets the umask's mode (``mkstemp`` forces
    0600, and a folder built by one account could not be served by another)."""
    path = Path(path)
    return path.with_name(f".{path.stem}-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def inference_session(path: str | Path, providers: list[str], *,
                      intra_op_threads: int | None = None, memory_arena: bool = True):
    """An ONNX Runtime session as the project runs them: all graph optimisations, sequential
    execution (a BERT graph has no useful inter-op parallelism), intra-op threads = the CPUs
    this process may use (so `taskset` or `os.sched_setaffinity` bounds it), quiet logs, and
    idle threads that sleep instead of spinning (a chat app's process runs a query now and then:
    spinning threads burn CPU on every cold search for no gain; docs/design/decisions.md)."""
    ort = onnxruntime_module()
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = memory_arena
    return ort.InferenceSession(str(path), opts, providers=providers)


def providers_for(device: str) -> list[str]:
    ort = onnxruntime_module()

    available = ort.get_available_providers()
    if device in ("auto", "cuda") or device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device != "auto":
            log.warning("CUDAExecutionProvider is not available (install onnxruntime-gpu); using CPU")
    return ["CPUExecutionProvider"]


def open_export(path: str | Path, build: Callable[[Path], object], providers: list[str], *,
                check: Callable[[Any], str | None] | None = None):
    """A session of the export at `path`, built first by ``build(path)`` when it is missing,
    and built again when the file is unreadable (truncated, garbage) or ``check(session)``
    names a reason it is not this model's export: an export is derived from weights kept
    elsewhere, so a bad one is replaced, never served and never fatal."""
    path = Path(path)
    if path.is_file():
        try:
            session = inference_session(path, providers)
            reason = check(session) if check is not None else None
        except Exception as e:  # onnxruntime raises its own classes for every kind of bad file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if reason is None:
            return session
        log.warning("%s: not a usable ONNX export (%s); exporting it again", path, reason[:200])
        with contextlib.suppress(OSError):  # a read-only folder: `build` decides what then
            path.unlink(missing_ok=True)
    build(path)
    session = inference_session(path, providers)
    reason = check(session) if check is not None else None
    if reason is not None:
        raise RuntimeError(f"{path}: the new export is not usable either ({reason})")
    return session


__all__ = ["GRAPH_VERSION", "cpu_threads", "inference_session", "onnx_cache_path", "open_export",
           "providers_for", "temporary_sibling"]
