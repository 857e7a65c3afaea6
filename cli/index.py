"""`convsparse index create|describe|list|delete`."""

from __future__ import annotations

import json

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, settings_from
from convsparse.compose import load_encoder, open_backend
from convsparse.errors import UsageError


def index_create(
    name: str = typer.Argument(..., help="Index name."),
    fingerprint: str | None = typer.Option(None, help="Encoder fingerprint (default: the --model's)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Succeed if it already exists."),
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Create an index for an encoder (its fingerprint is recorded; other encoders are refused)."""
    from convsparse.errors import IndexExistsError, IndexNotFoundError

    settings = settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime)
    be = open_backend(settings)
    try:  # the name is checked, and an existing index refused, before the model loads
        be.describe_index(name)
        if not exist_ok:
            raise IndexExistsError(name)
    except IndexNotFoundError:
        pass
    vocab = None
    if fingerprint is None:
        enc = load_encoder(settings)
        fingerprint, vocab = enc.fingerprint, enc.vocabulary_name
    info = be.create_index(name, fingerprint=fingerprint, vocabulary=vocab, exist_ok=exist_ok)
    typer.echo(f"created index {info.name} (encoder {info.fingerprint}, {info.count} documents)")


def index_describe(
    name: str = typer.Argument(...), data_dir: DataDir = None, backend: BackendName = None,
) -> None:
    """Print an index's encoder fingerprint, document count and details as JSON."""
    info = open_backend(settings_from(data_dir=data_dir, backend=backend)).describe_index(name)
    typer.echo(json.dumps({"name": info.name, "fingerprint": info.fingerprint, "count": info.count,
                           "vocabulary": info.vocabulary, **dict(info.extra)}, indent=2, default=str))


def index_list(data_dir: DataDir = None, backend: BackendName = None) -> None:
    """List the backend's indices (backends that can list them: embedded)."""
    from convsparse.integration.backend import SupportsIndexListing

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
    """Delete an index and all its documents."""
    from convsparse.errors import IndexNotFoundError

    be = open_backend(settings_from(data_dir=data_dir, backend=backend))
    try:
        be.describe_index(name)
    except IndexNotFoundError:
        if not missing_ok:
            raise
        typer.echo(f"index {name} does not exist; nothing deleted")
        return
    be.delete_index(name, missing_ok=missing_ok)
    typer.echo(f"deleted index {name}")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Create, describe, list or delete an index.", no_args_is_help=True)
    group.command("create")(index_create)
    group.command("describe")(index_describe)
    group.command("list")(index_list)
    group.command("delete")(index_delete)
    app.add_typer(group, name="index")
