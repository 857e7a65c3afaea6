"""Trace the document encoder into an ML Commons SPARSE_ENCODING artifact (TorchScript zip).

Only the document encoder fits ML Commons: the server feeds a model one string per call, while
the anchored query side needs the question, its history views and a gate. So the artifact is
the anchored student's base (whose fingerprint is the index's), and the client keeps sending
`query_tokens`.

The graph ML Commons runs (its `SparseEncodingTranslator` feeds `input_ids` and
`attention_mask` as one `Dict[str, Tensor]`, one document per forward, and turns the non-zero
entries of `output` into `token -> weight`):

    forward(features: Dict[str, Tensor]) -> {"output": Tensor[batch, vocab]}

It is `SpladeModel` (the one pooling definition every runtime uses) with the special token ids
zeroed inside the graph (convsparse keeps them in term maps, ML Commons drops them at decode
time: zeroing them makes both sides the same), traced with eager attention (a
`scaled_dot_product_attention` op does not load in the cluster's libtorch: 1.13.1 on
OpenSearch 2.x, 2.5.1 on 3.x). The trace runs on a padded batch of two texts of different
lengths, so the attention-mask path is in the graph.

The zip holds `convsparse-<fp12>.pt`, `tokenizer.json` (truncation set to the encoder's own max
length: ML Commons truncates where that file says) and the base model's `LICENSE`; every entry
has a fixed timestamp and mode, so zipping the same files gives the same bytes. Re-tracing
does not give the same `.pt` bytes, so keep the built folder: `manifest.json` names the zip's
sha256, which registration sends and the server re-checks at deploy.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convsparse.encoders.pooling import SpladeModel
from convsparse.errors import UsageError
from convsparse.integration.backends.mlcommons_artifact import (
    CHUNK_SIZE,
    TARGET_LIBTORCH,
    ArtifactManifest,
    check_model_zip,
    sha256_file,
    total_chunks,
)

__all__ = ["DocumentEncoderGraph", "build_artifact", "graph_ops", "trace_document_encoder"]

#: Every zip entry's timestamp (the zip format's earliest), so the zip's bytes do not depend
#: on when it was built.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
SDPA_OP = "aten::scaled_dot_product_attention"
_TRACE_TEXTS = ("a short text",
                "A longer sample text, so the traced batch is padded and the attention mask is "
                "part of the graph: the cluster runs one document per forward.")


class DocumentEncoderGraph(nn.Module):
    """`SpladeModel` behind the dict signature ML Commons calls, special ids zeroed."""

    def __init__(self, splade: SpladeModel, special_ids: list[int]):
        super().__init__()
        self.splade = splade
        self.register_buffer("special_ids", torch.tensor(sorted(special_ids), dtype=torch.long))

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        activations = self.splade(features["input_ids"], features["attention_mask"])
        return {"output": activations.index_fill(1, self.special_ids, 0.0)}


def _document_encoder(model: Any):
    """The `SpladeStudent` that encodes documents: an anchored student's base, or the model."""
    from convsparse.encoders.student import SpladeStudent

    base = getattr(model, "base", model)
    if not isinstance(base, SpladeStudent):
        raise UsageError(f"an ML Commons artifact is traced from a PyTorch student; got "
                         f"{type(base).__name__} (load it with runtime='torch')")
    if not base.document_pruning.is_noop:
        raise UsageError("the encoder prunes documents at ingest time "
                         f"({base.document_pruning.describe()}); the artifact has no pruning "
                         "step, so the cluster's term maps would differ: build from an encoder "
                         "without document pruning (the pipeline's prune_type is another policy)")
    return base


def _eager_copy(mlm: nn.Module) -> nn.Module:
    """A float32 CPU copy of the masked-LM that runs eager attention (no SDPA op)."""
    eager = copy.deepcopy(mlm).to("cpu", torch.float32).eval()
    if hasattr(eager, "set_attn_implementation"):
        eager.set_attn_implementation("eager")
    else:  # older transformers
        eager.config._attn_implementation = "eager"
    return eager


