"""Training checkpoints, one way for every loop that resumes (the student's `Trainer`, the
re-ranker's `train_reranker`): `save_checkpoint` writes atomically, so a run killed while writing
resumes from the previous checkpoint instead of a truncated file, and `load_checkpoint` reads
with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from convsparse.encoders.onnx_session import temporary_sibling


def save_checkpoint(state: Any, path: str | Path) -> Path:
    """`torch.save` of `state` (tensors and plain values only, so that `load_checkpoint` can
    read it) to `path` atomically: written beside it, then renamed over it."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, device) -> dict:
    """A checkpoint from `<output_dir>/checkpoint/`, loaded with ``weights_only=True``: only
    tensors, dicts, lists, tuples, strings, numbers, booleans and None are accepted (the types
    `save_checkpoint` is given), so a pickle planted in the output folder cannot run code."""
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: refused to load a checkpoint holding objects other than tensors and plain "
            f"values ({str(e).splitlines()[0]}); it was not written by this version of "
            "convsparse or was tampered with: delete it, or set resume: false"
        ) from None


__all__ = ["load_checkpoint", "save_checkpoint"]
