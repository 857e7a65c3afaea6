"""Term-matching features of one candidate list: what the Term Control Layer reads.

All of them come from what a chat app already has after the first stage (the conversation's
term map, the hits' first-stage scores, the passages' text), so serving needs no document
term maps from the engine (OpenSearch does not return them):

0. first-stage score, standardised over the candidate list (z-score);
1. first-stage score over the list's best score;
2. log(1 + first-stage score);
3. exact weighted overlap: the share of the conversation term map's mass whose terms occur
   verbatim (as word pieces) in the passage;
4. current-question coverage: the share of the current question's word pieces (3+ characters)
   found in the passage;
5. 1 / log2(rank + 1), the first stage's rank.

Scores are sparse dot products, so 0-2 carry the sparse-term overlap; 3-4 carry exact
matching, which SPLADE's expansion blurs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

N_FEATURES = 6


def _content_ids(tokenizer, text: str) -> set[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    toks = tokenizer.convert_ids_to_tokens(ids)
    return {i for i, t in zip(ids, toks) if len(t.removeprefix("##")) >= 3}


def term_features(
    tokenizer, query: Mapping[str, float], current_question: str,
    passage_ids: Sequence[Sequence[int]], first_stage: Sequence[float],
) -> np.ndarray:
    """(n_candidates, N_FEATURES) float32 features of one candidate list, in list order.

    `query`: the conversation's term map (token -> weight); `passage_ids`: each passage's word
    piece ids (the whole passage, not the cross-encoder's truncated view)."""
    n = len(first_stage)
    out = np.zeros((n, N_FEATURES), np.float32)
    if n == 0:
        return out
    s = np.asarray(first_stage, np.float64)
    out[:, 0] = (s - s.mean()) / (s.std() + 1e-6)
    out[:, 1] = s / (s.max() if s.max() > 0 else 1.0)
    out[:, 2] = np.log1p(np.maximum(s, 0.0))
    q_ids = tokenizer.convert_tokens_to_ids(list(query))
    q_w = np.asarray(list(query.values()), np.float64)
    total = q_w.sum() or 1.0
    current = _content_ids(tokenizer, current_question)
    for i, ids in enumerate(passage_ids):
        present = set(ids)
        out[i, 3] = sum(w for t, w in zip(q_ids, q_w) if t in present) / total
        out[i, 4] = len(current & present) / len(current) if current else 0.0
    out[:, 5] = 1.0 / np.log2(np.arange(n) + 2.0)
    return out


__all__ = ["N_FEATURES", "term_features"]
