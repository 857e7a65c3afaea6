"""`AnchoredGate`: the anchored student's gate as a trainable PyTorch module (training and
its tests); serving runs the same formula in numpy (`anchored.GateWeights`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convsparse.encoders.anchored import (
    ANSWER_WORDS,
    GATE_FILE,
    VIEWS,
    GateWeights,
    check_gate_dict,
    read_gate_file,
)


class AnchoredGate(nn.Module):
    """q = cur + sum_v softplus(alpha_v) * sigmoid(phi . theta_v + b_v) * view_v, per term.

    Works on dense (batch, vocab) tensors: `current` and `views` (batch, n_views, vocab)."""

    n_features = len(VIEWS) + 3  # cur, each view, has-in-current, constant

    def __init__(self, initial_weight: float = 0.15):
        super().__init__()
        n = len(VIEWS)
        self.theta = nn.Parameter(torch.zeros(n, self.n_features))
        self.bias = nn.Parameter(torch.zeros(n))
        # sigmoid(0) = 0.5, so each view starts at initial_weight / n overall
        start = float(np.log(np.expm1(2 * initial_weight / n)))
        self.alpha = nn.Parameter(torch.full((n,), start))

    def features(self, current: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(current)
        return torch.stack([current, *views.unbind(1), (current > 0).to(current.dtype), ones], -1)

    def forward(self, current: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        phi = self.features(current, views)                          # (B, V, F)
        gate = torch.sigmoid(phi @ self.theta.T + self.bias)         # (B, V, n)
        weight = nn.functional.softplus(self.alpha)                   # (n,)
        return current + (gate * weight * views.permute(0, 2, 1)).sum(-1)

    def to_dict(self, base: str = "splade-tiny") -> dict:
        return {"format": 1, "base": base, "views": list(VIEWS), "answer_words": ANSWER_WORDS,
                "theta": self.theta.detach().tolist(), "bias": self.bias.detach().tolist(),
                "alpha": self.alpha.detach().tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> AnchoredGate:
        check_gate_dict(d)
        gate = cls()
        with torch.no_grad():
            gate.theta.copy_(torch.tensor(d["theta"]))
            gate.bias.copy_(torch.tensor(d["bias"]))
            gate.alpha.copy_(torch.tensor(d["alpha"]))
        return gate

    def weights(self) -> GateWeights:
        """The numpy form serving runs."""
        return GateWeights.from_dict(self.to_dict())

    def save(self, folder: str | Path, *, base: str = "splade-tiny") -> Path:
        """Write `anchored.json`; `base` is a base-model name or a path relative to `folder`."""
        path = Path(folder) / GATE_FILE
        path.write_text(json.dumps(self.to_dict(base), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> tuple[AnchoredGate, str]:
        """(gate, base reference) from a folder's `anchored.json`."""
        d = read_gate_file(folder)
        return cls.from_dict(d), str(d.get("base") or "splade-tiny")


__all__ = ["AnchoredGate"]
