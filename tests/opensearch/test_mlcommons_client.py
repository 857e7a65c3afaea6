"""`MLCommonsClient` against the fake ML Commons (issue 33): every body validated against the
patched closed spec, chunk numbering and size, deploy's hash re-check and node errors in one
line, predict at batch 1 with specials skipped, undeploy/delete, the settings check."""

from __future__ import annotations

import dataclasses
import json

import pytest

from convsparse.errors import BackendError
from convsparse.integration.backends.mlcommons import MLCommonsClient, node_error
from convsparse.integration.backends.mlcommons_artifact import CHUNK_SIZE, read_manifest
from convsparse.integration.backends.mlcommons_pipeline import (
    IngestPrune,
    ingest_pipeline_body,
    two_phase_pipeline_body,
)
from convsparse.integration.backends.opensearch import build_client
from convsparse.settings import Settings


def _sibling(name: str):
    """A helper module of this folder, loaded once by its conftest.py (`_load`)."""
    import sys

    return sys.modules[f"convsparse_tests_opensearch_{name}"]


fake_mlcommons = _sibling("fake_mlcommons")
mlcommons_spec = _sibling("mlcommons_spec")
READY = {"plugins.ml_commons.only_run_on_ml_node": "false",
         "plugins.ml_commons.allow_registering_model_via_local_file": "true",
         "plugins.ml_commons.allow_registering_model_via_url": "true",
         "plugins.ml_commons.native_memory_threshold": "99"}


@pytest.fixture(scope="session")
def ml_spec():
    validator = mlcommons_spec.MLCommonsSpecValidator.load()
    if validator is None:
        pytest.skip("OpenSearch API specification not found")
    return validator


@pytest.fixture
def mlfake(spec_or_none, ml_spec):
    with fake_mlcommons.FakeMLCommons(validator=spec_or_none, ml_validator=ml_spec) as server:
        yield server
        assert server.validation_errors == [], server.validation_errors


@pytest.fixture
def ml(mlfake):
    client = build_client(Settings(opensearch_url=mlfake.url, opensearch_timeout_s=30))
    sleeps: list[float] = []
    ml = MLCommonsClient(client, sleep=sleeps.append)
    ml.sleeps = sleeps
    return ml


@pytest.fixture(scope="module")
def artifact():
    torch = pytest.importorskip("torch")
    del torch
    return read_manifest(fake_mlcommons.built_artifact())


# ---------------------------------------------------------------------- bodies vs the spec
def test_every_body_validates_against_the_patched_spec(ml_spec, artifact):
    manifest, _ = artifact
    ml = MLCommonsClient.__new__(MLCommonsClient)
    meta = ml.register_meta_body(manifest, "group-1")
    assert "model_config" not in meta and meta["function_name"] == "SPARSE_ENCODING"
    assert meta["model_format"] == "TORCH_SCRIPT" and meta["total_chunks"] == manifest.total_chunks
    assert meta["model_content_hash_value"] == manifest.sha256
    ml_spec.validate_body("register_meta", meta)
    ml_spec.validate_body("register_url", ml.register_url_body(manifest, "group-1", "https://h/m.zip"))
    ml_spec.validate_body("ingest_pipeline", ingest_pipeline_body("m1", manifest.fingerprint))
    ml_spec.validate_body("ingest_pipeline", ingest_pipeline_body(
        "m1", manifest.fingerprint, batch_size=8, prune=IngestPrune("top_k", 40), skip_existing=True))
    ml_spec.validate_body("search_pipeline", two_phase_pipeline_body())


