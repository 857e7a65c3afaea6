"""The int8 query graph: conversations run it, documents never do, and its term maps rank as
the float32 graph's do; where it cannot be had, conversations run float32 and say why."""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import pytest

from convsparse.encoders.export import METADATA_NAME
from convsparse.encoders.loading import PREBUILT_EXPORT, load_student
from convsparse.encoders.query_graph import QUERY_INT8, query_encoder

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris is the capital and largest city of France."},
     {"role": "user", "content": "How many people live there?"}],
    [{"role": "user", "content": "how do I rotate the api key of my cloud object storage bucket"}],
    [{"role": "user", "content": "What tax forms do I need for a home office deduction?"},
     {"role": "assistant", "content": "You need Form 8829 and Schedule C if self-employed."},
     {"role": "user", "content": "and if I rent?"}],
]


@pytest.fixture(scope="module")
def students():
    return load_student(None, runtime="onnx"), load_student(None, runtime="onnx", query_precision="fp32")


def test_the_default_student_encodes_conversations_with_the_shipped_int8_graph(students):
    int8, fp32 = students
    assert int8.query_precision == "int8" and fp32.query_precision == "fp32"
    assert int8.query_base.onnx_path.name == QUERY_INT8
    assert fp32.query_base is fp32.base
    assert int8.fingerprint == fp32.fingerprint  # same index: no re-index


def test_documents_never_run_the_int8_graph(students):
    int8, fp32 = students
    docs = ["Paris is the capital of France.", "Form 8829 computes the home office deduction."]
    a, b = int8.encode_documents(docs), fp32.encode_documents(docs)
    assert [dict(m) for m in a] == [dict(m) for m in b]


def _dense(term_map, vocabulary):
    index = {t: i for i, t in enumerate(vocabulary)}
    v = np.zeros(len(vocabulary), np.float32)
    for t, w in term_map.items():
        v[index[t]] = w
    return v


def test_int8_conversation_term_maps_stay_close_to_float32(students):
    int8, fp32 = students
    for conversation in CONVERSATIONS:
        q8 = _dense(int8.encode_conversation(conversation), int8.vocabulary)
        q32 = _dense(fp32.encode_conversation(conversation), fp32.vocabulary)
        cosine = q8 @ q32 / (np.linalg.norm(q8) * np.linalg.norm(q32))
        top8, top32 = set(np.argsort(-q8)[:10]), set(np.argsort(-q32)[:10])
        assert cosine > 0.98 and len(top8 & top32) >= 8, (conversation[-1], cosine)


def test_fp32_on_the_torch_runtime_and_unknown_precisions_refused(students):
    _, fp32 = students
    assert query_encoder(fp32.base, "fp32") is fp32.base
    with pytest.raises(ValueError, match="query_precision must be 'int8' or 'fp32'"):
        query_encoder(fp32.base, "int4")  # type: ignore[arg-type]


@pytest.fixture
def bare_export(tmp_path, students):
    """A copy of the shipped export without its query graph (an export from an older version)."""
    folder = tmp_path / "export"
    shutil.copytree(students[1].base.onnx_path.parent, folder,
                    ignore=shutil.ignore_patterns(QUERY_INT8))
    meta = (folder / METADATA_NAME).read_text(encoding="utf-8").replace('"query_int8"', '"old_key"')
    (folder / METADATA_NAME).write_text(meta, encoding="utf-8")
    return folder


def test_without_a_shipped_graph_one_is_built_once_into_the_cache(bare_export, tmp_path):
    pytest.importorskip("onnx")
    base = load_student(bare_export, runtime="onnx")
    cache = tmp_path / "cache"
    query = query_encoder(base, "int8", cache_dir=cache)
    assert query is not base and query.onnx_path.parent == cache / "onnx"
    assert query.onnx_path.name.endswith("-query-int8.onnx") and query.fingerprint == base.fingerprint
    built = query.onnx_path.stat().st_mtime_ns
    assert query_encoder(base, "int8", cache_dir=cache).onnx_path.stat().st_mtime_ns == built


def test_without_onnx_conversations_run_float32_and_the_log_says_why(bare_export, tmp_path,
                                                                      monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnx", None)  # the core install: no onnx package
    base = load_student(bare_export, runtime="onnx")
    with caplog.at_level(logging.INFO, logger="convsparse.encoders.query_graph"):
        assert query_encoder(base, "int8", cache_dir=tmp_path / "cache") is base
    assert "needs the onnx package" in caplog.text


def test_the_shipped_export_names_its_query_graph():
    from convsparse.encoders.base_models import base_model_dir
    from convsparse.encoders.onnx_runtime import read_export_metadata

    folder = base_model_dir("splade-tiny") / PREBUILT_EXPORT
    assert read_export_metadata(folder)["query_int8"] == QUERY_INT8
    assert (folder / QUERY_INT8).is_file()
