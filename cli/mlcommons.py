"""`convsparse mlcommons build | register | deploy | predict | pipeline create | undeploy |
delete | check-settings`: the document encoder inside OpenSearch (ML Commons).

The walk-through is docs/guides/opensearch-ml-commons.md. Every command but `build` talks to
`CONVSPARSE_OPENSEARCH_URL` (with the same auth and TLS settings as the backend).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from convsparse.cli.options import Model, settings_from
from convsparse.errors import UsageError

ArtifactDir = typer.Argument(..., help="Folder written by `convsparse mlcommons build`.")
ModelId = typer.Argument(..., help="ML Commons model id (printed by `register`).")


def _ml_client():
    from convsparse.integration.backends.mlcommons import MLCommonsClient
    from convsparse.integration.backends.opensearch import build_client

    return MLCommonsClient(build_client(settings_from(backend="opensearch")))


def build(
    out: Path = typer.Option(..., "--out", help="Folder for the zip and manifest.json."),
    target_libtorch: str = typer.Option(
        "2.5.1", "--target-libtorch",
        help="libtorch of the cluster's ML Commons: 2.5.1 (OpenSearch 3.x) or 1.13.1 (2.x); recorded."),
    model: Model = None,
) -> None:
    """Trace the document encoder (the student's base) into an ML Commons TorchScript zip."""
    from convsparse.encoders.torchscript_export import build_artifact

    manifest = build_artifact(settings_from(model=model).model, out, target_libtorch=target_libtorch)
    typer.echo(f"built {out / manifest.zip_name} ({manifest.size:,} bytes, "
               f"{manifest.total_chunks} chunks, sha256 {manifest.sha256}, encoder {manifest.fingerprint})")


def register_model(
    artifact: Path = ArtifactDir,
    group: str = typer.Option("convsparse", "--group", help="Model group (found or created)."),
    url: str | None = typer.Option(
        None, "--url", help="Register from this URL (the cluster downloads the zip) instead of "
                            "uploading it in chunks."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait for a URL registration."),
) -> None:
    """Register the built zip (chunked upload, or --url); prints the model id."""
    from convsparse.integration.backends.mlcommons_artifact import read_manifest

    manifest, zip_path = read_manifest(artifact)
    ml = _ml_client()
    group_id = ml.ensure_model_group(group)
    if url:
        model = ml.register_url(manifest, url, group_id, timeout_s=timeout)
    else:
        model = ml.register_chunked(manifest, zip_path, group_id, progress=True)
    typer.echo(f"registered model {model.model_id} ({model.name}, group {group} {group_id}, "
               f"encoder {manifest.fingerprint})")


def deploy(model_id: str = ModelId,
           timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait.")) -> None:
    """Deploy a registered model and wait for its task (node errors in one line)."""
    _ml_client().deploy(model_id, timeout_s=timeout)
    typer.echo(f"deployed model {model_id}")


def predict(model_id: str = ModelId,
            text: list[str] = typer.Option(..., "-t", "--text", help="Text to encode (repeatable)."),
            top: int = typer.Option(10, "--top", min=1, help="Terms shown per text.")) -> None:
    """Encode texts with the deployed model (a smoke test); prints the top terms as JSON."""
    maps = _ml_client().predict(model_id, text)
    shown = [dict(sorted(m.items(), key=lambda kv: -kv[1])[:top]) for m in maps]
    typer.echo(json.dumps(shown, indent=2))


def pipeline_create(
    model_id: str = typer.Option(..., "--model-id", help="The deployed document encoder."),
    name: str | None = typer.Option(None, "--name", help="Pipeline id (default convsparse-<fp12>)."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1,
                                          help="Processor batch_size (OpenSearch 2.16+)."),
    prune_type: str | None = typer.Option(None, "--prune-type",
                                          help="top_k, max_ratio, alpha_mass or abs_value (2.19+)."),
    prune_ratio: float | None = typer.Option(None, "--prune-ratio", help="The prune type's parameter."),
    two_phase: str | None = typer.Option(
        None, "--two-phase", help="Also create this neural_sparse_two_phase_processor search "
                                  "pipeline (2.15+); then search without rescore_window."),
) -> None:
    """Create the ingest pipeline: script ("<title>\\n<text>") -> sparse_encoding -> remove."""
    from convsparse.integration.backends.mlcommons_pipeline import IngestPrune, default_pipeline_id

    if (prune_type is None) != (prune_ratio is None):
        raise UsageError("--prune-type and --prune-ratio go together")
    try:
        prune = IngestPrune(prune_type, prune_ratio) if prune_type is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ml = _ml_client()
    fingerprint = _model_fingerprint(ml.get_model(model_id), model_id)
    pipeline_id = name or default_pipeline_id(fingerprint)
    ml.put_ingest_pipeline(pipeline_id, model_id, fingerprint, batch_size=batch_size, prune=prune)
    typer.echo(f"created ingest pipeline {pipeline_id} (model {model_id}, encoder {fingerprint})")
    if two_phase:
        ml.put_two_phase_pipeline(two_phase)
        typer.echo(f"created search pipeline {two_phase} (neural_sparse_two_phase_processor)")


def _model_fingerprint(model: dict, model_id: str) -> str:
    """The encoder fingerprint `register` wrote into the model's description."""
    import re

    found = re.search(r"fingerprint (sha256:[0-9a-f]+)", str(model.get("description", "")))
    if not found:
        raise UsageError(f"model {model_id} was not registered by convsparse (its description "
                         "names no encoder fingerprint); register it with `convsparse mlcommons register`")
    return found.group(1)


def index_ingest_options(settings, ingest: str | None, model_id: str | None,
                         pipeline: str | None, two_phase_pipeline: str | None,
                         fingerprint: str | None) -> dict:
    """`index create`'s `--ingest mlcommons` options as `create_index` keywords (`ingest`, and
    the model's `fingerprint`): the model must be convsparse's, of the given fingerprint, and
    the pipeline must exist and encode with that model."""
    from convsparse.integration.backends.mlcommons import MLCommonsClient
    from convsparse.integration.backends.mlcommons_pipeline import (
        INGEST_MODE,
        MLCommonsIngest,
        default_pipeline_id,
    )
    from convsparse.integration.backends.opensearch import build_client

    if ingest is None:
        if model_id or pipeline or two_phase_pipeline:
            raise UsageError("--model-id, --pipeline and --two-phase-pipeline go with --ingest mlcommons")
        return {}
    if ingest != INGEST_MODE:
        raise UsageError(f"--ingest must be {INGEST_MODE!r}, not {ingest!r}")
    if settings.backend != "opensearch":
        raise UsageError(f"--ingest mlcommons needs --backend opensearch, not {settings.backend!r}")
    if settings.opensearch_field_type != "rank_features":
        raise UsageError("--ingest mlcommons builds a rank_features index (not --field-type sparse_vector)")
    if not model_id:
        raise UsageError("--ingest mlcommons needs --model-id (from `convsparse mlcommons register`)")
    ml = MLCommonsClient(build_client(settings))
    model = ml.get_model(model_id)
    model_fp = _model_fingerprint(model, model_id)
    if fingerprint is not None and fingerprint != model_fp:
        raise UsageError(f"model {model_id} encodes with {model_fp}, not --fingerprint {fingerprint}")
    pipeline = pipeline or default_pipeline_id(model_fp)
    body = ml.get_ingest_pipeline(pipeline)
    if body is None:
        raise UsageError(f"ingest pipeline {pipeline!r} does not exist; create it with "
                         f"`convsparse mlcommons pipeline create --model-id {model_id}`")
    used = [p["sparse_encoding"].get("model_id") for p in body.get("processors", []) if "sparse_encoding" in p]
    if used != [model_id]:
        raise UsageError(f"ingest pipeline {pipeline!r} encodes with {used or 'no model'}, not "
                         f"model {model_id}; recreate it with `convsparse mlcommons pipeline create`")
    sha = str(model.get("model_content_hash_value") or "")
    return {"fingerprint": model_fp,
            "ingest": MLCommonsIngest(model_id, pipeline, sha, two_phase_pipeline)}


def undeploy(model_id: str = ModelId) -> None:
    """Undeploy a model (free its memory on the nodes)."""
    _ml_client().undeploy(model_id)
    typer.echo(f"undeployed model {model_id}")


def delete(model_id: str = ModelId) -> None:
    """Delete a model (undeploying it first)."""
    _ml_client().delete(model_id)
    typer.echo(f"deleted model {model_id}")


def check_settings(
    registration: str = typer.Option("chunked", "--registration", help="chunked or url."),
    apply: bool = typer.Option(False, "--apply-settings",
                               help="Write the missing settings (persistent); otherwise nothing changes."),
) -> None:
    """Name each cluster setting ML Commons needs here that is not set; exit 1 if any."""
    if registration not in ("chunked", "url"):
        raise UsageError(f"--registration must be chunked or url, not {registration!r}")
    checks = _ml_client().check_settings(registration, apply=apply)  # type: ignore[arg-type]
    missing = [c for c in checks if not c.ok]
    for c in checks:
        mark = "ok     " if c.ok else ("set    " if apply else "MISSING")
        typer.echo(f"{mark} {c.name} = {c.current} (wanted {c.wanted}: {c.why})")
    if missing and not apply:
        typer.echo(f"{len(missing)} setting(s) missing; nothing was changed (--apply-settings writes them)")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Run the document encoder inside OpenSearch (ML Commons).",
                        no_args_is_help=True)
    group.command("build")(build)
    group.command("register")(register_model)
    group.command("deploy")(deploy)
    group.command("predict")(predict)
    pipeline = typer.Typer(help="Ingest pipelines that encode documents in the cluster.",
                           no_args_is_help=True)
    pipeline.command("create")(pipeline_create)
    group.add_typer(pipeline, name="pipeline")
    group.command("undeploy")(undeploy)
    group.command("delete")(delete)
    group.command("check-settings")(check_settings)
    app.add_typer(group, name="mlcommons")
