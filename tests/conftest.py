"""Shared fixtures: tiny local models (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# New indices store the re-ranker's passage vectors by default (a MiniLM pass per batch); the
# suite's indices do not unless a test asks (tests/integration/test_index_vectors.py does).
os.environ.setdefault("CONVSPARSE_RERANK_VECTORS", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny lexical BERT masked-LM with the real MiniLM WordPiece vocabulary."""
    # a test fixture, not part of the package: loaded from its file (tests/ is no package)
    spec = importlib.util.spec_from_file_location("tiny_masked_lm", Path(__file__).with_name("tiny_masked_lm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_masked_lm(tmp_path_factory.mktemp("tiny-mlm"))


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("rerank_cv")``: a script of benchmarks/ as a module (it is no package)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def tiny_student(tiny_model_dir):
    from convsparse.encoders.student import SpladeStudent

    return SpladeStudent.from_pretrained(tiny_model_dir, device="cpu")


# Feature names that need escaping (rank_features) or JSON escaping, and ids that need JSON escaping.
CSR_TOKENS = ["paris", "u.s", "100%", "a%2Eb", "..", '"quoted"', "back\\slash", "ünïcödé", "日本",
              "emoji😀", "new\nline", "tab\t", "ctl\x01", "\u2028", "[CLS]", "##ing", "/", "<>&'"]
CSR_IDS = ["plain", 'with "quotes"', "back\\slash", "ü-ñ", "line\nbreak", "\u2028sep", "😀", "ctl\x1f"]


@pytest.fixture
def random_csr_batch():
    """`make(seed, n)`: a random CSR `TermMapBatch` over CSR_TOKENS and filler tokens, the same
    term maps built one by one the old way (`TermMap.from_scores`), and their ids (the host
    stage's array paths are tested against the per-document ones with it)."""
    import numpy as np

    from convsparse.termmap import CsrRows, TermMap, TermMapBatch, Vocabulary

    def make(seed: int, n: int = 40):
        rng = np.random.default_rng(seed)
        vocab = Vocabulary(CSR_TOKENS + [f"tok{i}" for i in range(300)])
        counts = rng.integers(0, 60, n)
        counts[0] = 0  # an empty term map
        indices = np.concatenate([np.sort(rng.choice(len(vocab), c, replace=False)) for c in counts])
        # weights across float32's range (exponent forms in JSON), and subnormals, which
        # validation drops
        scale = rng.choice([1e-30, 1e-6, 1e-3, 1.0, 3.0, 1e20], len(indices))
        values = (rng.random(len(indices)) * scale).astype(np.float32)
        values[rng.random(len(values)) < 0.05] = 1e-45
        rows = CsrRows.from_counts(counts, indices.astype(np.int32), values)
        ids = [f"{CSR_IDS[i % len(CSR_IDS)]}#{i}" for i in range(n)]
        batch = TermMapBatch.from_csr(rows, vocab, "fp", ids)
        old = [TermMap.from_scores((vocab.tokens[j] for j in rows.indices[a:b]),
                                   rows.values[a:b].tolist(), record_id=ids[i])
               for i, (a, b) in enumerate(zip(rows.indptr[:-1], rows.indptr[1:]))]
        return batch, old, ids

    return make
