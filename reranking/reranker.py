"""`Reranker`: the second stage the client calls, and its folder format.

A reranker folder holds ``reranker.json`` (format, which parts are on, lengths),
``encoder/`` (the tokenizer, and the cross-encoder's BERT body when there is one, Hugging Face
format), ``head.safetensors`` (the semantic heads, the Term Control Layer), with the Term
Control Layer ``term_statistics.safetensors`` (the BM25 features' document frequencies) and,
with semantic features, ``passage_vectors.safetensors`` (the passages embedded so far) and
``semantic/`` (the sentence-transformers bi-encoder; a built-in one, ``minilm``, is named in
``reranker.json`` instead of copied). Loading never unpickles.
Folders of formats 1-3 (no semantic features; views embedded one by one) are refused:
retrain them. Format 5 added passage windows (`semantic.py`); format 4 folders are read as
ones without. Every file is checked as it is read: a folder that is not one (garbage or
truncated files, shapes that disagree with ``reranker.json``, values out of range) is an
`UnsupportedModelError` naming the file and the fix, and an ONNX export that cannot be used
is exported again (`open_export`).

Serving in ONNX Runtime (``runtime="onnx"``) imports neither torch nor transformers when the
exports exist: the scoring head's ``model.onnx`` (a few kilobytes, shipped with the built-in
re-ranker) and the bi-encoder's (the built-in MiniLM's ships in the package:
`shipped_bi_encoder`; another one's is built once with torch, into the folder or the cache);
tokenizing is the `tokenizers` library's (`FastTokenizer`), the term features numpy.

    >>> rr = load_reranker("runs/reranker")                    # ONNX Runtime; doctest: +SKIP
    >>> hits = rr.rerank(conversation, query_term_map, first_stage_hits)   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import convsparse
from convsparse.conversation import ConversationLike, parse_conversation
from convsparse.documents import document_text
from convsparse.encoders.formatter import ConversationFormatter
from convsparse.encoders.query_graph import DEFAULT_QUERY_PRECISION, QueryPrecision
from convsparse.errors import UnsupportedModelError
from convsparse.hits import Hit
from convsparse.reranking.features import (
    N_FEATURES,
    STATISTICS_FILE,
    PassagePieces,
    TermStatistics,
    term_features,
)
from convsparse.reranking.semantic import BUILTIN_MODELS, VIEW_LENGTH, VIEWS, PassageVectors
from convsparse.reranking.semantic import MODEL_DIR as SEMANTIC_DIR
from convsparse.reranking.semantic import ONNX_FILE as SEMANTIC_ONNX_FILE
from convsparse.settings import DEFAULT_RUNTIME, Runtime

if TYPE_CHECKING:
    import torch

    from convsparse.reranking.model import TermControlReranker

logger = logging.getLogger(__name__)

FORMAT = 5
#: formats this version reads (4 = 5 without passage windows)
READABLE_FORMATS = (4, 5)
ONNX_FILE = "model.onnx"
#: passages whose word pieces are kept (under 40 MB for 512-piece passages)
PIECE_CACHE = 8192
HEAD_FILE = "head.safetensors"
SPEC_FILE = "reranker.json"
#: the re-ranker that ships in the package (`load_reranker("default")`; MODEL_CARD.md there)
DEFAULT_FOLDER = Path(convsparse.__file__).resolve().parent / "models" / "reranker"
RETRAIN = "restore the folder or train it again with `convsparse rerank train`"


@dataclass(frozen=True)
class Parts:
    """Which parts a re-ranker has: what serving needs to know without its torch module."""

    term_control: bool
    cross_encoder: bool
    n_semantic: int


class RerankerSpec(BaseModel):
    """``reranker.json``: the folder's format and the shape of its model."""

    model_config = ConfigDict(extra="ignore")

    format: int
    term_control: bool
    cross_encoder: bool
    semantic_model: str | None = None
    semantic_views: int | None = Field(None, ge=1, le=3)
    semantic_view_length: int | None = Field(None, ge=8, le=8192)
    semantic_window: int | None = Field(None, ge=8, le=8192)
    semantic_stride: int | None = Field(None, ge=1, le=8192)
    max_length: int = Field(ge=16, le=8192)
    query_length: int = Field(ge=8, le=8192)

    @property
    def n_semantic(self) -> int:
        if self.semantic_model is None:
            return 0
        return 2 * (self.semantic_views or VIEWS) * (2 if self.semantic_window is not None else 1)


