"""`TermControlReranker`: a semantic scorer plus a Term Control Layer.

The seed (RRADistill, "Re-Ranking Ability Distillation") distils an LLM's ranking into small
models and, for encoder models, adds a Term Control Layer that captures term-matching signals
next to the encoder's semantic representation. Here:

- the semantic part is either or both of
  - a cross-encoder reading ``[CLS] conversation [SEP] passage [SEP]`` (the conversation as
    the student's formatter gives it), scored from the [CLS] vector ``h``: ``w_s . h``;
  - a bi-encoder's similarities ``psi`` (`semantic.py`: all-MiniLM-L6-v2 cosines of three
    views of the conversation, pooled from one pass, with the passage's stored vector):
    ``v . psi + MLP_s(psi)``;
- the Term Control Layer reads the explicit term-matching features ``phi`` of `features.py`
  (sparse overlap through the first-stage score, exact overlap weighted by the student's
  term weights, question coverage, rank, and the current question's BM25 over word pieces)
  through a linear part and a small MLP, ``s_term = w . phi + MLP(phi)``, and a gate computed
  from the semantic evidence (``h`` and/or ``psi``) decides how much term matching moves the
  score: ``s = s_sem + sigmoid(w_g . [h, psi] + b_g) * s_term``.

Where it differs from the seed's description: the seed conditions term matching on token-
level interactions inside the encoder; we feed pooled features computed outside it, because
serving must stay inside a chat app's budget on one CPU core and the first stage already
computed the sparse overlap. For the same budget the shipped recipe's semantic part is the
bi-encoder alone: a MiniLM cross-encoder over 20 pairs is far over that budget, and the
2-layer cross-encoder that fits added nothing measurable (docs/design/decisions.md). With ``term_control=False``
the model is the semantic part alone (the ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from convsparse.reranking.features import N_FEATURES


class TermControlReranker(nn.Module):
    """``encoder``: a BERT body read as a cross-encoder, or None; ``semantic``: how many
    bi-encoder features of `semantic.py` it reads (``semantic_features``; 0 = none). At least
    one of the two."""

    def __init__(self, encoder: nn.Module | None, *, term_control: bool = True,
                 semantic: int = 0, hidden: int = 16):
        super().__init__()
        if encoder is None and not semantic:
            raise ValueError("a re-ranker needs a cross-encoder, semantic features or both")
        self.encoder = encoder
        self.term_control = term_control
        self.n_semantic = semantic
        gate_inputs = 0
        zeroed: list[nn.Linear] = []
        if encoder is not None:
            size = encoder.config.hidden_size
            self.semantic = nn.Linear(size, 1)
            gate_inputs += size
            zeroed.append(self.semantic)
        if semantic:
            self.semantic_linear = nn.Linear(semantic, 1)
            self.semantic_mlp = nn.Sequential(nn.Linear(semantic, hidden), nn.Tanh(),
                                              nn.Linear(hidden, 1))
            gate_inputs += semantic
            zeroed += [self.semantic_linear, self.semantic_mlp[-1]]
        if term_control:
            self.term_linear = nn.Linear(N_FEATURES, 1, bias=False)
            self.term_mlp = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.Tanh(),
                                          nn.Linear(hidden, 1))
            self.gate = nn.Linear(gate_inputs, 1)
            # Start exactly at the first stage's order: the linear part passes the first-stage
            # z-score (feature 0), the MLP's output layer, the semantic heads and the gate start
            # at zero (gate 1/2). Training moves away from the first stage only where the
            # teacher says so, instead of starting from a random cross-encoder's noise.
            with torch.no_grad():
                self.term_linear.weight.zero_()
                self.term_linear.weight[0, 0] = 1.0
            zeroed += [self.term_mlp[-1], self.gate]
        for layer in zeroed:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def uses_semantic(self) -> bool:
        return self.n_semantic > 0

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                features: torch.Tensor | None = None,
                semantic_features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (batch,) of (conversation, passage) pairs."""
        parts, gate_in = [], []
        if self.encoder is not None:
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state[:, 0]
            parts.append(self.semantic(h).squeeze(-1))
            gate_in.append(h)
        if self.uses_semantic:
            if semantic_features is None:
                raise ValueError("this re-ranker needs the semantic features")
            parts.append((self.semantic_linear(semantic_features)
                          + self.semantic_mlp(semantic_features)).squeeze(-1))
            gate_in.append(semantic_features)
        score = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        if self.term_control:
            if features is None:
                raise ValueError("the Term Control Layer needs the term features")
            gate = torch.sigmoid(self.gate(torch.cat(gate_in, dim=-1))).squeeze(-1)
            term = self.term_linear(features) + self.term_mlp(features)
            score = score + gate * term.squeeze(-1)
        return score


__all__ = ["TermControlReranker"]
