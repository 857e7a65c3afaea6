"""`convsparse mlcommons ...` and `convsparse index create --ingest mlcommons` on the fake
ML Commons cluster (issue 33): the whole sequence an OpenSearch user runs, and its one-line
errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from convsparse.cli import app


def _sibling(name: str):
    """A helper module of this folder, loaded once by its conftest.py (`_load`)."""
    import sys

    return sys.modules[f"convsparse_tests_opensearch_{name}"]


fake_mlcommons = _sibling("fake_mlcommons")
mlcommons_spec = _sibling("mlcommons_spec")


@pytest.fixture
def mlfake(spec_or_none, monkeypatch, tmp_path):
    ml_spec = mlcommons_spec.MLCommonsSpecValidator.load()
    with fake_mlcommons.FakeMLCommons(validator=spec_or_none, ml_validator=ml_spec) as server:
        monkeypatch.setenv("CONVSPARSE_OPENSEARCH_URL", server.url)
        monkeypatch.setenv("CONVSPARSE_OPENSEARCH_TIMEOUT_S", "60")
        monkeypatch.setenv("CONVSPARSE_DATA_DIR", str(tmp_path / "data"))
        yield server
        assert server.validation_errors == [], server.validation_errors


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_the_whole_sequence(mlfake, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "artifact"
    built = run("mlcommons", "build", "--out", str(out), "--target-libtorch", "1.13.1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert f"sha256 {manifest['sha256']}" in built and manifest["target_libtorch"] == "1.13.1"

    missing = run("mlcommons", "check-settings", code=1)
    assert "MISSING plugins.ml_commons.allow_registering_model_via_local_file" in missing
    assert "nothing was changed" in missing and mlfake.cluster_settings == {}
    failed = run("mlcommons", "register", str(out), code=1)
    assert failed.count("\n") == 1 and "allow_registering_model_via_local_file" in failed
    run("mlcommons", "check-settings", "--apply-settings")
    assert "0 setting" not in run("mlcommons", "check-settings")

    registered = run("mlcommons", "register", str(out))
    model_id = registered.split("registered model ")[1].split()[0]
    assert run("mlcommons", "deploy", model_id).strip() == f"deployed model {model_id}"
    predicted = json.loads(run("mlcommons", "predict", model_id, "-t", "renew a U.S. passport", "--top", "3"))
    assert len(predicted) == 1 and len(predicted[0]) == 3 and "passport" in predicted[0]

    created = run("mlcommons", "pipeline", "create", "--model-id", model_id,
                  "--prune-type", "max_ratio", "--prune-ratio", "0.1", "--two-phase", "cs-two-phase")
    pipeline = "convsparse-" + manifest["fingerprint"].split(":")[1][:12]
    assert f"created ingest pipeline {pipeline}" in created and "cs-two-phase" in created
    encode = mlfake.pipelines[pipeline]["processors"][1]["sparse_encoding"]
    assert (encode["model_id"], encode["prune_type"], encode["prune_ratio"]) == (model_id, "max_ratio", 0.1)

    run("index", "create", "kb", "--backend", "opensearch", "--ingest", "mlcommons", "--model-id", model_id,
        "--two-phase-pipeline", "cs-two-phase")
    meta = mlfake.indices["kb"]["mappings"]["_meta"]
    assert meta["ingest"] == {"mode": "mlcommons", "model_id": model_id, "pipeline": pipeline,
                              "artifact_sha256": manifest["sha256"], "two_phase_pipeline": "cs-two-phase"}
    assert meta["encoder_fingerprint"] == manifest["fingerprint"]
    assert mlfake.indices["kb"]["settings"]["default_pipeline"] == pipeline

    refused = run("mlcommons", "delete", model_id)  # undeploys first
    assert refused.strip() == f"deleted model {model_id}"


def test_index_create_checks_model_and_pipeline(mlfake, tmp_path):
    pytest.importorskip("torch")
    from convsparse.integration.backends.mlcommons import MLCommonsClient
    from convsparse.integration.backends.mlcommons_artifact import read_manifest
    from convsparse.integration.backends.opensearch import build_client
    from convsparse.settings import Settings

    manifest, zip_path = read_manifest(fake_mlcommons.built_artifact())
    ml = MLCommonsClient(build_client(Settings(opensearch_url=mlfake.url, opensearch_timeout_s=60)))
    ml.check_settings(apply=True)
    model = ml.register_chunked(manifest, zip_path, ml.ensure_model_group())
    base = ["index", "create", "kb", "--backend", "opensearch"]
    for args, message in [
        (["--ingest", "mlcommons"], "needs --model-id"),
        (["--ingest", "bulk", "--model-id", "x"], "--ingest must be 'mlcommons'"),
        (["--model-id", "x"], "go with --ingest mlcommons"),
        (["--ingest", "mlcommons", "--model-id", model.model_id], "does not exist; create it with"),
        (["--ingest", "mlcommons", "--model-id", model.model_id, "--fingerprint", "sha256:00"],
         "encodes with sha256:"),
        (["--ingest", "mlcommons", "--model-id", "nope"], "get model nope failed (404)"),
    ]:
        output = run(*base, *args, code=2 if "failed (404)" not in message else 1)
        assert message in output and output.count("\n") == 1, output
    assert "kb" not in mlfake.indices
    bad = run("mlcommons", "pipeline", "create", "--model-id", model.model_id, "--prune-type", "top_k",
              "--prune-ratio", "0.5", code=2)
    assert "prune_ratio for top_k must be an integer > 0" in bad
