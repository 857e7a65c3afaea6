"""`convsparse ingest SOURCE --index NAME [--via local|celery]`."""

from __future__ import annotations

from pathlib import Path

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, fail, settings_from
from convsparse.compose import load_encoder, open_backend


def ingest(
    source: Path = typer.Argument(..., help="JSONL, CSV/TSV or Parquet file."),
    index: str = typer.Option(..., "--index", help="Target index (created for the encoder if missing)."),
    via: str = typer.Option("local", "--via", help="local (this process) or celery (the workers)."),
    id_field: str = typer.Option("id", "--id-field"),
    text_field: str = typer.Option("text", "--text-field"),
    batch_size: int = typer.Option(32, "--batch-size"),
    show_failures: int = typer.Option(10, "--show-failures", help="How many failed records to print."),
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Encode a file of documents and index them (in-process, or through the Celery workers)."""
    from convsparse.errors import ConvsparseError

    if not source.exists():
        raise fail(f"source {str(source)!r} does not exist", 2)
    if via == "celery":
        from convsparse.cli.workers import print_status
        from convsparse.workers.submit import run_ingest_job

        status = run_ingest_job(source, index=index, id_field=id_field, text_field=text_field,
                                batch_size=batch_size)
        print_status(status)
        if status.state != "finished":
            raise typer.Exit(1)
        return
    if via != "local":
        raise fail(f"--via must be 'local' or 'celery', got {via!r}", 2)
    from convsparse.integration.ingestion import ingest as run_ingest
    from convsparse.integration.sources import read_records

    settings = settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime)
    try:
        report = run_ingest(read_records(source, id_field=id_field, text_field=text_field),
                            encoder=load_encoder(settings), backend=open_backend(settings),
                            index=index, batch_size=batch_size, progress=True)
    except ConvsparseError as e:
        raise fail(str(e)) from None
    indexed, failures = report.indexed, report.failed
    from convsparse.redaction import mask_secrets
    from convsparse.terminal import printable

    typer.echo(f"indexed {indexed}, failed {len(failures)} into {index}")
    for rid, reason in failures[:show_failures]:
        typer.echo(f"  failed {printable(rid)}: {printable(mask_secrets(reason))}")
    if failures and not indexed:
        raise typer.Exit(1)



def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
