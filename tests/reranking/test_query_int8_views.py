"""The bi-encoder's int8 conversation graph: the views run it, passages never do, the vectors
stay close to float32's, and without the onnx package the float32 graph runs, said once."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from convsparse.reranking import load_reranker

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris is the capital and largest city of France."},
     {"role": "user", "content": "How many people live there?"}],
    [{"role": "user", "content": "how do I rotate the api key of my cloud object storage bucket"}],
]


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory):
    pytest.importorskip("onnx")
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def rerankers(int8_cache):
    fp32 = load_reranker("default", runtime="onnx", query_precision="fp32")
    int8 = load_reranker("default", runtime="onnx", query_precision="fp32")
    int8.semantic.use_query_int8(cache_dir=int8_cache)
    return fp32, int8


def test_the_views_run_the_int8_graph_and_stay_close(rerankers, int8_cache):
    fp32, int8 = rerankers
    assert fp32.semantic.query_session is None and int8.semantic.query_session is not None
    built = list((int8_cache / "onnx").glob("minilm-*-query-int8.onnx"))
    assert len(built) == 1
    for conversation in CONVERSATIONS:
        a, b = fp32.semantic.embed_views(conversation), int8.semantic.embed_views(conversation)
        assert a.shape == b.shape
        assert (a * b).sum(-1).min() > 0.98  # unit vectors: the cosine


def test_passages_keep_the_float32_graph(rerankers):
    fp32, int8 = rerankers
    texts = ["Paris is the capital of France.", "Rotate the key in the console."]
    assert np.array_equal(fp32.semantic._encode(texts), int8.semantic._encode(texts))


def test_the_built_graph_is_reused(rerankers, int8_cache):
    _, int8 = rerankers
    built = next((int8_cache / "onnx").glob("minilm-*-query-int8.onnx"))
    mtime = built.stat().st_mtime_ns
    again = load_reranker("default", runtime="onnx", query_precision="fp32")
    again.semantic.use_query_int8(cache_dir=int8_cache)
    assert again.semantic.query_session is not None and built.stat().st_mtime_ns == mtime


def test_without_onnx_the_views_run_float32_and_the_log_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnx", None)  # the core install: no onnx package
    monkeypatch.setattr("convsparse.encoders.query_graph._TOLD", set())  # said once a process
    rr = load_reranker("default", runtime="onnx", query_precision="fp32")
    with caplog.at_level(logging.INFO, logger="convsparse.encoders.query_graph"):
        rr.semantic.use_query_int8(cache_dir=tmp_path)
    assert rr.semantic.query_session is None
    assert "needs the onnx package" in caplog.text
