"""Encoder fingerprints: a stable hash of everything that changes a term map."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def vocabulary_name(tokenizer: Any) -> str:
    """Names a vocabulary: tokenizer class, size and a hash of the token -> id table, e.g.
    ``BertTokenizerFast:30522:sha256:1f2e...``; written to an index's ``_meta.vocabulary``.
    A tokenizer may name its class itself (`vocabulary_class`, as the `tokenizers`-only
    `FastTokenizer` does, reading it from ``tokenizer_config.json``)."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(
        json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode()
    ).hexdigest()[:12]
    name = getattr(tokenizer, "vocabulary_class", None) or type(tokenizer).__name__
    return f"{name}:{len(vocab)}:sha256:{digest}"


def encoder_fingerprint(
    model: torch.nn.Module, tokenizer: Any, *, pooling: str, max_length: int, document_pruning: str
) -> str:
    """sha256 over weights, vocabulary, model config, pooling, max length and ingest-time
    pruning. Two encoders with the same fingerprint emit the same term maps."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode())
    config = getattr(model, "config", None)
    if config is not None:
        cfg = config.to_dict()
        # Keys that do not change a term map (paths, versions, load dtype, KV-cache flag: a
        # sentence-transformers save flips use_cache) stay out of the hash.
        for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"):
            cfg.pop(volatile, None)
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(f"pooling={pooling};max_length={max_length};doc_pruning={document_pruning}".encode())
    return "sha256:" + h.hexdigest()[:16]
