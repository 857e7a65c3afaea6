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
ones without.

    >>> rr = load_reranker("runs/reranker")                                # doctest: +SKIP
    >>> hits = rr.rerank(conversation, query_term_map, first_stage_hits)   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from convsparse.conversation import ConversationLike, parse_conversation
from convsparse.documents import document_text
from convsparse.encoders.formatter import ConversationFormatter
from convsparse.encoders.quiet_loading import quiet_loading
from convsparse.errors import UnsupportedModelError
from convsparse.integration.backend import Hit
from convsparse.reranking.features import (
    N_FEATURES,
    STATISTICS_FILE,
    PassagePieces,
    TermStatistics,
    term_features,
)
from convsparse.reranking.model import TermControlReranker
from convsparse.reranking.semantic import MODEL_DIR as SEMANTIC_DIR
from convsparse.reranking.semantic import ONNX_FILE as SEMANTIC_ONNX_FILE
from convsparse.reranking.semantic import VIEW_LENGTH, VIEWS, PassageVectors

FORMAT = 5
#: formats this version reads (4 = 5 without passage windows)
READABLE_FORMATS = (4, 5)
ONNX_FILE = "model.onnx"
#: passages whose word pieces are kept (under 40 MB for 512-piece passages)
PIECE_CACHE = 8192