def trace_document_encoder(student: Any) -> torch.jit.ScriptModule:
    """The traced graph of a `SpladeStudent` (see the module docstring)."""
    tok = student.tokenizer
    graph = DocumentEncoderGraph(SpladeModel(_eager_copy(student.model.mlm)), list(tok.all_special_ids)).eval()
    graph.requires_grad_(False)  # inference only: no autograd state in the saved module
    enc = tok(list(_TRACE_TEXTS), padding=True, truncation=True, max_length=student.max_length,
              return_tensors="pt", return_token_type_ids=False)
    features = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is what ML Commons loads, deprecated or not; the one TracerWarning
        # (transformers' mask code reads a shape that equals the mask's own at any length) is
        # checked by running the graph at lengths the trace never saw (the artifact tests).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(graph, (features,), strict=False, check_trace=False)
    if SDPA_OP in graph_ops(traced):
        raise RuntimeError(f"the traced graph still calls {SDPA_OP}, which the cluster's libtorch "
                           "cannot load; this transformers version ignores eager attention")
    return traced


def graph_ops(module: torch.jit.ScriptModule) -> set[str]:
    """The operator kinds of a TorchScript module's inlined graph (e.g. "aten::linear")."""
    return {node.kind() for node in module.inlined_graph.nodes()}


def artifact_tokenizer_json(tokenizer: Any, max_length: int) -> bytes:
    """The tokenizer's `tokenizer.json`, truncating at `max_length` (ML Commons caps it at 512)."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    data["truncation"] = {"direction": "Right", "max_length": int(max_length),
                          "strategy": "LongestFirst", "stride": 0}
    return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever builds it
    return info


def write_model_zip(path: Path, entries: dict[str, bytes]) -> None:
    """A zip of `entries` in the given order, with fixed timestamps and modes."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(_entry(name), data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def _license_text(student: Any) -> bytes:
    source = Path(str(getattr(student, "source", "")))
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
        if (source / name).is_file():
            return (source / name).read_bytes()
    return (b"The model's licence is that of its checkpoint: " + str(source).encode() + b"\n")


def build_artifact(
    model: Any = None, out_dir: str | Path = "mlcommons-artifact", *,
    max_length: int | None = None, target_libtorch: str = "2.5.1",
) -> ArtifactManifest:
    """Trace the document encoder of `model` (anything `load_student` accepts, or a loaded
    student; None = the shipped student) into `out_dir`: the zip and `manifest.json`."""
    from importlib.metadata import version

    from convsparse.encoders.loading import load_student
    from convsparse.mappings import convsparse_version

    if target_libtorch not in TARGET_LIBTORCH:
        raise UsageError(f"--target-libtorch must be one of {', '.join(TARGET_LIBTORCH)}, "
                         f"not {target_libtorch!r}")
    if model is None or isinstance(model, str | Path):
        model = load_student(model, runtime="torch", device="cpu", max_length=max_length)
    student = _document_encoder(model)
    if max_length is not None and max_length != student.max_length:
        raise UsageError(f"max_length {max_length} differs from the loaded encoder's "
                         f"{student.max_length}; load the encoder with that max length")
    if student.max_length > 512:
        raise UsageError(f"max length {student.max_length} is above ML Commons' cap of 512")
    fingerprint = student.fingerprint
    traced = trace_document_encoder(student)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.save(traced, buffer)
    fp12 = fingerprint.split(":")[-1][:12]
    pt_name = f"convsparse-{fp12}.pt"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"convsparse-{fp12}.zip"
    write_model_zip(zip_path, {
        pt_name: buffer.getvalue(),
        "tokenizer.json": artifact_tokenizer_json(student.tokenizer, student.max_length),
        "LICENSE": _license_text(student),
    })
    check_model_zip(zip_path)
    size = zip_path.stat().st_size
    manifest = ArtifactManifest(
        zip_name=zip_path.name, sha256=sha256_file(zip_path), size=size, chunk_size=CHUNK_SIZE,
        total_chunks=total_chunks(size), fingerprint=fingerprint,
        vocabulary=student.vocabulary_name, base_model=Path(str(getattr(student, "source", ""))).name,
        max_length=student.max_length,
        special_ids_zeroed=sorted(int(i) for i in student.tokenizer.all_special_ids),
        pt_name=pt_name, torch_version=torch.__version__,
        transformers_version=version("transformers"), target_libtorch=target_libtorch,
        convsparse_version=convsparse_version(),
    )
    manifest.write(out)
    return manifest
