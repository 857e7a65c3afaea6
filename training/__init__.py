"""Distillation of the conversational student, one concept per module:

- `config`: `DistillConfig` (YAML/JSON);
- `data`: corpus, conversation tasks, held-out split (read through `convsparse.benchmark_collections`);
- `teachers/`: one file per teacher and the `TEACHERS` registry;
- `fusion`: averaging z-normalised teacher runs;
- `candidates`: sampling candidates per turn and the typed `CandidateBatch`;
- `losses/`: one file per loss (formula and paper in each docstring);
- `trainer`: `Trainer` (both stages) and `distill(config)`.
"""

from __future__ import annotations

from convsparse._lazy import lazy_exports

__all__ = ["CandidateBatch", "DistillConfig", "DistillResult", "TEACHERS", "Trainer", "distill"]

_LAZY = {
    "CandidateBatch": "convsparse.training.candidates",
    "DistillConfig": "convsparse.training.config",
    "DistillResult": "convsparse.training.trainer",
    "TEACHERS": "convsparse.training.teachers",
    "Trainer": "convsparse.training.trainer",
    "distill": "convsparse.training.trainer",
}

__getattr__, __dir__ = lazy_exports("convsparse.training", _LAZY, globals())
