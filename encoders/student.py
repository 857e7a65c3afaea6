"""The PyTorch student: any masked-LM checkpoint + SPLADE pooling -> term maps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, AutoTokenizer

from convsparse.conversation import ConversationLike
from convsparse.encoders.fingerprint import encoder_fingerprint, vocabulary_name
from convsparse.encoders.formatter import ConversationFormatter
from convsparse.encoders.pooling import POOLING_NAME, SpladeModel
from convsparse.pruning import PruningPolicy
from convsparse.termmap import TermMap, TermMapBatch, term_map_from_vector


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


class StudentEncoderBase:
    """What every runtime shares: tokenizing, formatting, batching by length, pruning and
    building term maps. A runtime only implements `_activations(ids, mask)`."""

    runtime: str = "base"

    def __init__(self, tokenizer, *, max_length: int, document_pruning: PruningPolicy | None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.document_pruning = document_pruning or PruningPolicy()
        self.formatter = ConversationFormatter(tokenizer, max_length)

    @cached_property
    def vocabulary(self) -> list[str]:
        vocab = self.tokenizer.get_vocab()
        out = [""] * (max(vocab.values()) + 1)
        for token, i in vocab.items():
            out[i] = token
        return out

    @cached_property
    def vocabulary_name(self) -> str:
        return vocabulary_name(self.tokenizer)

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def _activations(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def activations_for_ids(
        self, rows: Sequence[Sequence[int]], *, batch_size: int = 32, progress: bool = False,
        desc: str = "encoding",
    ) -> np.ndarray:
        """(n, vocab) float32 activations for pre-tokenized rows, in input order."""
        out = np.zeros((len(rows), len(self.vocabulary)), dtype=np.float32)
        batches = length_batches([len(r) for r in rows], batch_size)
        pad = self.tokenizer.pad_token_id or 0
        for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            ids, mask = pad_batch([rows[i] for i in idx], pad)
            out[idx] = self._activations(ids, mask)
        return out

    def tokenize_documents(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return enc["input_ids"]

    def _to_batch(
        self, vectors: np.ndarray, ids: Sequence[str] | None, pruning: PruningPolicy | None
    ) -> TermMapBatch:
        maps = []
        for i, vec in enumerate(vectors):
            rid = ids[i] if ids is not None else None
            tm = term_map_from_vector(vec, self.vocabulary, record_id=rid)
            maps.append(pruning.apply(tm) if pruning is not None else tm)
        return TermMapBatch(maps, self.fingerprint, list(ids) if ids is not None else None)

    def encode_documents(
        self, texts: Sequence[str], *, ids: Sequence[str] | None = None, batch_size: int = 32,
        progress: bool = False,
    ) -> TermMapBatch:
        """Document term maps, with the encoder's ingest-time pruning applied."""
        rows = self.tokenize_documents(texts)
        vectors = self.activations_for_ids(rows, batch_size=batch_size, progress=progress,
                                           desc="encoding documents")
        return self._to_batch(vectors, ids, self.document_pruning)

    def encode_conversations(
        self, conversations: Iterable[ConversationLike], *, ids: Sequence[str] | None = None,
        batch_size: int = 32, progress: bool = False,
    ) -> TermMapBatch:
        """Query term maps for whole conversations (unpruned: pruning is the caller's call)."""
        convs = list(conversations)
        rows = [
            self.formatter.format(c, record_id=ids[i] if ids is not None else str(i)).input_ids
            for i, c in enumerate(convs)
        ]
        vectors = self.activations_for_ids(rows, batch_size=batch_size, progress=progress,
                                           desc="encoding conversations")
        return self._to_batch(vectors, ids, None)

    def encode_conversation(self, conversation: ConversationLike) -> TermMap:
        return self.encode_conversations([conversation], batch_size=1)[0]

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 32) -> TermMapBatch:
        """Standalone queries (e.g. rewrites) encoded as documents are, but unpruned."""
        rows = self.tokenize_documents(texts)
        return self._to_batch(self.activations_for_ids(rows, batch_size=batch_size), None, None)


class SpladeStudent(StudentEncoderBase):
    """PyTorch runtime (CPU or CUDA)."""

    runtime = "torch"

    def __init__(
        self, mlm: torch.nn.Module, tokenizer, *, max_length: int = 256, device: str = "auto",
        document_pruning: PruningPolicy | None = None, source: str = "",
    ):
        super().__init__(tokenizer, max_length=max_length, document_pruning=document_pruning)
        self.device = resolve_device(device)
        self.model = SpladeModel(mlm).to(self.device).eval()
        self.source = source

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str = "auto", max_length: int | None = None,
        document_pruning: PruningPolicy | None = None,
    ) -> SpladeStudent:
        """Load a Hugging Face masked-LM checkpoint (local path or hub id)."""
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        # float32 whatever the checkpoint's dtype (a shipped fp16 safetensors runs on CPU too).
        mlm = AutoModelForMaskedLM.from_pretrained(str(name_or_path), dtype=torch.float32)
        limit = max_length or min(256, getattr(mlm.config, "max_position_embeddings", 512))
        return cls(mlm, tokenizer, max_length=limit, device=device,
                   document_pruning=document_pruning, source=str(name_or_path))

    @cached_property
    def fingerprint(self) -> str:
        return encoder_fingerprint(
            self.model.mlm, self.tokenizer, pooling=POOLING_NAME, max_length=self.max_length,
            document_pruning=self.document_pruning.describe(),
        )

    @torch.inference_mode()
    def _activations(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        return self.model(ids, mask).float().cpu().numpy()
