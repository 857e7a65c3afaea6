"""`RerankConfig`: the re-ranker's training recipe (YAML or JSON; unknown keys are errors, relative
paths are resolved against the file's folder), on the split every recipe trained on one
collection shares (`convsparse.training.config.SplitConfig`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from convsparse.training.config import SplitConfig


class RerankConfig(SplitConfig):
    """The re-ranker's recipe (`convsparse.reranking.training`): listwise distillation of the
    teacher's scores over the first stage's candidates. Unknown keys are errors."""

    first_stage: str | None = Field(None, description="the student that retrieves the "
                                    "candidates (None = the shipped default)")
    term_control: bool = Field(True, description="add the Term Control Layer")
    cross_encoder: bool = Field(False, description="read (conversation, passage) pairs with the "
                                "base's BERT body (off: slower and measured no better; see "
                                "docs/design/decisions.md)")
    semantic: str | None = Field("minilm", description="sentence-transformers bi-encoder for "
                                 "the semantic features (folder or hub id; minilm = the "
                                 "shipped all-MiniLM-L6-v2; null = none)")
    semantic_views: int = Field(3, ge=1, le=3, description="views pooled from the one pass "
                                "over the user turns (newest first): the current question, + "
                                "the two newest questions, + all of them")
    semantic_view_length: int = Field(128, ge=8, description="word pieces that pass reads")
    semantic_window: int | None = Field(128, ge=8, description="word pieces per passage "
                                        "window: the best window's cosine joins the whole "
                                        "passage's (the bi-encoder reads 256 pieces of a "
                                        "passage; benchmarks/results/rerank_cv.md); null = "
                                        "whole passages only")
    semantic_stride: int | None = Field(None, ge=1, description="word pieces between window "
                                        "starts (None = 3/4 of the window)")
    depth: int = Field(20, ge=2, description="first-stage candidates per training turn")
    kl_temperature: float = Field(2.0, gt=0, description="of the teacher's score softmax (2.0 "
                                  "with label_weight 1.0, chosen by 5-fold cross-validation on "
                                  "the dev conversations: docs/design/decisions.md, re-checked "
                                  "in benchmarks/results/rerank_cv_hyperparameters.md)")
    label_weight: float = Field(1.0, ge=0, description="weight of the judged positives' "
                                "listwise cross-entropy next to the KL")
    epochs: int = Field(30, ge=1, description="the heads alone train in seconds an epoch; "
                        "with the cross-encoder, 3-4 (it overfits after)")
    validation: Literal["train", "pick_epoch"] = Field(
        "train", description="train: the validation turns train too and the last epoch is "
        "kept (the fixed-epoch recipe the cross-validation measured; the validation turns "
        "told the epochs apart only by noise, see docs/design/decisions.md); pick_epoch: they "
        "only pick the epoch by MRR@10")
    batch_turns: int = Field(8, ge=1, description="turns per step (each with `depth` pairs)")
    learning_rate: float = Field(1e-4, gt=0, description="of the encoder")
    head_learning_rate: float = Field(3e-3, gt=0, description="of the heads")
    max_length: int = Field(128, ge=16)
    query_length: int = Field(48, ge=8)
    threads: int | None = Field(None, ge=1)
    resume: bool = True


__all__ = ["RerankConfig"]