def test_the_spec_needs_the_local_patches(spec, artifact):
    """Without the patches the spec refuses what the server takes (so the patches are needed,
    and each says why in mlcommons_spec.py)."""
    manifest, _ = artifact
    ml = MLCommonsClient.__new__(MLCommonsClient)
    assert spec.errors(mlcommons_spec.REGISTER_META, ml.register_meta_body(manifest, "g"))  # model_config
    pipeline = ingest_pipeline_body("m", "fp", prune=IngestPrune("max_ratio", 0.1))
    closed = mlcommons_spec.MLCommonsSpecValidator.load()
    assert closed.errors(mlcommons_spec.PUT_PIPELINE, {**pipeline, "_meta": {"a": 1}})  # server refuses
    assert closed.errors(mlcommons_spec.PUT_PIPELINE, {**pipeline, "processors": [
        {"sparse_encoding": {"model_id": "m", "field_map": {"a": "b"}, "prune_typ": "top_k"}}]})


def test_pipeline_body_has_no_meta_and_builds_the_document_text():
    body = ingest_pipeline_body("model-9", "sha256:0123456789abcdef", batch_size=4)
    assert "_meta" not in body and "sha256:0123456789abcdef" in body["description"]
    kinds = [next(iter(p)) for p in body["processors"]]
    assert kinds == ["script", "sparse_encoding", "remove"]
    encode = body["processors"][1]["sparse_encoding"]
    assert encode["field_map"] == {"cs_doc_text": "terms"} and encode["batch_size"] == 4
    assert body["processors"][2]["remove"]["field"] == "cs_doc_text"
    for bad in [("top_k", 0.5), ("max_ratio", 1.0), ("abs_value", -1), ("nope", 1)]:
        with pytest.raises(ValueError):
            IngestPrune(*bad)


def test_java_trim_is_not_python_strip():
    assert fake_mlcommons.java_trim("\u2003 Title \t") == "\u2003 Title"
    assert fake_mlcommons.java_trim(" \t\n") == ""


# ---------------------------------------------------------------------- settings
def test_check_settings_names_each_missing_setting_and_changes_nothing(ml, mlfake):
    checks = ml.check_settings()
    missing = {c.name for c in checks if not c.ok}
    assert missing == {"plugins.ml_commons.only_run_on_ml_node",
                       "plugins.ml_commons.allow_registering_model_via_local_file",
                       "plugins.ml_commons.native_memory_threshold"}
    assert not [p for m, p, _ in mlfake.requests if m == "PUT"] and mlfake.cluster_settings == {}
    url = {c.name for c in ml.check_settings("url") if not c.ok}
    assert "plugins.ml_commons.allow_registering_model_via_url" in url
    ml.check_settings(apply=True)
    assert all(c.ok for c in ml.check_settings())
    assert mlfake.cluster_settings["plugins.ml_commons.only_run_on_ml_node"] == "false"


# ---------------------------------------------------------------------- the model lifecycle
def test_model_group_is_searched_first(ml, mlfake):
    gid = ml.ensure_model_group("convsparse")
    assert ml.ensure_model_group("convsparse") == gid
    registers = [p for p in mlfake.paths("POST") if p.endswith("model_groups/_register")]
    assert len(registers) == 1
    with pytest.raises(BackendError, match=f"already being used by a model group with ID: {gid}"):
        ml._call("register model group", ml.ml.register_model_group, body={"name": "convsparse"})


def test_register_refused_without_the_setting(ml, artifact):
    manifest, zip_path = artifact
    gid = ml.ensure_model_group()
    with pytest.raises(BackendError, match="register model meta failed .*allow_registering_model_via_local_file"):
        ml.register_chunked(manifest, zip_path, gid)


