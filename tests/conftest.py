"""Shared fixtures: tiny local models (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny lexical BERT masked-LM with the real MiniLM WordPiece vocabulary."""
    from convsparse.encoders.tiny import build_tiny_masked_lm

    return build_tiny_masked_lm(tmp_path_factory.mktemp("tiny-mlm"))


@pytest.fixture(scope="session")
def tiny_student(tiny_model_dir):
    from convsparse.encoders.student import SpladeStudent

    return SpladeStudent.from_pretrained(tiny_model_dir, device="cpu")