class Reranker:
    """Scores a first-stage candidate list for a conversation and reorders it.

    ``max_length``: word pieces of one (conversation, passage) pair (the passage is cut, the
    whole passage still counts for the exact-match features); ``query_length``: how much of it
    the conversation may take (newest turns first, as the student's formatter cuts);
    ``statistics``: the training collection's, for the BM25 features; ``semantic``: the
    bi-encoder and its passage vectors, when the model reads semantic features."""

    def __init__(self, model: TermControlReranker | None, tokenizer, *, max_length: int = 128,
                 query_length: int = 48, device: str = "cpu", onnx_path: str | Path | None = None,
                 statistics: TermStatistics | None = None, semantic: PassageVectors | None = None,
                 session: Any = None, parts: Parts | None = None):
        """`model`: the torch module; or None with an ONNX `session` (or `onnx_path`) of its
        export and its `parts` (serving without torch)."""
        if model is not None:
            parts = Parts(model.term_control, model.encoder is not None, model.n_semantic)
        elif parts is None or (session is None and onnx_path is None):
            raise ValueError("a re-ranker without its torch model needs its ONNX export and parts")
        self.parts = parts
        if parts.n_semantic and semantic is None:
            raise ValueError("this re-ranker reads semantic features: pass its PassageVectors")
        self.model = model.to(device).eval() if model is not None else None
        self.tokenizer = tokenizer
        self.statistics = statistics
        self.semantic = semantic
        self.max_length = max_length
        self.query_length = query_length
        self.device = device
        self.session = session
        if onnx_path is not None and session is None:
            from convsparse.encoders.onnx_session import inference_session, providers_for

            self.session = inference_session(onnx_path, providers_for(device))
        self.formatter = (ConversationFormatter(tokenizer, max_length=query_length,
                                                include_assistant=False)
                          if parts.cross_encoder else None)
        #: the passages' word pieces, cached (`passage_ids`; ``.cache_clear()`` forgets)
        self.pieces = functools.lru_cache(maxsize=PIECE_CACHE)(self._tokenize)

    @property
    def term_control(self) -> bool:
        return self.parts.term_control

    @property
    def cross_encoder(self) -> bool:
        return self.parts.cross_encoder

    @property
    def uses_semantic(self) -> bool:
        return self.parts.n_semantic > 0

    # ------------------------------------------------------------------ inputs
    def conversation_ids(self, conversation: ConversationLike) -> list[int]:
        assert self.formatter is not None, "only a cross-encoder reads the formatted conversation"
        return self.formatter.format(conversation).input_ids

    def _tokenize(self, text: str) -> PassagePieces:
        # whole passages (the exact-match features read all of them): no length warning
        return PassagePieces.of(self.tokenizer(text, add_special_tokens=False,
                                               verbose=False)["input_ids"])

    def passage_ids(self, texts: Sequence[str]) -> list[PassagePieces]:
        """Each passage's word pieces, from a bounded cache: a chat's next turn re-ranks many
        of the same passages, and tokenizing whole passages is a visible share of a rerank
        on one core (docs/design/decisions.md)."""
        return [self.pieces(t) for t in texts]

    def batch(self, conv_ids: list[int], passages: Sequence[PassagePieces]) -> dict[str, np.ndarray]:
        """Padded pair arrays: ``[CLS] conversation [SEP]`` (segment 0) then the passage cut
        to fit, ``[SEP]`` (segment 1)."""
        sep = self.tokenizer.sep_token_id
        room = max(1, self.max_length - len(conv_ids) - 1)
        rows = [[*conv_ids, *p.ids[:room].tolist(), sep] for p in passages]
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
            types[i, len(conv_ids):len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def features(self, conversation: ConversationLike, query: Mapping[str, float],
                 passages: Sequence[PassagePieces], first_stage: Sequence[float],
                 statistics: TermStatistics | None = None) -> np.ndarray:
        """(n, `N_FEATURES`) float32 term features of the list (`features.py`); the BM25
        features read `statistics` (the searched collection's) or else the folder's."""
        current = parse_conversation(conversation)[-1].text
        return term_features(self.tokenizer, query, current, passages, first_stage,
                             statistics or self.statistics)

    def semantic_features(self, conversation: ConversationLike,
                          passages: Sequence[str]) -> np.ndarray | None:
        """(n, `PassageVectors.n_features`) float32 bi-encoder features, or None."""
        if self.semantic is None:
            return None
        return self.semantic.features(conversation, passages)

    def arrays(self, conversation: ConversationLike, query: Mapping[str, float],
               passages: Sequence[str], first_stage: Sequence[float],
               statistics: TermStatistics | None = None) -> dict[str, np.ndarray]:
        """The model's keyword inputs for one candidate list as numpy arrays (only the parts
        it has): what the ONNX export reads."""
        out: dict[str, np.ndarray] = {}
        if self.cross_encoder or self.term_control:  # the semantic part alone needs no pieces
            pids = self.passage_ids(passages)
        if self.cross_encoder:
            out.update(self.batch(self.conversation_ids(conversation), pids))
        if self.term_control:
            out["features"] = self.features(conversation, query, pids, first_stage, statistics)
        if self.uses_semantic:
            out["semantic_features"] = self.semantic_features(conversation, passages)
        return out

    def inputs(self, conversation: ConversationLike, query: Mapping[str, float],
               passages: Sequence[str], first_stage: Sequence[float],
               statistics: TermStatistics | None = None) -> dict[str, torch.Tensor]:
        """`arrays` as tensors on the model's device (training, the PyTorch runtime)."""
        import torch

        arrays = self.arrays(conversation, query, passages, first_stage, statistics)
        return {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}

    # ------------------------------------------------------------------ serving
    def score(self, conversation: ConversationLike, query: Mapping[str, float],
              passages: Sequence[str], first_stage: Sequence[float],
              statistics: TermStatistics | None = None) -> np.ndarray:
        """Scores of `passages` (texts, in first-stage order, with their first-stage scores);
        `statistics`: the searched collection's, for the BM25 features (else the folder's)."""
        if not passages:
            return np.zeros(0, np.float32)
        if self.session is not None:
            feed = self.arrays(conversation, query, passages, first_stage, statistics)
            return self.session.run(["scores"], feed)[0].astype(np.float32)
        import torch

        with torch.inference_mode():
            inputs = self.inputs(conversation, query, passages, first_stage, statistics)
            return self.model(**inputs).float().cpu().numpy()

    def export_onnx(self, path: str | Path) -> Path:
        """The scoring model (encoder, heads, Term Control Layer) as ONNX (dynamic batch and
        sequence), for `load_reranker(..., runtime="onnx")`. Tokenizing and the term features
        stay in Python."""
        import torch

        from convsparse.encoders.onnx_session import temporary_sibling

        if self.model is None:
            raise ValueError("this re-ranker was loaded without its torch model")
        path = Path(path)
        ids = torch.randint(1000, 2000, (2, 12))
        example: dict[str, torch.Tensor] = {}
        if self.cross_encoder:
            example = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                       "token_type_ids": torch.zeros_like(ids)}
        dyn: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in example}
        if self.term_control:
            example["features"] = torch.zeros(2, N_FEATURES)
        if self.model.uses_semantic:
            example["semantic_features"] = torch.zeros(2, self.model.n_semantic)
        for n in ("features", "semantic_features"):
            if n in example:
                dyn[n] = {0: "batch"}
        names = list(example)
        dyn["scores"] = {0: "batch"}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(path)  # created by the exporter: the umask's mode
        try:
            with torch.no_grad():
                torch.onnx.export(self.model.cpu().eval(), (), tmp, kwargs=example,
                                  input_names=names,
                                  output_names=["scores"], dynamic_axes=dyn, opset_version=17,
                                  dynamo=False)
            os.replace(tmp, path)  # atomic: a half-written export is never loaded
        finally:
            tmp.unlink(missing_ok=True)
            self.model.to(self.device)
        return path

    def rerank(self, conversation: ConversationLike, query: Mapping[str, float],
               hits: Sequence[Hit], statistics: TermStatistics | None = None) -> list[Hit]:
        """`hits` reordered by the re-ranker's score (which replaces `Hit.score`; the first-stage
        score is kept in the fields as ``first_stage_score``). A hit without stored text raises
        `ValueError` naming it (the client then keeps the first-stage order). `statistics`:
        the searched collection's, for the BM25 features (None: the folder's, its training
        collection's)."""
        texts = []
        for h in hits:
            text = h.fields.get("text")
            if not isinstance(text, str):
                raise ValueError(f"hit {h.id!r} has no stored text to re-rank")
            texts.append(document_text(h.fields.get("title"), text))
        scores = self.score(conversation, query, texts, [h.score for h in hits], statistics)
        order = np.argsort(-scores, kind="stable")
        return [replace(hits[i], score=float(scores[i]),
                        fields={**hits[i].fields, "first_stage_score": hits[i].score})
                for i in order]

    # ------------------------------------------------------------------ folder
    def save(self, path: str | Path) -> Path:
        from convsparse.encoders.quiet_loading import quiet_loading
        from convsparse.reranking.files import follow_umask, write_safetensors

        if self.model is None:
            raise ValueError("this re-ranker was loaded without its torch model: load it with "
                             "runtime='torch' to save it")
        path = Path(path)
        (path / "encoder").mkdir(parents=True, exist_ok=True)
        for stale in (ONNX_FILE, SEMANTIC_ONNX_FILE):  # exports of what this overwrites
            (path / stale).unlink(missing_ok=True)
        with quiet_loading():  # transformers draws a "Writing model shards" bar per save
            if self.cross_encoder:
                self.model.encoder.save_pretrained(path / "encoder")
            self.tokenizer.save_pretrained(path / "encoder")
            semantic_model = self.semantic.save(path) if self.semantic is not None else None
        for written in (path / "encoder", path / SEMANTIC_DIR):
            if written.is_dir():
                follow_umask(written)
        head = {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()
                if not k.startswith("encoder.")}
        write_safetensors(path / HEAD_FILE, head)
        if self.statistics is not None:
            self.statistics.save(path)
        (path / SPEC_FILE).write_text(json.dumps({
            "format": FORMAT, "term_control": self.term_control,
            "cross_encoder": self.cross_encoder, "semantic_model": semantic_model,
            "semantic_views": self.semantic.views if self.semantic is not None else None,
            "semantic_view_length": (self.semantic.view_length if self.semantic is not None
                                     else None),
            "semantic_window": self.semantic.window if self.semantic is not None else None,
            "semantic_stride": self.semantic.stride if self.semantic is not None else None,
            "max_length": self.max_length, "query_length": self.query_length}, indent=1))
        return path


