"""The ONNX Runtime student: `SpladeModel` exported to ONNX, run by ONNX Runtime.

The export contains the whole SPLADE graph, masked-LM *and* pooling, so a run returns one
``(batch, vocab)`` activation matrix (or, with ``top_k``, the ``(batch, k)`` heaviest
activations and their token ids), never the ``batch x tokens x vocab`` logits.

- Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter, opset 17).
  With torch 2.13 it exports a MiniLM in ~2 s and its graph is the one ONNX Runtime's
  transformer fusions know; the dynamo exporter (needs onnxscript) works too but takes ~10x
  longer, so it is only the fallback. Batch and sequence axes are dynamic.
- Exports are cached by the encoder fingerprint:
  ``Settings().cache_dir/onnx/<fingerprint>-g<graph version>[-topK][-fp16].onnx``, written atomically. The
  `OnnxStudent` carries the same fingerprint as the PyTorch student it came from: both emit
  the same term maps (max abs difference < 1e-4 in fp32, checked in the tests).
- Providers: ``CPUExecutionProvider``; ``CUDAExecutionProvider`` first when onnxruntime-gpu
  and a GPU are present (``device="auto"`` or ``"cuda"``).
- ``fp16=True`` converts the exported graph to float16 (inputs stay int64, the output stays
  float32). Only meaningful on CUDA: CPU kernels mostly lack fp16, so on CPU it is slower
  and less exact; a warning is logged when it is asked for without CUDA. Activations then
  differ from fp32 by ~1e-2, so the fingerprint rule "same fingerprint, same term maps" holds
  only approximately for fp16 (documented; index and query with the same precision).
- CPU session (`inference_session`): all graph optimisations, intra-op threads = the CPUs
  this process may use, sequential execution (a BERT graph has no useful inter-op
  parallelism); the student's has no memory arena (it would pin the peak of a bulk batch's
  logits, gigabytes, for the session's life).
- Opt-ins for CPU (issue 15), cached next to the export (``-opt`` / ``-int8`` suffixes):
  ``optimize=True`` runs ONNX Runtime's transformer optimizer (``model_type="bert"``: fused
  attention, skip-layer-norm, bias-GELU); ``int8=True`` adds int8 dynamic quantization of the
  MatMul weights (``quantize_dynamic``, QInt8, per-channel off) on top of the optimized graph.
  Both keep the encoder's fingerprint, like fp16: term maps are close, not equal. Speed and
  the ranking-quality change (MRR@10, R@100 on mtrag-pooled) are in
  ``benchmarks/results/onnx_cpu_quality.md``; read them before indexing with int8.
- The bulk path reads the top-k export's (values, ids) straight into CSR arrays (no dense row).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from convsparse.encoders.pooling import SpladeModel
from convsparse.encoders.student import StudentEncoderBase
from convsparse.pruning import PruningPolicy
from convsparse.termmap import CsrRows

log = logging.getLogger(__name__)

# ONNX Runtime's telemetry writes a device id and an event database under the user's home
# cache (~/.cache/Microsoft/DeveloperTools/.onnxruntime) when the library loads; the variable
# must be set before the first import (a user who sets it keeps their choice).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _onnxruntime():
    """The onnxruntime module, with its telemetry events off where it offers the switch
    (for a process that imported it before this module set ``ORT_DISABLE_TELEMETRY``)."""
    import onnxruntime as ort

    if os.environ.get("ORT_DISABLE_TELEMETRY") == "1" and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    return ort


INPUT_NAMES = ["input_ids", "attention_mask"]
OPSET = 17
#: Bumped when the exported graph changes for the same weights (2: max-first SPLADE pooling;
#: 3: no (batch, tokens, vocab) mask or bias pass), so a cached export of an older graph is
#: not reused.
GRAPH_VERSION = 3


class _TopKSplade(torch.nn.Module):
    def __init__(self, model: SpladeModel, k: int):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, input_ids, attention_mask):
        values, indices = torch.topk(self.model(input_ids, attention_mask), self.k, dim=-1)
        return values, indices


def onnx_cache_path(
    fingerprint: str, *, fp16: bool = False, top_k: int | None = None,
    cache_dir: str | Path | None = None, optimize: bool = False, int8: bool = False,
) -> Path:
    """Where the export of the encoder with this fingerprint is cached."""
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
    return Path(cache_dir) / "onnx" / f"{name}.onnx"


def optimize_onnx(src: str | Path, out_path: str | Path, *, num_heads: int = 0,
                  hidden_size: int = 0) -> Path:
    """ONNX Runtime's transformer optimizer (BERT fusions) applied to `src` (atomic write)."""
    from onnxruntime.transformers import optimizer

    out_path = Path(out_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=1)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    model.save_model_to_file(str(tmp))
    os.replace(tmp, out_path)
    return out_path


