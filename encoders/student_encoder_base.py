"""`StudentEncoderBase`: what every student runtime shares (tokenizing, formatting, batching
by length, pruning, building term maps), with no PyTorch in it, so the ONNX Runtime student
imports neither torch nor transformers.

Bulk path (`encode_documents`, `encode_conversations`, `encode_texts`): a prefetch thread
tokenizes (the fast tokenizer's batch API) and pads the next length-grouped batches while the
current one runs; each batch becomes CSR rows (`_sparse_rows`, a runtime's own), ingest-time
pruning is finished on the host, vectorised (`PruningPolicy.apply_csr`), and the batch's term
maps are lazy views of those arrays (`TermMapBatch.from_csr`). A batch that runs out of device
memory is halved and retried (and later batches are capped at the size that fitted), so no
document is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property

import numpy as np

from convsparse.conversation import ConversationLike
from convsparse.encoders.fingerprint import vocabulary_name
from convsparse.encoders.formatter import ConversationFormatter
from convsparse.encoders.prefetch import prefetch
from convsparse.progress import progress_bar
from convsparse.pruning import PruningPolicy
from convsparse.termmap import CsrRows, TermMap, TermMapBatch, Vocabulary, term_map_from_vector

log = logging.getLogger(__name__)

#: Documents tokenized at once by the prefetch thread; batches are grouped by length within
#: such a group (one group = exactly the batches of a whole-list sort, for up to this many).
TOKENIZE_GROUP = 4096


#: Largest share of a batch's positions that may be padding before the batch is closed early.
MAX_PADDING = 0.25


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so padding stays small: sorted by
    length, at most `batch_size` each, and a batch is closed early when adding the next (longer)
    row would make more than `MAX_PADDING` of its positions padding. Every position costs the
    masked-LM head a full vocabulary row, so a short text padded to a long one's width costs as
    much as the long one: the four views of one conversation (12 to 90 word pieces) ran 2.6
    times slower padded into one batch than one by one. A long sorted list rarely closes early,
    since neighbours have nearly the same length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        width = max(lengths[i], 1)
        if current and (len(current) == batch_size
                        or tokens + width < (1 - MAX_PADDING) * (len(current) + 1) * width):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += width
    if current:
        batches.append(current)
    return batches


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
    device: str = "cpu"
    #: What the runtime raises when a batch does not fit on the device (PyTorch:
    #: `torch.OutOfMemoryError`); such a batch is halved and retried.
    out_of_memory_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, tokenizer, *, max_length: int, document_pruning: PruningPolicy | None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.document_pruning = document_pruning or PruningPolicy()
        self.formatter = ConversationFormatter(tokenizer, max_length)
        #: Largest batch known to fit on the device (set after an out-of-memory error).
        self.max_batch: int | None = None

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

    @cached_property
    def token_vocabulary(self) -> Vocabulary:
        """The vocabulary with the arrays the CSR path needs (escaped names, tie-break ranks)."""
        return Vocabulary(self.vocabulary)

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def _activations(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ the sparse bulk path
    def _stage(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        """Inputs as the runtime wants them (runs in the prefetch thread)."""
        return input_ids, attention_mask

    def _sparse_rows(self, input_ids, attention_mask, pruning: PruningPolicy | None) -> CsrRows:
        """One padded batch -> CSR rows (a superset of what `pruning` keeps). Default: the
        dense activations, sparsified on the host (ONNX Runtime on CPU returns them there)."""
        return CsrRows.from_dense(self._activations(input_ids, attention_mask))

    def _release_memory(self) -> None:
        """Called after an out-of-memory error, before the halves run."""

    #: On a CPU, a batch runs in passes whose (documents, tokens, vocabulary) float32 logits stay
    #: under this many bytes: a 128-document ingest batch of 256 tokens would otherwise hold 4 GB
    #: at once, and small passes are no slower there (SPLADE-tiny, ONNX Runtime: 50 documents/s
    #: in passes of 4-8, 40 in one pass of 32).
    CPU_LOGITS_BYTES = 256 << 20

    def _rows_per_cpu_pass(self, width: int) -> int | None:
        """Documents per pass on a CPU for a batch `width` tokens wide; None on a GPU."""
        if str(getattr(self, "device", "cpu")).startswith("cuda"):
            return None
        return max(1, self.CPU_LOGITS_BYTES // (max(1, width) * len(self.vocabulary) * 4))

    def _run_batch(self, input_ids, attention_mask, pruning: PruningPolicy | None) -> CsrRows:
        """`_sparse_rows`, in passes of `_rows_per_cpu_pass` documents on a CPU, halving the
        batch on an out-of-memory error (recursively, down to one document; later batches are
        capped at the size that fitted)."""
        n = int(input_ids.shape[0])
        per_pass = self._rows_per_cpu_pass(int(input_ids.shape[1]))
        if per_pass is not None and n > per_pass:
            return CsrRows.concat([
                self._run_batch(input_ids[i:i + per_pass], attention_mask[i:i + per_pass], pruning)
                for i in range(0, n, per_pass)])
        if self.max_batch is not None and n > self.max_batch:
            return self._run_halves(input_ids, attention_mask, pruning)
        try:
            return self._sparse_rows(input_ids, attention_mask, pruning)
        except self.out_of_memory_errors:
            if n <= 1:
                raise
        # Outside the except block: the traceback (and the tensors its frames hold) is gone.
        self._release_memory()
        half = (n + 1) // 2
        self.max_batch = half if self.max_batch is None else min(self.max_batch, half)
        log.warning("out of memory on a batch of %d documents: halving it (batches are capped "
                    "at %d from now on)", n, self.max_batch)
        return self._run_halves(input_ids, attention_mask, pruning)

    def _run_halves(self, input_ids, attention_mask, pruning) -> CsrRows:
        half = (int(input_ids.shape[0]) + 1) // 2
        parts = []
        for sl in (slice(0, half), slice(half, None)):
            ids, mask = input_ids[sl], attention_mask[sl]
            width = int(mask.sum(1).max())  # re-trim the padding of the smaller half
            parts.append(self._run_batch(ids[:, :width], mask[:, :width], pruning))
        return CsrRows.concat(parts)

    def _padded_batches(self, groups: Iterable[tuple[int, Sequence[Sequence[int]]]],
                        batch_size: int) -> Iterator[tuple[list[int], object, object]]:
        """(row positions, staged ids, staged mask) per length-grouped batch of each group."""
        pad = self.tokenizer.pad_token_id or 0
        for offset, rows in groups:
            for idx in length_batches([len(r) for r in rows], batch_size):
                ids, mask = pad_batch([rows[i] for i in idx], pad)
                yield [offset + i for i in idx], *self._stage(ids, mask)

    def _encode_groups(self, groups: Iterable[tuple[int, Sequence[Sequence[int]]]], n: int, *,
                       batch_size: int, pruning: PruningPolicy | None, progress: bool,
                       desc: str) -> CsrRows:
        """CSR rows, in input order, of `n` token rows arriving as (offset, rows) groups."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        parts: list[CsrRows] = []
        order: list[int] = []
        bar = progress_bar(total=n, desc=desc, unit="doc", enabled=progress)
        batches = self._padded_batches(groups, batch_size)
        # one batch (a query): nothing to overlap, so no thread on the latency path
        for positions, ids, mask in (batches if n <= batch_size else prefetch(batches)):
            parts.append(self._run_batch(ids, mask, pruning))
            order.extend(positions)
            bar.update(len(positions))
        bar.close()
        rows = CsrRows.concat(parts) if parts else CsrRows.empty(0)
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
        return rows.take_rows(inverse)

    def sparse_for_ids(
        self, rows: Sequence[Sequence[int]], *, batch_size: int = 32,
        pruning: PruningPolicy | None = None, progress: bool = False, desc: str = "encoding",
    ) -> CsrRows:
        """CSR activations (in input order) for pre-tokenized rows, `pruning` applied."""
        csr = self._encode_groups([(0, rows)], len(rows), batch_size=batch_size,
                                  pruning=pruning, progress=progress, desc=desc)
        csr = csr.validated(self.token_vocabulary)
        return pruning.apply_csr(csr, self.token_vocabulary) if pruning is not None else csr

    def _batch_from_csr(self, csr: CsrRows, ids: Sequence[str] | None,
                        pruning: PruningPolicy | None) -> TermMapBatch:
        vocab = self.token_vocabulary
        csr = csr.validated(vocab, ids)  # errors name the record, before any pruning
        if pruning is not None:
            csr = pruning.apply_csr(csr, vocab)
        return TermMapBatch.from_csr(csr, vocab, self.fingerprint, ids, checked=True)

    def activations_for_ids(
        self, rows: Sequence[Sequence[int]], *, batch_size: int = 32, progress: bool = False,
        desc: str = "encoding",
    ) -> np.ndarray:
        """(n, vocab) float32 activations for pre-tokenized rows, in input order."""
        out = np.zeros((len(rows), len(self.vocabulary)), dtype=np.float32)
        batches = length_batches([len(r) for r in rows], batch_size)
        pad = self.tokenizer.pad_token_id or 0
        for idx in progress_bar(batches, desc=desc, unit="batch", enabled=progress):
            ids, mask = pad_batch([rows[i] for i in idx], pad)
            out[idx] = self._activations(ids, mask)
        return out

    def tokenize_documents(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return enc["input_ids"]

    def _tokenized_groups(self, texts: Sequence[str], group: int = TOKENIZE_GROUP):
        """(offset, token rows) per group of `texts`, tokenized lazily (in the prefetch thread)."""
        for start in range(0, len(texts), group):
            yield start, self.tokenize_documents(texts[start:start + group])

    def _to_batch(
        self, vectors: np.ndarray, ids: Sequence[str] | None, pruning: PruningPolicy | None
    ) -> TermMapBatch:
        """The dense reference path (before issue 15): one TermMap per vocabulary-sized row.
        Kept for the tests and the benchmark's legacy row; the bulk path must equal it."""
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
        """Document term maps, with the encoder's ingest-time pruning applied (CSR-backed)."""
        texts = list(texts)
        if ids is not None and len(ids) != len(texts):
            raise ValueError("ids and texts differ in length")
        pruning = None if self.document_pruning.is_noop else self.document_pruning
        csr = self._encode_groups(self._tokenized_groups(texts), len(texts),
                                  batch_size=batch_size, pruning=pruning, progress=progress,
                                  desc="encoding documents")
        return self._batch_from_csr(csr, ids, pruning)

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
        csr = self._encode_groups([(0, rows)], len(rows), batch_size=batch_size, pruning=None,
                                  progress=progress, desc="encoding conversations")
        return self._batch_from_csr(csr, ids, None)

    def encode_conversation(self, conversation: ConversationLike) -> TermMap:
        return self.encode_conversations([conversation], batch_size=1)[0]

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 32) -> TermMapBatch:
        """Standalone queries (e.g. rewrites) encoded as documents are, but unpruned."""
        texts = list(texts)
        csr = self._encode_groups(self._tokenized_groups(texts), len(texts),
                                  batch_size=batch_size, pruning=None, progress=False,
                                  desc="encoding texts")
        return self._batch_from_csr(csr, None, None)


__all__ = ["TOKENIZE_GROUP", "StudentEncoderBase", "length_batches", "pad_batch"]
