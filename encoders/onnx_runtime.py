"""The ONNX Runtime student: `SpladeModel` exported to ONNX, run by ONNX Runtime.

The export contains the whole SPLADE graph, masked-LM *and* pooling, so a run returns one
``(batch, vocab)`` activation matrix (or, with ``top_k``, the ``(batch, k)`` heaviest
activations and their token ids), never the ``batch x tokens x vocab`` logits.

- Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter, opset 17).
  Its graph is the one ONNX Runtime's transformer fusions know, and it exports quickly; the
  dynamo exporter (needs onnxscript) works too but is much slower to export
  (docs/reference/encoders.md), so it is only the fallback. Batch and sequence axes are dynamic.
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

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convsparse.encoders.onnx_session import (  # noqa: F401 - their home before the split
    GRAPH_VERSION,
    inference_session,
    onnx_cache_path,
    providers_for,
    temporary_sibling,
)
from convsparse.encoders.student_encoder_base import StudentEncoderBase
from convsparse.pruning import PruningPolicy
from convsparse.termmap import CsrRows

if TYPE_CHECKING:  # torch is needed to export, never to run an export
    import torch

    from convsparse.encoders.pooling import SpladeModel

log = logging.getLogger(__name__)

INPUT_NAMES = ["input_ids", "attention_mask"]
OPSET = 17


def _top_k_splade(model: SpladeModel, k: int) -> torch.nn.Module:
    """`model` whose output is its `k` heaviest activations and their token ids."""
    import torch

    class TopKSplade(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.k = model, k

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            values, indices = torch.topk(self.model(input_ids, attention_mask), self.k, dim=-1)
            return values, indices

    return TopKSplade()


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


@contextlib.contextmanager
def _root_warnings_silenced() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: str | Path, out_path: str | Path, *, embeddings: bool = False,
                  per_channel: bool = False) -> Path:
    """int8 dynamic quantization of the MatMul weights of `src` (atomic write); with
    `embeddings`, of the embedding tables (Gather) too, which makes the file 2.4 times smaller
    (the query graph the package ships) for no ranking change measured on the dev turns; with
    `per_channel`, one scale per output column (MiniLM's conversation vectors: cosine .994 with
    float32's, against .966 with one scale per matrix)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    tmp = temporary_sibling(out_path)  # unique: two processes may build the same graph at once
    import onnx

    # The optimizer's fused ops (com.microsoft domain) defeat shape inference: say FLOAT. The
    # quantizer's advice to pre-process (logged on the root logger) does not apply to it.
    with _root_warnings_silenced():
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", *(["Gather"] if embeddings else [])],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    os.replace(tmp, out_path)
    return out_path


def _dummy_inputs(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

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
    import torch

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module: torch.nn.Module = model.to("cpu").float().eval()
    outputs = [output_name]
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           output_name: output_axes or {0: "batch"}}
    if top_k:
        module = _top_k_splade(model, int(top_k)).eval()
        outputs = ["top_values", "top_indices"]
        dyn = {"input_ids": dyn["input_ids"], "attention_mask": dyn["attention_mask"],
               "top_values": {0: "batch"}, "top_indices": {0: "batch"}}
    args = _dummy_inputs(vocab_size)
    tmp = temporary_sibling(out_path)  # the umask's mode, as every other file
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
        share_tied_weights(tmp)
        if fp16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            proto = convert_float_to_float16(onnx.load(str(tmp)), keep_io_types=True)
            onnx.save(proto, str(tmp))
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def share_tied_weights(path: str | Path) -> None:
    """Store a masked-LM's tied weights once: the exporter writes the word embeddings twice
    (the input lookup's table and its transpose for the output projection), which doubles a
    small model's file (SPLADE-tiny: 33 MB -> 18 MB). The copy becomes a Transpose node of the
    table, which ONNX Runtime folds back into a constant when the session opens; the outputs
    are bit for bit the same."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    large = {i.name: i for i in proto.graph.initializer if len(i.dims) == 2 and i.dims[0] * i.dims[1] > 65536}
    arrays = {name: numpy_helper.to_array(init) for name, init in large.items()}
    shared = False
    for name, table in arrays.items():
        for other, copy in arrays.items():
            if other != name and other in large and name in large and copy.shape == table.T.shape \
                    and np.array_equal(copy, table.T):
                proto.graph.initializer.remove(large.pop(other))
                proto.graph.node.insert(0, helper.make_node("Transpose", [name], [other], perm=[1, 0],
                                                            name=f"tied_{other}"))
                shared = True
    if shared:
        onnx.save(proto, str(path))


class OnnxStudent(StudentEncoderBase):
    """ONNX Runtime runtime (CPU, or CUDA when onnxruntime-gpu and a GPU are present)."""

    runtime = "onnx"

    def __init__(
        self, onnx_path: str | Path, tokenizer, *, fingerprint: str, max_length: int = 256,
        document_pruning: PruningPolicy | None = None, device: str = "auto",
        intra_op_threads: int | None = None, source: str = "", vocabulary_name: str | None = None,
    ):
        super().__init__(tokenizer, max_length=max_length, document_pruning=document_pruning)
        self.onnx_path = Path(onnx_path)
        self._fingerprint = fingerprint
        if vocabulary_name is not None:  # as the exporting student named it
            self.__dict__["vocabulary_name"] = vocabulary_name
        self.source = source
        self.intra_op_threads = intra_op_threads
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

    def with_graph(self, onnx_path: str | Path) -> OnnxStudent:
        """This student on another graph of the same model (the int8 query graph): same
        tokenizer, fingerprint, limits and device."""
        return OnnxStudent(onnx_path, self.tokenizer, fingerprint=self.fingerprint,
                           max_length=self.max_length, document_pruning=self.document_pruning,
                           device=self.device, intra_op_threads=self.intra_op_threads,
                           source=self.source,
                           vocabulary_name=self.vocabulary_name)

    @classmethod
    def from_export_folder(
        cls, folder: str | Path, *, device: str = "auto", intra_op_threads: int | None = None,
        source: str | None = None,
    ) -> OnnxStudent:
        """Open an export folder (`convsparse export --out FOLDER`: ``model.onnx``, the tokenizer
        files, ``convsparse_encoder.json``) with ONNX Runtime and `tokenizers` only: no torch,
        no transformers. The fingerprint is the one the exporting student recorded."""
        from convsparse.encoders.export import METADATA_NAME
        from convsparse.encoders.tokenizer import FastTokenizer
        from convsparse.errors import UnsupportedModelError

        folder = Path(folder)
        meta = read_export_metadata(folder)
        if meta.get("graph_version", GRAPH_VERSION) != GRAPH_VERSION or meta.get("top_k") or meta.get("fp16"):
            raise UnsupportedModelError(
                f"{folder}/{METADATA_NAME}: graph version {meta.get('graph_version')!r}, top_k "
                f"{meta.get('top_k')!r}, fp16 {meta.get('fp16')!r}; this version runs graph version "
                f"{GRAPH_VERSION} without top_k or fp16: export it again with `convsparse export`")
        return cls(folder / "model.onnx", FastTokenizer(folder), fingerprint=str(meta["fingerprint"]),
                   max_length=int(meta["max_length"]), device=device,
                   intra_op_threads=intra_op_threads,
                   source=source if source is not None else str(meta.get("source") or folder),
                   vocabulary_name=meta.get("vocabulary_name"))

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


def read_export_metadata(folder: str | Path) -> dict[str, Any]:
    """The ``convsparse_encoder.json`` of an export folder; `UnsupportedModelError` names the
    file when it is missing or not a JSON object."""
    from convsparse.encoders.export import METADATA_NAME
    from convsparse.errors import UnsupportedModelError

    path = Path(folder) / METADATA_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnsupportedModelError(f"{path}: cannot read the export's metadata ({e}); export the "
                                    "student again with `convsparse export --out FOLDER`") from None
    if not isinstance(meta, dict) or "fingerprint" not in meta or "max_length" not in meta:
        raise UnsupportedModelError(f"{path}: not an export's metadata (no fingerprint or "
                                    "max_length); export the student again with `convsparse export`")
    return meta


def is_export_folder(folder: str | Path) -> bool:
    """A folder `convsparse export --out FOLDER` wrote (graph, tokenizer, metadata)."""
    from convsparse.encoders.export import METADATA_NAME

    folder = Path(folder)
    return (folder / METADATA_NAME).is_file() and (folder / "model.onnx").is_file()
