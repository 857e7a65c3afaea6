"""`DistillConfig`: everything a distillation run needs (YAML or JSON; unknown keys are
errors, relative paths are resolved against the file's folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


def _read_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level")
    return raw


def _validate(cls, raw: dict, path: str | Path):
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                 for err in e.errors()]
        raise ValueError(f"invalid distillation config {path}:\n" + "\n".join(lines)) from None


class ConversationSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    limit: int | None = Field(None, ge=1, description="use at most this many tasks (first ones)")
    train_only: bool = Field(False, description="never held out (e.g. CAsT: no local qrels)")
    weight: float = Field(1.0, gt=0, description="sampling weight of this source's tasks in "
                          "stage-2 batches (e.g. 0.5 for `convsparse augment` variants)")


class DistillConfig(BaseModel):
    """Everything a distillation run needs; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    student: str | None = Field(None, description="masked-LM folder; None = the base student")
    corpus: Path = Field(description="JSONL {id, text}")
    conversations: list[ConversationSource] = Field(min_length=1)
    qrels: Path | None = None
    holdout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    teachers: list[str] = Field(default_factory=lambda: ["bm25", "dense"], min_length=1,
                                description="names from convsparse.training.teachers.TEACHERS")
    teacher_weights: list[float] | None = None
    teacher_runs_dir: Path | None = Field(None, description="cache of TREC teacher runs; "
                                          "default <output_dir>/teacher_runs")
    teacher_depth: int = Field(1000, ge=10)
    n_negatives: int = Field(16, ge=1)
    rank_window: tuple[int, int] = (10, 960)
    in_batch_negatives: bool = True
    steps: int = Field(300, ge=0)
    doc_stage_steps: int = Field(0, ge=0)
    doc_stage_negatives: int = Field(3, ge=1)
    doc_stage_batch_size: int = Field(4, ge=1)
    freeze_documents: bool = True
    freeze_embeddings: bool = Field(True, description="keep the word embeddings (tied to the MLM "
                                    "decoder) fixed in stage 2: the vocabulary geometry stays "
                                    "shared with the frozen document side, and CPU steps are cheaper")
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    max_length: int = Field(128, ge=8)
    infonce_weight: float = Field(0.1, ge=0.0, le=1.0)
    kl_temperature: float = Field(1.0, gt=0)
    infonce_temperature: float = Field(0.08, gt=0)
    lambda_q: float = Field(0.0, ge=0)
    lambda_d: float = Field(0.0, ge=0)
    warmup_steps: int = Field(50, ge=0, description="quadratic warm-up of lambda_q / lambda_d")
    checkpoint_every: int = Field(100, ge=1)
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    progress: bool = True

    @field_validator("teachers")
    @classmethod
    def _known_teachers(cls, names: list[str]) -> list[str]:
        from convsparse.training.teachers import TEACHERS

        unknown = [n for n in names if n not in TEACHERS]
        if unknown:
            raise ValueError(f"unknown teacher(s) {unknown}; known: {sorted(TEACHERS)}")
        return names

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        lo, hi = self.rank_window
        if not 1 <= lo < hi:
            raise ValueError(f"rank_window must be (lo, hi) with 1 <= lo < hi, got {self.rank_window}")
        if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teachers):
            raise ValueError(
                f"teacher_weights has {len(self.teacher_weights)} values for "
                f"{len(self.teachers)} teachers {self.teachers}; give one weight per teacher")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> DistillConfig:
        """Read YAML (.yaml/.yml) or JSON; relative paths are resolved against the file's folder.
        Raises ValueError with every problem listed."""
        cfg = _validate(cls, _read_mapping(path), path)
        return cfg.resolve_paths(Path(path).parent)

    def resolve_paths(self, base: Path) -> DistillConfig:
        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base / p)

        data = self.model_copy(deep=True)
        data.output_dir = fix(data.output_dir)
        data.corpus = fix(data.corpus)
        data.qrels = fix(data.qrels)
        data.teacher_runs_dir = fix(data.teacher_runs_dir)
        for src in data.conversations:
            src.path = fix(src.path)
        if data.student and not Path(data.student).is_absolute() and (base / data.student).exists():
            data.student = str(base / data.student)
        return data


class SplitConfig(BaseModel):
    """What every recipe trained on one collection shares: the collection, the teacher text,
    the base, and the split by conversation (held-out conversations are never read beyond
    excluding them; validation conversations pick the epoch). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    collection: Path = Field(description="folder with corpus.jsonl, conversations.jsonl, qrels.tsv")
    base: str = Field("splade-tiny", description="base-model name or masked-LM folder")
    teacher: Literal["search_queries", "rewrite"] = Field(
        "search_queries", description="the base reading this text is the teacher; "
        "search_queries falls back to the rewrite where a turn has none")
    heldout_source: str = Field("mtrag", description="tasks of this `source` are split by "
                                "conversation; others (MTRAG-UN) only train")
    holdout_per_domain: int = Field(4, ge=0, description="conversations per domain never seen")
    holdout_seed: int = 13
    validation_conversations: int = Field(8, ge=1, description="held-in conversations that "
                                          "pick the epoch")
    validation_seed: int = 7
    extra_conversations: list[ConversationSource] = Field(
        default_factory=list, description="more training turns (e.g. TREC CAsT); always train")
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | None = None):
        """The config in `path`, with `overrides` (e.g. the command line's; their relative paths
        are the caller's to resolve) replacing or supplying keys before validation."""
        raw = {**_read_mapping(path), **(overrides or {})}
        return _validate(cls, raw, path).resolve_paths(Path(path).parent)

    def resolve_paths(self, base: Path):
        data = self.model_copy(deep=True)
        data.output_dir = data.output_dir if data.output_dir.is_absolute() else base / data.output_dir
        data.collection = data.collection if data.collection.is_absolute() else base / data.collection
        if not Path(data.base).is_absolute() and (base / data.base).exists():
            data.base = str(base / data.base)
        for src in data.extra_conversations:
            src.path = src.path if src.path.is_absolute() else base / src.path
        return data


class AnchoredConfig(SplitConfig):
    """The anchored student's recipe (`recipe: anchored`): distil the expansion gate over a
    frozen base (`convsparse.training.anchored`). Unknown keys are errors."""

    recipe: Literal["anchored"] = "anchored"
    n_candidates: int = Field(100, ge=2)
    kl_weight: float = Field(1.0, ge=0)
    kl_temperature: float = Field(1.0, gt=0)
    infonce_weight: float = Field(0.1, ge=0)
    infonce_temperature: float = Field(1.0, gt=0, description="scores are raw dot products")
    term_weight: float = Field(0.0, ge=0)
    flops_weight: float = Field(0.0, ge=0)
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.03, gt=0)
    initial_weight: float = Field(0.15, gt=0, description="history weight before training")


def load_config(path: str | Path) -> DistillConfig | AnchoredConfig:
    """A distillation config of either recipe: ``recipe: anchored`` (`AnchoredConfig`) or
    the full-model recipe (`DistillConfig`, the default)."""
    raw = _read_mapping(path)
    if raw.get("recipe") == "anchored":
        return AnchoredConfig.from_file(path)
    if raw.get("recipe", "full") != "full":
        raise ValueError(f"{path}: recipe must be 'anchored' or 'full', got {raw['recipe']!r}")
    raw.pop("recipe", None)
    return _validate(DistillConfig, raw, path).resolve_paths(Path(path).parent)


__all__ = ["AnchoredConfig", "ConversationSource", "DistillConfig", "SplitConfig",
           "load_config"]
