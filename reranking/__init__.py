"""The optional second stage: a small distilled re-ranker with a Term Control Layer.

- `features`: the term-matching signals of a (conversation, passage) pair (one definition,
  used by training and serving);
- `semantic`: the bi-encoder's similarity features (conversation views, candidate features);
- `passage_store`: the passage vectors the bi-encoder embedded, kept, saved and merged;
- `model`: `TermControlReranker`, the semantic part (bi-encoder features and/or a BERT
  cross-encoder) plus the Term Control Layer;
- `reranker`: `Reranker`, the serving object the client calls (load, score, export);
- `labels`: teacher ranking labels over the first stage's candidates, generated once;
- `config`: `RerankConfig`, the training recipe;
- `training`: listwise distillation from those labels (config, checkpoints, resume).
"""

from convsparse.reranking.reranker import Reranker, load_reranker

__all__ = ["Reranker", "load_reranker"]
