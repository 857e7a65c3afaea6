"""`convsparse index create|describe|list|delete|build-ann`."""

from __future__ import annotations

import json

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, settings_from
from convsparse.compose import load_encoder, open_backend
from convsparse.errors import UsageError
from convsparse.settings import Settings


def index_create(
    name: str = typer.Argument(..., help="Index name."),
    fingerprint: str | None = typer.Option(None, help="Encoder fingerprint (default: the --model's)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Succeed if it already exists."),
    field_type: str | None = typer.Option(
        None, "--field-type",
        help="Term field: rank_features, or sparse_vector (OpenSearch 3.3+ neural sparse ANN; "
             "Elasticsearch 8.15+). Default: CONVSPARSE_OPENSEARCH_FIELD_TYPE or "
             "CONVSPARSE_ELASTICSEARCH_FIELD_TYPE."),
    seismic: str | None = typer.Option(
        None, "--seismic",
        help='OpenSearch sparse_vector SEISMIC parameters as JSON, e.g. \'{"n_postings": 4000}\' '
             "(documented defaults otherwise)."),
    ingest: str | None = typer.Option(
        None, "--ingest", help="mlcommons: OpenSearch encodes the documents with a deployed ML "
                               "Commons model through the index's default ingest pipeline."),
    model_id: str | None = typer.Option(None, "--model-id", help="With --ingest mlcommons: the model."),
    pipeline: str | None = typer.Option(
        None, "--pipeline", help="With --ingest mlcommons: the ingest pipeline (default convsparse-<fp12>)."),
    two_phase_pipeline: str | None = typer.Option(
        None, "--two-phase-pipeline", help="With --ingest mlcommons: a two-phase search pipeline "
                                           "as the index's default search pipeline."),
    rerank_vectors: bool | None = typer.Option(
        None, "--rerank-vectors/--no-rerank-vectors",
        help="Store the re-ranker's passage vectors with the term maps (default: "
             "CONVSPARSE_RERANK_VECTORS, on; never with --ingest mlcommons, where the cluster "
             "writes the documents)."),
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Create an index for an encoder (its fingerprint is recorded; other encoders are refused)
    that holds the re-ranker's passage vectors unless --no-rerank-vectors."""
    from convsparse.errors import IndexExistsError, IndexNotFoundError

    settings = _with_field_type(
        settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime), field_type)
    options = _seismic_options(settings, seismic)
    be = open_backend(settings, **options)
    try:  # the name is checked, and an existing index refused, before the model loads
        be.describe_index(name)
        if not exist_ok:
            raise IndexExistsError(name)
    except IndexNotFoundError:
        pass
    from convsparse.cli.mlcommons import index_ingest_options

    extra = index_ingest_options(settings, ingest, model_id, pipeline, two_phase_pipeline, fingerprint)
    fingerprint = extra.pop("fingerprint", fingerprint)
    vocab = None
    if fingerprint is None or _opensearch_sparse(settings):
        enc = load_encoder(settings)
        vocab = enc.vocabulary_name
        fingerprint = fingerprint or enc.fingerprint
        if _opensearch_sparse(settings):  # its keys are token ids: the index records the vocabulary
            tokens = getattr(enc, "vocabulary", None)
            if tokens is None:
                raise UsageError(f"{type(enc).__name__} does not expose its vocabulary; a "
                                 "sparse_vector index needs it to map tokens to ids")
            be = open_backend(settings, token_vocabulary=tokens, **options)
    info = be.create_index(name, fingerprint=fingerprint, vocabulary=vocab, exist_ok=exist_ok, **extra)
    vectors = ""
    if ingest is None and (settings.rerank_vectors if rerank_vectors is None else rerank_vectors):
        from convsparse.integration.backends.base import SupportsPassageVectors
        from convsparse.integration.vectors import default_spec

        if isinstance(be, SupportsPassageVectors) and be.vector_spec(name) is None \
                and info.count == 0:
            be.enable_vectors(name, default_spec())
        spec = be.vector_spec(name) if isinstance(be, SupportsPassageVectors) else None
        vectors = f", {spec.describe()}" if spec else ""
    typer.echo(f"created index {info.name} (encoder {info.fingerprint}, {info.count} "
               f"documents{vectors})")


def _opensearch_sparse(settings: Settings) -> bool:
    return settings.backend == "opensearch" and settings.opensearch_field_type == "sparse_vector"