def new_reranker(base: str | Path = "splade-tiny", *, term_control: bool = True,
                 cross_encoder: bool = True, semantic: str | Path | None = None,
                 semantic_views: int = VIEWS, semantic_view_length: int = VIEW_LENGTH,
                 semantic_window: int | None = None, semantic_stride: int | None = None,
                 max_length: int = 128, query_length: int = 48, device: str = "cpu",
                 passages: Sequence[str] | None = None) -> Reranker:
    """An untrained re-ranker on a BERT checkpoint (a folder, hub id or base-model name): its
    tokenizer reads the term features and, with ``cross_encoder``, its body is the
    cross-encoder (the masked-LM head is dropped). ``semantic``: a sentence-transformers
    folder or hub id (``minilm``: the shipped all-MiniLM-L6-v2) for the semantic features,
    reading the first ``semantic_views`` views of the conversation and, with
    ``semantic_window``, windows of the passages as well (`semantic.py`).
    `passages` (the training collection's texts) give the BM25 features their statistics."""
    from transformers import AutoModel, AutoTokenizer

    from convsparse.encoders.base_models import BASE_MODELS, base_model_dir
    from convsparse.encoders.quiet_loading import quiet_loading
    from convsparse.reranking.model import TermControlReranker

    source = base_model_dir(str(base)) if str(base) in BASE_MODELS else base
    with quiet_loading():  # the dropped masked-LM head is reported as unexpected weights
        encoder = (AutoModel.from_pretrained(source, add_pooling_layer=False)
                   if cross_encoder else None)
        tokenizer = AutoTokenizer.from_pretrained(source)
    stats = TermStatistics.from_passages(tokenizer, passages) if passages and term_control else None
    vectors = (PassageVectors.new(semantic, device=device, views=semantic_views,
                                  view_length=semantic_view_length, window=semantic_window,
                                  stride=semantic_stride)
               if semantic is not None else None)
    model = TermControlReranker(encoder, term_control=term_control,
                                semantic=vectors.n_features if vectors is not None else 0)
    return Reranker(model, tokenizer, max_length=max_length, query_length=query_length,
                    device=device, statistics=stats, semantic=vectors)


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def _cached_exports(path: Path, names: Sequence[str]) -> list[Path]:
    """The cache's places for the exports `names` of folder `path`: named by a digest of the
    folder's weights and spec, so an edited folder never meets a stale export."""
    from convsparse.encoders.onnx_session import onnx_cache_path

    digest = hashlib.sha256()
    weights = [path / SPEC_FILE, path / HEAD_FILE]
    if (path / SEMANTIC_DIR).is_dir():  # a bi-encoder of its own, not a built-in one
        weights += sorted(f for f in (path / SEMANTIC_DIR).rglob("*") if f.is_file())
    for f in weights:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes())
    return [onnx_cache_path(f"reranker:{digest.hexdigest()[:32]}-{Path(name).stem}")
            for name in names]


