"""`convsparse ingest SOURCE --index NAME [--via local|celery]`."""

from __future__ import annotations

from pathlib import Path

import typer

from convsparse.cli.options import (
    BackendName,
    DataDir,
    IdField,
    Model,
    Runtime,
    SourceFormatOption,
    TextField,
    settings_from,
)
from convsparse.compose import load_encoder, open_backend
from convsparse.errors import UsageError
from convsparse.sources import DEFAULT_ID_FIELD, DEFAULT_TEXT_FIELD


def _check_source(source: Path, format: str | None):
    """The source format, after checking the path and format (before any model loads)."""
    from convsparse.sources import check_format, detect_format

    if not source.exists():
        raise UsageError(f"source {str(source)!r} does not exist; check the path")
    if source.is_dir():
        raise UsageError(f"source {str(source)!r} is a folder; pass a JSONL, CSV/TSV or Parquet file")
    return check_format(format) or detect_format(source)


def ingest(
    source: Path = typer.Argument(..., help="JSONL, CSV/TSV or Parquet file."),
    index: str = typer.Option(..., "--index", help="Target index (created for the encoder if missing)."),
    via: str = typer.Option("local", "--via", help="local (this process) or celery (the workers)."),
    format: SourceFormatOption = None, id_field: IdField = DEFAULT_ID_FIELD,
    text_field: TextField = DEFAULT_TEXT_FIELD,
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    show_failures: int = typer.Option(10, "--show-failures", help="How many failed records to print."),
    allow_failures: bool = typer.Option(False, "--allow-failures",
                                        help="Exit 0 when some records failed (a partial ingest)."),
    wait: bool = typer.Option(True, "--wait/--no-wait",
                              help="celery: follow the job to its end, or queue it and return."),
    timeout: float | None = typer.Option(None, "--timeout", min=0,
                                         help="celery: stop following the job after this many "
                                              "seconds (it goes on; exit 1)."),
    rerank_vectors: bool | None = typer.Option(
        None, "--rerank-vectors/--no-rerank-vectors",
        help="A new index stores the re-ranker's passage vectors with the term maps, so "
             "searches re-rank (default: CONVSPARSE_RERANK_VECTORS, on); an existing index "
             "keeps what it holds."),
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Encode a file of documents and index them (in-process, or through the Celery workers).

    Exit codes: 0 every record indexed; 1 any record failed (0 with --allow-failures when at
    least one was indexed), or a runtime error; 2 a usage error (path, format, option, index
    name). `--via celery` first checks that Redis answers and a worker consumes the ingest
    queue, and says how to start one if not."""
    if via not in ("local", "celery"):
        raise UsageError(f"--via must be 'local' or 'celery', got {via!r}")
    fmt = _check_source(source, format)
    settings = settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime)
    if via == "celery":
        from convsparse.cli.workers import print_status

        if rerank_vectors is not None:  # the index is made here, before the workers see it
            from convsparse.integration.ingestion import ensure_index

            ensure_index(open_backend(settings), index, load_encoder(settings),
                         vectors=rerank_vectors)
        from convsparse.integration.ingest_options import Batching, SourceOptions
        from convsparse.sources import count_records
        from convsparse.workers.submit import JobOptions, JobTimeouts, run_ingest_job

        options = JobOptions(SourceOptions(id_field=id_field, text_field=text_field, format=fmt),
                             Batching(batch_size=batch_size), JobTimeouts(follow_s=timeout))
        status = run_ingest_job(source, index=index, options=options, wait=wait,
                                total=count_records(source, fmt))
        print_status(status)
        if status.state == "running":
            typer.echo(f"follow it with `convsparse jobs status {status.job_id}`; stop it with "
                       f"`convsparse jobs cancel {status.job_id}`")
            raise typer.Exit(0 if not wait else 1)
        _exit_for(status.indexed, status.failed + len(status.missing_ids), allow_failures)
        return
    from convsparse.integration.ingest_options import Batching, IngestOptions, SourceOptions
    from convsparse.integration.ingestion import ingest as run_ingest
    from convsparse.sources import count_records

    be = open_backend(settings)
    _check_index(be, index)  # an invalid name (exit 2) before the model loads
    options = IngestOptions(SourceOptions(id_field=id_field, text_field=text_field, format=fmt),
                            Batching(batch_size=batch_size))
    report = run_ingest(source, encoder=load_encoder(settings), backend=be, index=index,
                        options=options, progress=True, total=count_records(source, fmt),
                        vectors=rerank_vectors)
    indexed, failures = report.indexed, report.failures
    from convsparse.redaction import mask_secrets
    from convsparse.terminal import printable

    typer.echo(f"indexed {indexed}, failed {len(failures)} into {index}")
    for rid, reason in failures[:show_failures]:
        typer.echo(f"  failed {printable(rid)}: {printable(mask_secrets(reason))}")
    if len(failures) > show_failures:
        typer.echo(f"  ... {len(failures) - show_failures} more (--show-failures N)")
    _exit_for(indexed, len(failures), allow_failures)


def _check_index(backend, index: str) -> None:
    from convsparse.errors import IndexNotFoundError

    try:
        backend.describe_index(index)
    except IndexNotFoundError:
        pass  # created for the encoder by the driver


def _exit_for(indexed: int, failed: int, allow_failures: bool) -> None:
    if failed and not (allow_failures and indexed):
        hint = "" if allow_failures else " (--allow-failures accepts a partial ingest)"
        typer.echo(f"{failed} record(s) failed{hint}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
