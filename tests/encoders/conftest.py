"""Fixtures of the encoder tests: an isolated cache folder, a tiny DistilBERT, ONNX students."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def encoders_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("convsparse-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(encoders_cache_dir, monkeypatch):
    """Exports and the base student go to a temporary cache, never the user's."""
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(encoders_cache_dir))


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory):
    """A tiny, randomly initialised DistilBertForMaskedLM with the MiniLM WordPiece vocabulary."""
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertForMaskedLM

    from convsparse.encoders.base_models import minilm_wheel_dir

    out = tmp_path_factory.mktemp("tiny-distilbert")
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_wheel_dir()))
    torch.manual_seed(1)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, hidden_dim=64, n_layers=2,
                              n_heads=2, max_position_embeddings=128)
    model = DistilBertForMaskedLM(config)
    with torch.no_grad():
        model.vocab_projector.bias.fill_(-1.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_onnx_student(tiny_student, encoders_cache_dir):
    from convsparse.encoders.onnx_runtime import OnnxStudent

    return OnnxStudent.from_torch(tiny_student, device="cpu", cache_dir=encoders_cache_dir)
