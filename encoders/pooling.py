"""SPLADE pooling: masked-LM logits -> log(1 + ReLU) -> max over the attended tokens.

Formal, Lassance, Piwowarski, Clinchant, "SPLADE v2" (arXiv 2109.10086), eq. 2 with max pooling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

POOLING_NAME = "splade-max-log1p-relu"


def masked_max(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, vocab) max over the attended tokens of (batch, tokens, vocab) logits; a padded
    position counts as 0, which relu would make of any non-positive logit anyway."""
    return logits.masked_fill(attention_mask.unsqueeze(-1) == 0, 0).amax(dim=1)


class SpladeMaxPooling(nn.Module):
    """(batch, tokens, vocab) logits + (batch, tokens) mask -> (batch, vocab) activations: the
    reference definition (`SpladeModel` computes the same without materialising the logits)."""

    def forward(self, logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # log1p(relu(x)) is non-decreasing, so it commutes with the max over tokens: taking the
        # max first gives bit-identical activations (and the same gradients) while the
        # transcendental runs on (batch, vocab), not (batch, tokens, vocab).
        return torch.log1p(torch.relu(masked_max(logits, attention_mask)))


def _bert_head(mlm: nn.Module) -> tuple[nn.Module, Callable, nn.Linear]:
    head = mlm.cls.predictions
    return mlm.bert, head.transform, head.decoder


def _distilbert_head(mlm: nn.Module) -> tuple[nn.Module, Callable, nn.Linear]:
    def transform(h: torch.Tensor) -> torch.Tensor:
        return mlm.vocab_layer_norm(mlm.activation(mlm.vocab_transform(h)))
    return mlm.distilbert, transform, mlm.vocab_projector


def _roberta_head(mlm: nn.Module) -> tuple[nn.Module, Callable, nn.Linear]:
    lm = mlm.lm_head

    def transform(h: torch.Tensor) -> torch.Tensor:
        return lm.layer_norm(nn.functional.gelu(lm.dense(h)))
    return mlm.roberta, transform, lm.decoder


#: (encoder, head transform, decoder) of the masked-LM architectures SPLADE checkpoints use,
#: whose logits are ``decoder(transform(encoder(...)[0]))``, by class name; any other
#: architecture runs its whole masked-LM. Looked up on each call, so a copied model uses its
#: own modules.
_HEADS: dict[str, Callable[[nn.Module], tuple[nn.Module, Callable, nn.Linear]]] = {
    "BertForMaskedLM": _bert_head,
    "DistilBertForMaskedLM": _distilbert_head,
    "RobertaForMaskedLM": _roberta_head,
}


class SpladeModel(nn.Module):
    """A masked-LM with SPLADE pooling on top: the graph we run and export, so a runtime
    returns one vocabulary-sized vector per input, never tokens x vocabulary logits.

    For BERT, DistilBERT and RoBERTa the head is computed so that nothing of size (batch,
    tokens, vocab) is touched but the decoder's product and its max: a padded position takes
    position 0's hidden state (its logits then repeat a real token's, so the max over tokens
    is unchanged and no mask over the logits is needed), and the decoder's bias is added after
    the max (adding a constant commutes with the max, rounding included). With a 30k vocabulary
    and a small encoder those two (batch, tokens, vocab) passes were most of the time
    (docs/reference/encoders.md). The activations
    equal the masked-LM's own logits pooled (`SpladeMaxPooling`) to float rounding: the bias
    is added once, outside the product (`tests/encoders/test_encoders_pooling.py`).
    `max_logits` is the one definition: the exported graph, the dense path and the bulk path
    (`SpladeStudent.pooled`, CPU and CUDA) all pool through it."""

    def __init__(self, mlm: nn.Module):
        super().__init__()
        self.mlm = mlm
        self._head = _HEADS.get(type(mlm).__name__)

    @property
    def fast_head(self) -> bool:
        """Whether the head skips the (batch, tokens, vocab) mask and bias passes."""
        return self._head is not None

    def max_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`masked_max` of the masked-LM's logits, in the model's dtype."""
        if self._head is None:
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits
            return masked_max(logits, attention_mask)
        encoder, transform, decoder = self._head(self.mlm)
        hidden = transform(encoder(input_ids=input_ids, attention_mask=attention_mask)[0])
        hidden = torch.where(attention_mask.unsqueeze(-1) != 0, hidden, hidden[:, :1])
        pooled = torch.matmul(hidden, decoder.weight.t()).amax(dim=1)
        return pooled + decoder.bias if decoder.bias is not None else pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.relu(self.max_logits(input_ids, attention_mask)))