def quantize_int8(src: str | Path, out_path: str | Path) -> Path:
    """int8 dynamic quantization of the MatMul weights of `src` (atomic write)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp.onnx")
    import onnx

    # The optimizer's fused ops (com.microsoft domain) defeat shape inference: say FLOAT.
    quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"],
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    os.replace(tmp, out_path)
    return out_path


def _dummy_inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, min(2000, vocab_size), (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return ids, mask


def export_onnx(
    model: SpladeModel, out_path: str | Path, *, vocab_size: int, fp16: bool = False,
    top_k: int | None = None, output_name: str = "activations",
    output_axes: dict[int, str] | None = None,
) -> Path:
    """Export `model` (MLM + SPLADE pooling, or any module of (input_ids, attention_mask) with
    one output, named `output_name`, whose dynamic axes are `output_axes`, by default the
    batch) to `out_path` (atomic write)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module: torch.nn.Module = model.to("cpu").float().eval()
    outputs = [output_name]
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           output_name: output_axes or {0: "batch"}}
    if top_k:
        module = _TopKSplade(model, int(top_k)).eval()
        outputs = ["top_values", "top_indices"]
        dyn = {"input_ids": dyn["input_ids"], "attention_mask": dyn["attention_mask"],
               "top_values": {0: "batch"}, "top_indices": {0: "batch"}}
    args = _dummy_inputs(vocab_size)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}-", suffix=".onnx", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, args, str(tmp), input_names=INPUT_NAMES,
                                  output_names=outputs, dynamic_axes=dyn, opset_version=OPSET,
                                  dynamo=False)
            except Exception as e:  # pragma: no cover - depends on the torch build
                log.warning("TorchScript ONNX export failed (%s); trying the dynamo exporter", e)
                batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
                torch.onnx.export(module, args, str(tmp), input_names=INPUT_NAMES,
                                  output_names=outputs, dynamo=True, optimize=True,
                                  external_data=False,
                                  dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                                  "attention_mask": {0: batch, 1: seq}})
        if fp16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(onnx.load(str(tmp)), keep_io_types=True)
            onnx.save(proto, str(tmp))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def inference_session(path: str | Path, providers: list[str], *,
                      intra_op_threads: int | None = None, memory_arena: bool = True):
    """An ONNX Runtime session as the project runs them: all graph optimisations, sequential
    execution (a BERT graph has no useful inter-op parallelism), intra-op threads = the CPUs
    this process may use (so `taskset` or `os.sched_setaffinity` bounds it), quiet logs."""
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads or _cpu_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = memory_arena
    return ort.InferenceSession(str(path), opts, providers=providers)


def providers_for(device: str) -> list[str]:
    ort = _onnxruntime()
    available = ort.get_available_providers()
    if device in ("auto", "cuda") or device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device != "auto":
            log.warning("CUDAExecutionProvider is not available (install onnxruntime-gpu); using CPU")
    return ["CPUExecutionProvider"]