def onnx_exports(path: str | Path, names: Sequence[str]) -> list[Path]:
    """Where the ONNX exports `names` of the re-ranker folder `path` are kept: in the folder
    when it holds them or can be written, else (a read-only mount, as in a container image) in
    the cache beside the student's exports (`_cached_exports`)."""
    path = Path(path)
    if all((path / name).is_file() for name in names) or _writable(path):
        return [path / name for name in names]
    return _cached_exports(path, names)


def builtin_export(semantic: PassageVectors) -> Path:
    """The ONNX export of a built-in bi-encoder: the package's own for the weights it was made
    from (`shipped_bi_encoder`: every install embeds with it, PyTorch or not), else one per
    version of its wheel, in the cache beside the student's exports."""
    from convsparse.encoders.onnx_session import onnx_cache_path
    from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR, shipped_version

    assert semantic.model_tag is not None
    if semantic.model_tag == f"{semantic.builtin}=={shipped_version()}":
        return SHIPPED_DIR / "model.onnx"
    return onnx_cache_path("bi-encoder:" + semantic.model_tag.replace("==", "-"))


def use_builtin_export(semantic: PassageVectors, *, device: str = "cpu") -> PassageVectors:
    """Serve a built-in bi-encoder in ONNX Runtime from `builtin_export`: the package's own
    export is never rebuilt (a damaged one is reported with its fix), a cached one is made
    again when it cannot be used."""
    from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR

    target = builtin_export(semantic)
    shipped = target == SHIPPED_DIR / "model.onnx"
    return semantic.use_onnx(target, device=device, build=_reinstall if shipped else None)