def _with_field_type(settings: Settings, field_type: str | None) -> Settings:
    """`--field-type` over the engine's `CONVSPARSE_<ENGINE>_FIELD_TYPE`."""
    from convsparse.mappings import FIELD_TYPES

    if field_type is None:
        return settings
    if field_type not in FIELD_TYPES:
        raise UsageError(f"--field-type must be one of {', '.join(FIELD_TYPES)}, not {field_type!r}")
    if settings.backend not in ("opensearch", "elasticsearch"):
        raise UsageError(f"--field-type applies to the opensearch and elasticsearch backends, "
                         f"not {settings.backend!r}")
    return settings.model_copy(update={f"{settings.backend}_field_type": field_type})


def _seismic_options(settings: Settings, seismic: str | None) -> dict[str, object]:
    """`--seismic` JSON as the backend's `seismic` option (OpenSearch sparse_vector only)."""
    from convsparse.mappings.sparse_vector import SeismicParameters

    if seismic is None:
        return {}
    if not _opensearch_sparse(settings):
        raise UsageError("--seismic applies to --backend opensearch with --field-type sparse_vector")
    try:
        return {"seismic": SeismicParameters.from_mapping(json.loads(seismic))}
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"--seismic: {exc}") from None


def index_describe(
    name: str = typer.Argument(...), data_dir: DataDir = None, backend: BackendName = None,
) -> None:
    """Print an index's encoder fingerprint, document count and details as JSON."""
    info = open_backend(settings_from(data_dir=data_dir, backend=backend)).describe_index(name)
    typer.echo(json.dumps({"name": info.name, "fingerprint": info.fingerprint, "count": info.count,
                           "vocabulary": info.vocabulary, **dict(info.extra)}, indent=2, default=str))


def index_list(data_dir: DataDir = None, backend: BackendName = None) -> None:
    """List the backend's indices (backends that can list them: embedded)."""
    from convsparse.integration.backends.base import SupportsIndexListing

    be = open_backend(settings_from(data_dir=data_dir, backend=backend))
    if not isinstance(be, SupportsIndexListing):
        raise UsageError(f"{type(be).__name__} cannot list its indices")
    for name in be.list_indices():
        typer.echo(name)


def index_delete(
    name: str = typer.Argument(...),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Succeed if it does not exist."),
    data_dir: DataDir = None, backend: BackendName = None,
) -> None:
    """Delete an index and all its documents (a damaged one too: nothing of it is read)."""
    from convsparse.errors import IndexNotFoundError

    be = open_backend(settings_from(data_dir=data_dir, backend=backend))
    try:
        be.delete_index(name)
    except IndexNotFoundError:
        if not missing_ok:
            raise
        typer.echo(f"index {name} does not exist; nothing deleted")
        return
    typer.echo(f"deleted index {name}")


def index_build_ann(
    name: str = typer.Argument(...),
    # the ranges are checked by AnnBuild, whose error is one line (exit 2)
    n_postings: int = typer.Option(3500, help="Average posting-list length kept per term (>= 1)."),
    centroid_fraction: float = typer.Option(0.1, help="Blocks per posting list / its length (0-1]."),
    summary_energy: float = typer.Option(0.4, help="Share of a block's weight its summary keeps (0-1]."),
    threads: int = typer.Option(0, help="Build threads (0 = all cores)."),
    data_dir: DataDir = None, backend: BackendName = None,
) -> None:
    """(Re)build the index's approximate-search structure (embedded; SEISMIC), for
    `search(..., approximate=AnnQuery(...))` and the ANN points of `convsparse tune`."""
    from convsparse.integration.backends.base import SupportsApproximateSearch
    from convsparse.integration.backends.embedded import AnnBuild

    AnnBuild(n_postings, centroid_fraction, summary_energy, threads)  # bad values: exit 2 first
    be = open_backend(settings_from(data_dir=data_dir, backend=backend))
    if not isinstance(be, SupportsApproximateSearch):
        raise UsageError(f"{type(be).__name__} has no approximate-search structure to build "
                         "(OpenSearch: create the index with --field-type sparse_vector)")
    info = be.build_ann(name, n_postings=n_postings, centroid_fraction=centroid_fraction,
                        summary_energy=summary_energy, threads=threads)
    typer.echo(json.dumps(info.to_dict(), indent=2))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Create, describe, list or delete an index.", no_args_is_help=True)
    group.command("create")(index_create)
    group.command("describe")(index_describe)
    group.command("list")(index_list)
    group.command("delete")(index_delete)
    group.command("build-ann")(index_build_ann)
    app.add_typer(group, name="index")