def test_chunked_register_deploy_predict_undeploy_delete(ml, mlfake, artifact):
    manifest, zip_path = artifact
    mlfake.cluster_settings.update(READY)
    gid = ml.ensure_model_group()
    model = ml.register_chunked(manifest, zip_path, gid)
    stored = mlfake.models[model.model_id]
    assert stored["state"] == "REGISTERED"
    sizes = [(n, size) for mid, n, size in mlfake.chunk_sizes if mid == model.model_id]
    assert [n for n, _ in sizes] == [0, 1] and sizes[0][1] == CHUNK_SIZE
    assert b"".join(stored["chunks"][i] for i in range(2)) == zip_path.read_bytes()  # raw bytes

    task = ml.deploy(model.model_id)
    assert task["state"] == "COMPLETED" and ml.sleeps  # it polled through RUNNING
    assert mlfake.models[model.model_id]["state"] == "DEPLOYED"

    student = fake_mlcommons.shipped_student()
    texts = ["How do I renew my U.S. passport?", "visa"]
    predicted = ml.predict(model.model_id, texts)
    assert mlfake.deployed[model.model_id].forwards == [1, 1]  # one document per forward
    for text, got in zip(texts, predicted, strict=True):
        want = {t: w for t, w in student.encode_documents([text])[0].items()
                if t not in student.tokenizer.all_special_tokens}
        assert set(got) == set(want) and max(abs(got[t] - want[t]) for t in want) < 1e-5

    with pytest.raises(BackendError, match="cannot be deleted in deploying or deployed state"):
        ml.delete(model.model_id, undeploy_first=False)
    ml.delete(model.model_id)  # undeploys first
    assert model.model_id not in mlfake.models
    assert any(p.endswith(f"{model.model_id}/_undeploy") for p in mlfake.paths("POST"))


def test_deploy_rehashes_the_chunks_and_reports_the_node_error_in_one_line(ml, mlfake, artifact):
    manifest, zip_path = artifact
    mlfake.cluster_settings.update(READY)
    gid = ml.ensure_model_group()
    wrong = dataclasses.replace(manifest, sha256="0" * 64)
    model = ml.register_chunked(wrong, zip_path, gid)
    with pytest.raises(BackendError) as err:
        ml.deploy(model.model_id)
    message = str(err.value)
    assert "\n" not in message
    assert "deploy task" in message and "failed for model " + model.model_id in message
    assert "node fake-node-1: model content changed" in message


def test_deploy_without_ml_nodes_names_the_setting(ml, mlfake, artifact):
    manifest, zip_path = artifact
    mlfake.cluster_settings.update(READY)
    gid = ml.ensure_model_group()
    model = ml.register_chunked(manifest, zip_path, gid)
    mlfake.cluster_settings["plugins.ml_commons.only_run_on_ml_node"] = "true"
    with pytest.raises(BackendError, match="deploy model .* No eligible node found"):
        ml.deploy(model.model_id)


def test_register_by_url(ml, mlfake, artifact):
    manifest, zip_path = artifact
    mlfake.cluster_settings.update(READY)
    gid = ml.ensure_model_group()
    model = ml.register_url(manifest, f"file://{zip_path}", gid)
    assert mlfake.models[model.model_id]["state"] == "REGISTERED"
    ml.deploy(model.model_id)
    bad = dataclasses.replace(manifest, sha256="f" * 64)
    with pytest.raises(BackendError, match="register task .* failed.*model content changed"):
        ml.register_url(bad, f"file://{zip_path}", gid)


def test_deploy_timeout_says_where_to_look(ml, mlfake, artifact):
    manifest, zip_path = artifact
    mlfake.cluster_settings.update(READY)
    mlfake.polls_until_done = 10**6
    clock = iter(range(0, 10**6, 100))
    ml._clock = lambda: next(clock)
    model = ml.register_chunked(manifest, zip_path, ml.ensure_model_group())
    with pytest.raises(BackendError, match=r"still RUNNING after 250 s; check it with GET /_plugins/_ml/tasks/"):
        ml.deploy(model.model_id, timeout_s=250)


def test_node_error_is_one_line():
    raw = json.dumps({"n1": "java.lang.ClassCastException: a\n\tat b", "n2": "boom"})
    assert node_error(raw) == "node n1: java.lang.ClassCastException: a at b; node n2: boom"
    assert node_error("plain\ntext") == "plain text"