def _reinstall(target: Path) -> None:
    raise UnsupportedModelError(f"{target}: the package's bi-encoder export is missing or "
                                "damaged; reinstall convsparse (pip install --force-reinstall "
                                "--no-deps convsparse)")


# ---------------------------------------------------------------------- reading a folder
def read_spec(path: Path) -> RerankerSpec:
    """The folder's validated ``reranker.json``."""
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        raise UnsupportedModelError(f"{path} is not a re-ranker folder (no {SPEC_FILE}); train "
                                    "one with `convsparse rerank train`")
    try:
        raw = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedModelError(f"{spec_file}: unreadable ({e}); {RETRAIN}") from None
    if not isinstance(raw, dict):
        raise UnsupportedModelError(f"{spec_file}: not a JSON object; {RETRAIN}")
    if raw.get("format") not in READABLE_FORMATS:
        raise UnsupportedModelError(
            f"{spec_file}: format {raw.get('format')!r}, this version reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))} "
            "(format 1 had no BM25 features, format 2 no semantic features, format 3 embedded "
            "each view of the conversation separately); retrain it with `convsparse rerank "
            "train`")
    try:
        spec = RerankerSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "the file"
        raise UnsupportedModelError(f"{spec_file}: {where}: {err['msg']}; {RETRAIN}") from None
    if not spec.cross_encoder and spec.semantic_model is None:
        raise UnsupportedModelError(f"{spec_file}: neither a cross-encoder nor a semantic model; "
                                    f"{RETRAIN}")
    if spec.semantic_model is not None and (
            spec.semantic_views is None or spec.semantic_view_length is None
            or (spec.semantic_model not in BUILTIN_MODELS and spec.semantic_model != SEMANTIC_DIR)):
        raise UnsupportedModelError(f"{spec_file}: semantic_model {spec.semantic_model!r} needs "
                                    f"semantic_views and semantic_view_length, and is "
                                    f"{' or '.join(BUILTIN_MODELS)} or {SEMANTIC_DIR!r}; {RETRAIN}")
    return spec