class Reranker:
    """Scores a first-stage candidate list for a conversation and reorders it.

    ``max_length``: word pieces of one (conversation, passage) pair (the passage is cut, the
    whole passage still counts for the exact-match features); ``query_length``: how much of it
    the conversation may take (newest turns first, as the student's formatter cuts);
    ``statistics``: the training collection's, for the BM25 features; ``semantic``: the
    bi-encoder and its passage vectors, when the model reads semantic features."""

    def __init__(self, model: TermControlReranker, tokenizer, *, max_length: int = 128,
                 query_length: int = 48, device: str = "cpu", onnx_path: str | Path | None = None,
                 statistics: TermStatistics | None = None, semantic: PassageVectors | None = None):
        if model.uses_semantic and semantic is None:
            raise ValueError("this re-ranker reads semantic features: pass its PassageVectors")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.statistics = statistics
        self.semantic = semantic
        self.max_length = max_length
        self.query_length = query_length
        self.device = device
        self.session = None
        if onnx_path is not None:
            from convsparse.encoders.onnx_runtime import inference_session, providers_for

            self.session = inference_session(onnx_path, providers_for(device))
        self.formatter = ConversationFormatter(tokenizer, max_length=query_length,
                                               include_assistant=False)
        #: the passages' word pieces, cached (`passage_ids`; ``.cache_clear()`` forgets)
        self.pieces = functools.lru_cache(maxsize=PIECE_CACHE)(self._tokenize)

    @property
    def term_control(self) -> bool:
        return self.model.term_control

    @property
    def cross_encoder(self) -> bool:
        return self.model.encoder is not None

    # ------------------------------------------------------------------ inputs
    def conversation_ids(self, conversation: ConversationLike) -> list[int]:
        return self.formatter.format(conversation).input_ids

    def _tokenize(self, text: str) -> PassagePieces:
        # whole passages (the exact-match features read all of them): no length warning
        return PassagePieces.of(self.tokenizer(text, add_special_tokens=False,
                                               verbose=False)["input_ids"])

    def passage_ids(self, texts: Sequence[str]) -> list[PassagePieces]:
        """Each passage's word pieces, from a bounded cache: a chat's next turn re-ranks many
        of the same passages, and tokenizing 20 whole passages is ~13 ms of a rerank on one
        core."""
        return [self.pieces(t) for t in texts]

    def batch(self, conv_ids: list[int], passages: Sequence[PassagePieces]) -> dict[str, torch.Tensor]:
        """Padded pair tensors: ``[CLS] conversation [SEP]`` (segment 0) then the passage cut
        to fit, ``[SEP]`` (segment 1)."""
        sep = self.tokenizer.sep_token_id
        room = max(1, self.max_length - len(conv_ids) - 1)
        rows = [[*conv_ids, *p.ids[:room].tolist(), sep] for p in passages]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        types = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
            types[i, len(conv_ids):len(r)] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device),
                "token_type_ids": types.to(self.device)}

    def features(self, conversation: ConversationLike, query: Mapping[str, float],
                 passages: Sequence[PassagePieces], first_stage: Sequence[float]) -> torch.Tensor:
        current = parse_conversation(conversation)[-1].text
        return torch.from_numpy(term_features(self.tokenizer, query, current, passages,
                                              first_stage, self.statistics)).to(self.device)

    def semantic_features(self, conversation: ConversationLike,
                          passages: Sequence[str]) -> torch.Tensor | None:
        if self.semantic is None:
            return None
        return torch.from_numpy(self.semantic.features(conversation, passages)).to(self.device)

    def inputs(self, conversation: ConversationLike, query: Mapping[str, float],
               passages: Sequence[str], first_stage: Sequence[float]) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for one candidate list (only the parts it has)."""
        out: dict[str, torch.Tensor] = {}
        if self.cross_encoder or self.term_control:  # the semantic part alone needs no pieces
            pids = self.passage_ids(passages)
        if self.cross_encoder:
            out.update(self.batch(self.conversation_ids(conversation), pids))
        if self.term_control:
            out["features"] = self.features(conversation, query, pids, first_stage)
        if self.model.uses_semantic:
            out["semantic_features"] = self.semantic_features(conversation, passages)
        return out

    # ------------------------------------------------------------------ serving
    @torch.inference_mode()
    def score(self, conversation: ConversationLike, query: Mapping[str, float],
              passages: Sequence[str], first_stage: Sequence[float]) -> np.ndarray:
        """Scores of `passages` (texts, in first-stage order, with their first-stage scores)."""
        if not passages:
            return np.zeros(0, np.float32)
        inputs = self.inputs(conversation, query, passages, first_stage)
        if self.session is not None:
            feed = {k: v.cpu().numpy() for k, v in inputs.items()}
            return self.session.run(["scores"], feed)[0].astype(np.float32)
        return self.model(**inputs).float().cpu().numpy()

    def export_onnx(self, path: str | Path) -> Path:
        """The scoring model (encoder, heads, Term Control Layer) as ONNX (dynamic batch and
        sequence), for `load_reranker(..., runtime="onnx")`. Tokenizing and the term features
        stay in Python."""
        import os
        import tempfile

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
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
        os.close(fd)
        try:
            with torch.no_grad():
                torch.onnx.export(self.model.cpu().eval(), (), tmp, kwargs=example,
                                  input_names=names,
                                  output_names=["scores"], dynamic_axes=dyn, opset_version=17,
                                  dynamo=False)
            os.replace(tmp, path)  # atomic: a half-written export is never loaded
        finally:
            Path(tmp).unlink(missing_ok=True)
            self.model.to(self.device)
        return path

    def rerank(self, conversation: ConversationLike, query: Mapping[str, float],
               hits: Sequence[Hit]) -> list[Hit]:
        """`hits` reordered by the re-ranker's score (which replaces `Hit.score`; the first-stage
        score is kept in the fields as ``first_stage_score``). A hit without stored text raises
        `ValueError` naming it (the client then keeps the first-stage order)."""
        texts = []
        for h in hits:
            text = h.fields.get("text")
            if not isinstance(text, str):
                raise ValueError(f"hit {h.id!r} has no stored text to re-rank")
            texts.append(document_text(h.fields.get("title"), text))
        scores = self.score(conversation, query, texts, [h.score for h in hits])
        order = np.argsort(-scores, kind="stable")
        return [replace(hits[i], score=float(scores[i]),
                        fields={**hits[i].fields, "first_stage_score": hits[i].score})
                for i in order]

    # ------------------------------------------------------------------ folder
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        (path / "encoder").mkdir(parents=True, exist_ok=True)
        for stale in (ONNX_FILE, SEMANTIC_ONNX_FILE):  # exports of what this overwrites
            (path / stale).unlink(missing_ok=True)
        if self.cross_encoder:
            self.model.encoder.save_pretrained(path / "encoder")
        self.tokenizer.save_pretrained(path / "encoder")
        semantic_model = self.semantic.save(path) if self.semantic is not None else None
        head = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()
                if not k.startswith("encoder.")}
        save_file(head, str(path / "head.safetensors"))
        if self.statistics is not None:
            self.statistics.save(path)
        (path / "reranker.json").write_text(json.dumps({
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


def onnx_exports(path: str | Path, names: Sequence[str]) -> list[Path]:
    """Where the ONNX exports `names` of the re-ranker folder `path` are kept: in the folder
    when it holds them or can be written, else (a read-only mount, as in a container image) in
    the cache beside the student's exports (`onnx_cache_path`), named by a digest of the
    folder's weights and spec, so an edited folder never meets a stale export."""
    path = Path(path)
    if all((path / name).is_file() for name in names) or _writable(path):
        return [path / name for name in names]
    from convsparse.encoders.onnx_runtime import onnx_cache_path

    digest = hashlib.sha256()
    weights = [path / "reranker.json", path / "head.safetensors"]
    if (path / SEMANTIC_DIR).is_dir():  # a bi-encoder of its own, not a built-in one
        weights += sorted(f for f in (path / SEMANTIC_DIR).rglob("*") if f.is_file())
    for f in weights:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes())
    return [onnx_cache_path(f"reranker:{digest.hexdigest()[:32]}-{Path(name).stem}")
            for name in names]