class OnnxStudent(StudentEncoderBase):
    """ONNX Runtime runtime (CPU, or CUDA when onnxruntime-gpu and a GPU are present)."""

    runtime = "onnx"

    def __init__(
        self, onnx_path: str | Path, tokenizer, *, fingerprint: str, max_length: int = 256,
        document_pruning: PruningPolicy | None = None, device: str = "auto",
        intra_op_threads: int | None = None, source: str = "",
    ):
        super().__init__(tokenizer, max_length=max_length, document_pruning=document_pruning)
        self.onnx_path = Path(onnx_path)
        self._fingerprint = fingerprint
        self.source = source
        self.providers = providers_for(device)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        # No CPU memory arena: a bulk batch's (batch x tokens x vocab) logits are gigabytes,
        # and the arena would keep that peak for the life of the session (one per worker);
        # blocks that large are mmap'd either way, so the arena buys no speed.
        self.session = inference_session(self.onnx_path, self.providers,
                                         intra_op_threads=intra_op_threads, memory_arena=False)
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @classmethod
    def from_torch(
        cls, student, *, device: str = "auto", fp16: bool = False, top_k: int | None = None,
        cache_dir: str | Path | None = None, intra_op_threads: int | None = None,
        optimize: bool = False, int8: bool = False,
    ) -> OnnxStudent:
        """Export a `SpladeStudent` (or reuse its cached export) and open it; `optimize` /
        `int8` are the CPU opt-ins described in the module docstring."""
        fingerprint = student.fingerprint
        if fp16 and providers_for(device)[0] != "CUDAExecutionProvider":
            log.warning("fp16 ONNX runs on CPU are slow and less exact; fp16 is meant for CUDA")
        if fp16 and (optimize or int8):
            raise ValueError("fp16 is for CUDA; optimize/int8 are CPU opt-ins: pick one")
        plain = onnx_cache_path(fingerprint, fp16=fp16, top_k=top_k, cache_dir=cache_dir)
        if not plain.exists():
            export_onnx(student.model, plain, vocab_size=len(student.vocabulary), fp16=fp16,
                        top_k=top_k)
        path = plain
        if optimize or int8:
            cfg = student.model.mlm.config
            opt = onnx_cache_path(fingerprint, top_k=top_k, cache_dir=cache_dir, optimize=True)
            if not opt.exists():
                optimize_onnx(plain, opt, num_heads=getattr(cfg, "num_attention_heads", 0) or 0,
                              hidden_size=getattr(cfg, "hidden_size", 0) or 0)
            path = opt
            if int8:
                path = onnx_cache_path(fingerprint, top_k=top_k, cache_dir=cache_dir, int8=True)
                if not path.exists():
                    quantize_int8(opt, path)
        return cls(path, student.tokenizer, fingerprint=fingerprint, max_length=student.max_length,
                   document_pruning=student.document_pruning, device=device,
                   intra_op_threads=intra_op_threads, source=getattr(student, "source", ""))

    def _activations(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(np.int64, copy=False),
                 "attention_mask": attention_mask.astype(np.int64, copy=False)}
        outputs = self.session.run(None, feeds)
        if len(outputs) == 1:
            return np.asarray(outputs[0], dtype=np.float32)
        values, indices = outputs
        dense = np.zeros((input_ids.shape[0], len(self.vocabulary)), dtype=np.float32)
        np.put_along_axis(dense, indices.astype(np.int64), np.maximum(values, 0), axis=1)
        return dense

    def _sparse_rows(self, input_ids, attention_mask, pruning: PruningPolicy | None) -> CsrRows:
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64),
                 "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        outputs = self.session.run(None, feeds)
        if len(outputs) == 1:
            return CsrRows.from_dense(outputs[0])
        values, indices = (np.asarray(o) for o in outputs)  # top-k export: (batch, k) each
        order = np.argsort(indices, axis=1, kind="stable")  # ascending token ids per row
        values = np.take_along_axis(values, order, axis=1).astype(np.float32, copy=False)
        indices = np.take_along_axis(indices, order, axis=1)
        keep = (values > 0) | ~np.isfinite(values)
        return CsrRows.from_counts(keep.sum(axis=1), indices[keep], values[keep])