def read_head(path: Path) -> dict[str, np.ndarray]:
    """The head's tensors (numpy: no torch), each finite."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    f = path / HEAD_FILE
    try:
        head = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsupportedModelError(f"{f}: not a safetensors file ({str(e)[:120]}); {RETRAIN}"
                                    ) from None
    for name, t in head.items():
        if not np.issubdtype(t.dtype, np.floating) or not np.isfinite(t).all():
            raise UnsupportedModelError(f"{f}: {name} holds values that are not finite numbers; "
                                        f"{RETRAIN}")
    return head


def read_statistics(path: Path, vocabulary: int) -> TermStatistics | None:
    """The BM25 features' statistics, checked against the tokenizer's vocabulary."""
    from safetensors import SafetensorError

    f = path / STATISTICS_FILE
    if not f.is_file():
        return None
    try:
        stats = TermStatistics.load(path)
    except (SafetensorError, OSError, ValueError, KeyError, IndexError) as e:
        raise UnsupportedModelError(f"{f}: not a term-statistics file ({type(e).__name__}: "
                                    f"{str(e)[:120]}); {RETRAIN}") from None
    if stats.idf.shape != (vocabulary,):
        raise UnsupportedModelError(f"{f}: idf of shape {list(stats.idf.shape)}, the tokenizer "
                                    f"has {vocabulary} word pieces; {RETRAIN}")
    if not (np.isfinite(stats.idf).all() and (stats.idf >= 0).all()
            and np.isfinite(stats.average_length) and stats.average_length > 0):
        raise UnsupportedModelError(f"{f}: idf or average length out of range (negative or not "
                                    f"finite); {RETRAIN}")
    return stats


def _semantic(path: Path, spec: RerankerSpec, device: str, *, lazy: bool) -> PassageVectors | None:
    if spec.semantic_model is None:
        return None
    return PassageVectors.load(path, spec.semantic_model, device=device,
                               views=int(spec.semantic_views or VIEWS),
                               view_length=int(spec.semantic_view_length or VIEW_LENGTH),
                               window=spec.semantic_window, stride=spec.semantic_stride,
                               lazy=lazy)


def _load_torch(path: Path, spec: RerankerSpec, device: str,
                semantic: PassageVectors | None = None) -> Reranker:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from convsparse.encoders.quiet_loading import quiet_loading
    from convsparse.reranking.model import TermControlReranker

    head = read_head(path)
    encoder = None
    try:
        with quiet_loading():
            if spec.cross_encoder:
                encoder = AutoModel.from_pretrained(path / "encoder", add_pooling_layer=False)
            tokenizer = AutoTokenizer.from_pretrained(path / "encoder")
    except Exception as e:  # tokenizers' parse errors are plain Exceptions
        raise UnsupportedModelError(f"{path / 'encoder'}: unreadable ({str(e).splitlines()[0]}"
                                    f"); {RETRAIN}") from None
    if semantic is None:
        semantic = _semantic(path, spec, device, lazy=False)
    model = TermControlReranker(encoder, term_control=spec.term_control,
                                semantic=semantic.n_features if semantic is not None else 0)
    try:
        missing, unexpected = model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in head.items()}, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        reason = " ".join(str(e).split("\n\t")[1:2]) or str(e).splitlines()[0]
        raise UnsupportedModelError(f"{path / HEAD_FILE}: {reason.strip()}; {RETRAIN}") from None
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise UnsupportedModelError(f"{path / HEAD_FILE}: head weights do not match "
                                    f"({missing=}, {unexpected=}); {RETRAIN}")
    stats = read_statistics(path, len(tokenizer))
    return Reranker(model, tokenizer, max_length=spec.max_length, query_length=spec.query_length,
                    device=device, statistics=stats, semantic=semantic)


def _head_check(spec: RerankerSpec, names_wanted: set[str]):
    def check(session) -> str | None:
        inputs = {i.name: i.shape for i in session.get_inputs()}
        if set(inputs) != names_wanted:
            return f"inputs {sorted(inputs)}, this re-ranker's are {sorted(names_wanted)}"
        for name, width in (("features", N_FEATURES), ("semantic_features", spec.n_semantic)):
            got = inputs.get(name, [None, width])[-1]
            if isinstance(got, int) and got != width:
                return f"{name} of width {got}, this re-ranker reads {width}"
        return None
    return check


def _load_onnx(path: Path, spec: RerankerSpec, device: str,
               query_precision: QueryPrecision = DEFAULT_QUERY_PRECISION) -> Reranker:
    """The serving path: ONNX Runtime sessions of the exports (made first, with torch, when
    missing or unusable), the `tokenizers` library and numpy; no torch or transformers when
    the exports are there."""
    from convsparse.encoders.onnx_session import open_export, providers_for
    from convsparse.encoders.tokenizer import FastTokenizer

    read_head(path)  # a damaged folder is named even when its exports would still run
    tokenizer = FastTokenizer.load(path / "encoder")
    stats = read_statistics(path, len(tokenizer))
    semantic = _semantic(path, spec, device, lazy=True)
    torch_model: list[Reranker] = []

    def export_head(target: Path) -> None:
        if not torch_model:
            torch_model.append(_load_torch(path, spec, device, semantic=semantic))
        torch_model[0].export_onnx(target)

    own_bi_encoder = semantic is not None and semantic.model_tag is None
    names = [ONNX_FILE] + [SEMANTIC_ONNX_FILE] * own_bi_encoder
    exports = onnx_exports(path, names)
    wanted = ({"input_ids", "attention_mask", "token_type_ids"} if spec.cross_encoder else set())
    wanted |= {"features"} if spec.term_control else set()
    wanted |= {"semantic_features"} if spec.n_semantic else set()
    providers = providers_for(device)
    if exports[0].parent == path and not _writable(path):  # shipped, read-only exports
        try:  # one that cannot be used is exported again into the cache instead
            session = open_export(exports[0], _read_only, providers, check=_head_check(spec, wanted))
        except _ReadOnly:  # the head's export alone moves; a usable semantic.onnx stays
            exports = [_cached_exports(path, names)[0], *exports[1:]]
            session = None
    else:
        session = None
    if session is None:
        session = open_export(exports[0], export_head, providers, check=_head_check(spec, wanted))
    if semantic is not None:
        if own_bi_encoder:
            semantic.use_onnx(exports[1], device=device)
        else:
            use_builtin_export(semantic, device=device)
            if query_precision == "int8":
                semantic.use_query_int8()
    return Reranker(None, tokenizer, max_length=spec.max_length, query_length=spec.query_length,
                    device=device, statistics=stats, semantic=semantic, session=session,
                    parts=Parts(spec.term_control, spec.cross_encoder, spec.n_semantic))


class _ReadOnly(Exception):
    pass


def _read_only(target: Path) -> None:
    raise _ReadOnly(target)


def load_reranker(path: str | Path | None = "default", *, device: str = "cpu",
                  runtime: Runtime = DEFAULT_RUNTIME,
                  query_precision: QueryPrecision = DEFAULT_QUERY_PRECISION) -> Reranker:
    """A trained re-ranker from its folder (`Reranker.save`); ``"default"`` (or None) is the
    one that ships in the package (`DEFAULT_FOLDER`, see its MODEL_CARD.md).
    ``runtime`` defaults to the project's one default runtime, ONNX Runtime (as `load_student`):
    ``"torch"`` loads the trainable model (the `rerank` extra). ``runtime="onnx"`` scores the
    heads and embeds the conversation's views with ONNX Runtime without importing torch or
    transformers (exported once into the folder as ``model.onnx``
    and, for a bi-encoder of its own, ``semantic.onnx``, or into the cache when the folder is
    read-only: `onnx_exports`; a built-in bi-encoder's export is shared from the cache:
    `builtin_export`; the faster choice on a CPU core). A folder that cannot be read is an
    `UnsupportedModelError` naming the file and the fix. On ONNX Runtime's CPU,
    ``query_precision="int8"`` embeds the conversation's views with an int8 graph of a
    built-in bi-encoder where the ``onnx`` package can build it (`PassageVectors.use_query_int8`);
    passages keep float32."""
    if runtime not in ("torch", "onnx"):
        raise UnsupportedModelError(f"runtime must be 'torch' or 'onnx', not {runtime!r}")
    path = DEFAULT_FOLDER if path is None or str(path) == "default" else Path(path)
    spec = read_spec(path)
    if runtime == "onnx":
        return _load_onnx(path, spec, device, query_precision)
    return _load_torch(path, spec, device)


__all__ = ["DEFAULT_FOLDER", "Parts", "Reranker", "RerankerSpec", "builtin_export", "use_builtin_export",
           "load_reranker", "new_reranker", "onnx_exports", "read_spec"]
