"""The PyTorch student: any masked-LM checkpoint + SPLADE pooling -> term maps.

The bulk path is `StudentEncoderBase`'s (`student_encoder_base`); here each batch is pooled and
sparsified on the device (`device_sparse`), so only CSR arrays cross to the host.

Precision: ``dtype="auto"`` is bfloat16 on CUDA and float32 on CPU. The fingerprint is always
that of the float32 weights (bf16 term maps equal fp32 ones within bf16 tolerance; index and
query with the same precision). ``compile=True`` wraps the forward + pooling in
`torch.compile(dynamic=True)`: it pays on CUDA for long bulk runs (a one-off compile, then a
faster forward; docs/reference/encoders.md), not for short jobs or CPU.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from convsparse.encoders.fingerprint import encoder_fingerprint
from convsparse.encoders.pooling import POOLING_NAME, SpladeModel
from convsparse.encoders.student_encoder_base import (  # noqa: F401  (re-exported: their old home)
    TOKENIZE_GROUP,
    StudentEncoderBase,
    length_batches,
    pad_batch,
)
from convsparse.pruning import PruningPolicy
from convsparse.termmap import CsrRows

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``"auto"``: bfloat16 on CUDA, float32 elsewhere; else the named dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def splade_pool(logits: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """`SpladeMaxPooling` of (batch, tokens, vocab) logits whose row i attends to its first
    `lengths[i]` tokens, computed max-first (log1p(relu(.)) is non-decreasing, so the max over
    tokens commutes with it, bit for bit) and reading only each row's attended prefix, so no
    masked copy of the logits is made. The max is taken in the logits' dtype (exact), the rest
    in float32."""
    pooled = torch.stack([logits[i, :n].amax(dim=0) for i, n in enumerate(lengths)])
    return torch.log1p(torch.relu(pooled.float()))


class SpladeStudent(StudentEncoderBase):
    """PyTorch runtime (CPU or CUDA)."""

    runtime = "torch"
    out_of_memory_errors = (torch.OutOfMemoryError,)

    def __init__(
        self, mlm: torch.nn.Module, tokenizer, *, max_length: int = 256, device: str = "auto",
        document_pruning: PruningPolicy | None = None, source: str = "",
        dtype: str | torch.dtype = "auto", compile: bool = False,
    ):
        super().__init__(tokenizer, max_length=max_length, document_pruning=document_pruning)
        self.device = resolve_device(device)
        self.model = SpladeModel(mlm).eval()
        self.source = source
        self.dtype = resolve_dtype(dtype, self.device)
        if self.dtype != torch.float32:
            _ = self.fingerprint  # of the float32 weights, whatever runs
        self.model.to(device=self.device, dtype=self.dtype)
        self.compiled = bool(compile)
        self._pooled_compiled = None
        if compile:
            self._pooled_compiled = torch.compile(self._pooled_by_head, dynamic=True)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path, *, device: str = "auto", max_length: int | None = None,
        document_pruning: PruningPolicy | None = None, dtype: str | torch.dtype = "auto",
        compile: bool = False,
    ) -> SpladeStudent:
        """Load a Hugging Face masked-LM checkpoint (local path or hub id)."""
        from convsparse.encoders.quiet_loading import quiet_loading

        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
            # float32 whatever the checkpoint's dtype (a shipped fp16 safetensors runs on CPU too).
            mlm = AutoModelForMaskedLM.from_pretrained(str(name_or_path), dtype=torch.float32)
        limit = max_length or min(256, getattr(mlm.config, "max_position_embeddings", 512))
        return cls(mlm, tokenizer, max_length=limit, device=device,
                   document_pruning=document_pruning, source=str(name_or_path), dtype=dtype,
                   compile=compile)

    @cached_property
    def fingerprint(self) -> str:
        return encoder_fingerprint(
            self.model.mlm, self.tokenizer, pooling=POOLING_NAME, max_length=self.max_length,
            document_pruning=self.document_pruning.describe(),
        )

    @property
    def on_cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    @torch.inference_mode()
    def _activations(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        return self.model(ids, mask).float().cpu().numpy()

    # ------------------------------------------------------------------ the sparse bulk path
    def _stage(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        if self.on_cuda:  # page-locked, so the upload is asynchronous
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return ids, mask

    def _pooled_by_head(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the max in the model's dtype (exact), log1p(relu(.)) in float32
        return torch.log1p(torch.relu(self.model.max_logits(ids, mask).float()))

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) float32 SPLADE activations of a padded batch, on the device: the
        model's own head (`SpladeModel.max_logits`), but for an architecture without the fast
        head on a CPU, where each row's max reads only its attended prefix of the logits."""
        if self._pooled_compiled is not None:
            return self._pooled_compiled(ids, mask)
        if self.on_cuda or self.model.fast_head:
            return self._pooled_by_head(ids, mask)
        logits = self.model.mlm(input_ids=ids, attention_mask=mask).logits
        return splade_pool(logits, mask.sum(dim=1).tolist())

    @torch.inference_mode()
    def _sparse_rows(self, input_ids, attention_mask, pruning: PruningPolicy | None) -> CsrRows:
        from convsparse.encoders.device_sparse import sparsify

        ids = torch.as_tensor(input_ids).to(self.device, non_blocking=True)
        mask = torch.as_tensor(attention_mask).to(self.device, non_blocking=True)
        return sparsify(self.pooled(ids, mask), pruning)

    def _release_memory(self) -> None:
        if self.on_cuda:
            torch.cuda.empty_cache()
