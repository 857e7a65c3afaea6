"""`TermControlReranker`: a BERT cross-encoder plus a Term Control Layer.

The seed (RRADistill, "Re-Ranking Ability Distillation") distils an LLM's ranking into small
models and, for encoder models, adds a Term Control Layer that captures term-matching signals
next to the encoder's semantic representation. Here:

- the semantic part reads ``[CLS] conversation [SEP] passage [SEP]`` (the conversation as the
  student's formatter gives it: current question first, earlier user questions after) and
  scores the pair from the [CLS] vector: ``s_sem = w_s . h``;
- the Term Control Layer reads the explicit term-matching features of `features.py` (sparse
  overlap through the first-stage score, exact overlap weighted by the student's term
  weights, question coverage, rank, and the current question's BM25 over word pieces) through
  a linear part and a small MLP,
  ``s_term = w . phi + MLP(phi)``, and a gate
  computed from the same [CLS] vector decides how much they move the score:
  ``s = s_sem + sigmoid(w_g . h + b_g) * s_term``.

Where it differs from the seed's description: the seed conditions term matching on token-
level interactions inside the encoder; we feed pooled features computed outside it, because
serving must stay inside a chat app's budget on one CPU core and the first stage already
computed the sparse overlap. With ``term_control=False`` the model is the plain cross-encoder
(the ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from convsparse.reranking.features import N_FEATURES


class TermControlReranker(nn.Module):
    def __init__(self, encoder: nn.Module, *, term_control: bool = True, hidden: int = 16):
        super().__init__()
        self.encoder = encoder
        size = encoder.config.hidden_size
        self.semantic = nn.Linear(size, 1)
        self.term_control = term_control
        if term_control:
            self.term_linear = nn.Linear(N_FEATURES, 1, bias=False)
            self.term_mlp = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(),
                                          nn.Linear(hidden, 1))
            self.gate = nn.Linear(size, 1)
            # Start exactly at the first stage's order: the linear part passes the first-stage
            # z-score (feature 0), the MLP's output layer, the semantic head and the gate start
            # at zero (gate 1/2). Training moves away from the first stage only where the
            # teacher says so, instead of starting from a random cross-encoder's noise.
            with torch.no_grad():
                self.term_linear.weight.zero_()
                self.term_linear.weight[0, 0] = 1.0
            for layer in (self.term_mlp[-1], self.semantic, self.gate):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (batch,) of (conversation, passage) pairs."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state[:, 0]
        score = self.semantic(h).squeeze(-1)
        if self.term_control:
            if features is None:
                raise ValueError("the Term Control Layer needs the term features")
            gate = torch.sigmoid(self.gate(h)).squeeze(-1)
            term = self.term_linear(features) + self.term_mlp(features)
            score = score + gate * term.squeeze(-1)
        return score


__all__ = ["TermControlReranker"]