def builtin_export(semantic: PassageVectors) -> Path:
    """The ONNX export of a built-in bi-encoder: one per version of its wheel, in the cache
    beside the student's exports, shared by every re-ranker folder that names the model."""
    from convsparse.encoders.onnx_runtime import onnx_cache_path

    assert semantic.model_tag is not None
    return onnx_cache_path("bi-encoder:" + semantic.model_tag.replace("==", "-"))


def load_reranker(path: str | Path, *, device: str = "cpu",
                  runtime: Literal["torch", "onnx"] = "torch") -> Reranker:
    """A trained re-ranker from its folder (`Reranker.save`). ``runtime="onnx"`` scores the
    heads and embeds the conversation's views with ONNX Runtime (exported once into the folder
    as ``model.onnx`` and, for a bi-encoder of its own, ``semantic.onnx``, or into the cache
    when the folder is read-only: `onnx_exports`; a built-in bi-encoder's export is shared
    from the cache: `builtin_export`; the faster choice on a CPU core)."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    spec_file = path / "reranker.json"
    if not spec_file.is_file():
        raise UnsupportedModelError(f"{path} is not a re-ranker folder (no reranker.json); train "
                                    "one with `convsparse rerank train`")
    spec: dict[str, Any] = json.loads(spec_file.read_text())
    if spec.get("format") not in READABLE_FORMATS:
        raise UnsupportedModelError(
            f"{spec_file}: format {spec.get('format')!r}, this version reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))} "
            "(format 1 had no BM25 features, format 2 no semantic features, format 3 embedded "
            "each view of the conversation separately); retrain it with `convsparse rerank "
            "train`")
    encoder = None
    if spec["cross_encoder"]:
        with quiet_loading():
            encoder = AutoModel.from_pretrained(path / "encoder", add_pooling_layer=False)
    semantic = (PassageVectors.load(path, spec["semantic_model"], device=device,
                                    views=int(spec["semantic_views"]),
                                    view_length=int(spec["semantic_view_length"]),
                                    window=spec.get("semantic_window"),
                                    stride=spec.get("semantic_stride"))
                if spec.get("semantic_model") is not None else None)
    model = TermControlReranker(encoder, term_control=bool(spec["term_control"]),
                                semantic=semantic.n_features if semantic is not None else 0)
    missing, unexpected = model.load_state_dict(load_file(str(path / "head.safetensors")),
                                                strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise UnsupportedModelError(f"{path}: head weights do not match ({missing=}, {unexpected=})")
    stats = TermStatistics.load(path) if (path / STATISTICS_FILE).is_file() else None
    rr = Reranker(model, AutoTokenizer.from_pretrained(path / "encoder"),
                  max_length=int(spec["max_length"]), query_length=int(spec["query_length"]),
                  device=device, statistics=stats, semantic=semantic)
    if runtime == "onnx":
        own_bi_encoder = semantic is not None and semantic.model_tag is None
        onnx_path, *semantic_path = onnx_exports(
            path, [ONNX_FILE] + [SEMANTIC_ONNX_FILE] * own_bi_encoder)
        if not onnx_path.exists():
            rr.export_onnx(onnx_path)
        if semantic is not None:
            semantic.use_onnx(semantic_path[0] if own_bi_encoder else builtin_export(semantic),
                              device=device)
        rr = Reranker(rr.model, rr.tokenizer, max_length=rr.max_length,
                      query_length=rr.query_length, device=device, onnx_path=onnx_path,
                      statistics=stats, semantic=semantic)
    elif runtime != "torch":
        raise UnsupportedModelError(f"runtime must be 'torch' or 'onnx', not {runtime!r}")
    return rr


__all__ = ["Reranker", "builtin_export", "load_reranker", "new_reranker", "onnx_exports"]
