"""`convsparse` commands of the integration part: `index`, `ingest`, `search`, `quickstart`.

Heavy imports (torch, scipy, the backends) happen inside the command bodies so `--help` is fast.
Every command takes `--data-dir` (embedded backend folder; default `CONVSPARSE_DATA_DIR`) and
`--backend embedded|opensearch` (default `CONVSPARSE_BACKEND`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from convsparse.compose import load_encoder, open_backend

index_app = typer.Typer(help="Create, describe, list or delete an index.", no_args_is_help=True)

_DATA_DIR = typer.Option(None, "--data-dir", help="Embedded backend folder (default: CONVSPARSE_DATA_DIR).")
_BACKEND = typer.Option(None, "--backend", help="embedded or opensearch (default: CONVSPARSE_BACKEND).")
_MODEL = typer.Option(None, "--model", help="Student folder or hub id (default: the shipped student).")


def _settings(data_dir: Path | None = None, backend: str | None = None, model: str | None = None):
    from convsparse.settings import get_settings

    return get_settings(data_dir=data_dir, backend=backend, model=model)


def _fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def read_conversation(value: str) -> Any:
    """`--conversation`: a JSON value (turn list, {"turns": [...]}, string), a file holding
    one (.json, or .jsonl: the first line), or plain text (one user turn)."""
    path = Path(value)
    text = value
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if is_file:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            text = next((ln for ln in text.splitlines() if ln.strip()), "")
    stripped = text.strip()
    if stripped[:1] in ("[", "{", '"'):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as e:
            raise _fail(f"--conversation is not valid JSON ({e.msg} at line {e.lineno} col {e.colno})", 2) from None
    return stripped


def print_hits(result, *, title: str = "", snippet_chars: int = 90) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("id")
    table.add_column("score", justify="right")
    table.add_column("text")
    for i, hit in enumerate(result.hits, 1):
        fields = dict(hit.fields or {})
        text = str(fields.get("title") or "")
        body = str(fields.get("text") or "")
        snippet = (f"{text}: " if text else "") + body
        if len(snippet) > snippet_chars:
            snippet = snippet[: snippet_chars - 1] + "…"
        table.add_row(str(i), hit.id, f"{hit.score:.3f}", snippet)
    console = Console()
    console.print(table)
    t = result.timings
    console.print(
        f"format {t['format_ms']:.1f} ms · encode {t['encode_ms']:.1f} ms · search "
        f"{t['search_ms']:.1f} ms · total {t['total_ms']:.1f} ms · query terms "
        f"{result.query_terms_before} -> {result.query_terms_after} · FLOPS {result.flops:.2f}",
        highlight=False,
    )


def _pruning(top_k, min_weight, max_ratio, alpha_mass):
    from convsparse.pruning import PruningPolicy

    try:
        return PruningPolicy(top_k=top_k, min_weight=min_weight, max_ratio=max_ratio, alpha_mass=alpha_mass)
    except ValueError as e:
        raise _fail(f"invalid pruning option: {e}", 2) from None


# ---------------------------------------------------------------------- index
@index_app.command("create")
def index_create(
    name: str = typer.Argument(..., help="Index name."),
    fingerprint: str | None = typer.Option(None, help="Encoder fingerprint (default: the --model's)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Succeed if it already exists."),
    model: str | None = _MODEL, data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND,
) -> None:
    """Create an index for an encoder (its fingerprint is recorded; other encoders are refused)."""
    from convsparse.errors import ConvsparseError

    settings = _settings(data_dir, backend, model)
    vocab = None
    if fingerprint is None:
        enc = load_encoder(settings)
        fingerprint, vocab = enc.fingerprint, enc.vocabulary_name
    try:
        info = open_backend(settings).create_index(name, fingerprint=fingerprint, vocabulary=vocab, exist_ok=exist_ok)
    except (ConvsparseError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(f"created index {info.name} (encoder {info.fingerprint}, {info.count} documents)")


@index_app.command("describe")
def index_describe(
    name: str = typer.Argument(...), data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND,
) -> None:
    """Print an index's encoder fingerprint, document count and details as JSON."""
    from convsparse.errors import ConvsparseError

    try:
        info = open_backend(_settings(data_dir, backend)).describe_index(name)
    except (ConvsparseError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(json.dumps({"name": info.name, "fingerprint": info.fingerprint, "count": info.count,
                           "vocabulary": info.vocabulary, **dict(info.extra)}, indent=2, default=str))


@index_app.command("list")
def index_list(data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND) -> None:
    """List the backend's indices (backends that can list them: embedded)."""
    from convsparse.integration.backend import SupportsIndexListing

    be = open_backend(_settings(data_dir, backend))
    if not isinstance(be, SupportsIndexListing):
        raise _fail(f"{type(be).__name__} cannot list its indices", 2)
    for name in be.list_indices():
        typer.echo(name)


@index_app.command("delete")
def index_delete(
    name: str = typer.Argument(...),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Succeed if it does not exist."),
    data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND,
) -> None:
    """Delete an index and all its documents."""
    from convsparse.errors import ConvsparseError

    try:
        open_backend(_settings(data_dir, backend)).delete_index(name, missing_ok=missing_ok)
    except (ConvsparseError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(f"deleted index {name}")


# ---------------------------------------------------------------------- ingest
def _read_records(source: Path, id_field: str, text_field: str):
    """(records, errors) from helper D's readers; a minimal JSONL reader if they are missing."""
    try:
        from convsparse.integration.sources import RecordError, read_records
    except ImportError:  # pragma: no cover - sources.py ships with the package
        from convsparse.documents import SourceRecord

        def read_records(path, *, id_field, text_field):
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield SourceRecord.from_mapping(json.loads(line), id_field=id_field,
                                                        text_field=text_field)

        RecordError = ()
    return read_records(source, id_field=id_field, text_field=text_field), RecordError


def ingest(
    source: Path = typer.Argument(..., help="JSONL, CSV/TSV or Parquet file."),
    index: str = typer.Option(..., "--index", help="Target index (created for the encoder if missing)."),
    via: str = typer.Option("local", "--via", help="local (this process) or celery (the workers)."),
    id_field: str = typer.Option("id", "--id-field"),
    text_field: str = typer.Option("text", "--text-field"),
    batch_size: int = typer.Option(32, "--batch-size"),
    show_failures: int = typer.Option(10, "--show-failures", help="How many failed records to print."),
    model: str | None = _MODEL, data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND,
) -> None:
    """Encode a file of documents and index them (in-process, or through the Celery workers)."""
    from convsparse.errors import ConvsparseError

    if not source.exists():
        raise _fail(f"source {str(source)!r} does not exist", 2)
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
        raise _fail(f"--via must be 'local' or 'celery', got {via!r}", 2)
    from convsparse.integration.client import ConversationalSearch
    from convsparse.integration.ingestion import encode_and_upsert
    from tqdm.auto import tqdm

    settings = _settings(data_dir, backend, model)
    client = ConversationalSearch(index, encoder=load_encoder(settings), backend=open_backend(settings))
    try:
        client.ensure_index()
    except ConvsparseError as e:
        raise _fail(str(e)) from None
    reader, record_error = _read_records(source, id_field, text_field)
    indexed, failures = 0, []

    def valid_records():
        for item in reader:
            if record_error and isinstance(item, record_error):
                failures.append((item.id or f"line {item.position}", item.reason))
                bar.update(1)
            else:
                yield item

    with tqdm(desc=f"ingest {index}", unit="doc") as bar:
        for res in encode_and_upsert(valid_records(), encoder=client.encoder, backend=client.backend,
                                     index=index, batch_size=batch_size):
            if res.ok:
                indexed += 1
            else:
                failures.append((res.id, res.error or f"status {res.status}"))
            bar.update(1)
    typer.echo(f"indexed {indexed}, failed {len(failures)} into {index}")
    for rid, reason in failures[:show_failures]:
        typer.echo(f"  failed {rid}: {reason}")
    if failures and not indexed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- search
def search(
    index: str = typer.Option(..., "--index"),
    conversation: str = typer.Option(..., "--conversation", "-c",
                                     help="JSON turn list, a .json/.jsonl file, or plain text."),
    k: int = typer.Option(10, "--k", "-k", min=1),
    top_k: int | None = typer.Option(None, "--top-k", help="Keep the top-k query terms."),
    min_weight: float | None = typer.Option(None, "--min-weight"),
    max_ratio: float | None = typer.Option(None, "--max-ratio"),
    alpha_mass: float | None = typer.Option(None, "--alpha-mass"),
    rescore_window: int = typer.Option(0, "--rescore-window", min=0,
                                       help="Rescore this many hits with the unpruned query."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    model: str | None = _MODEL, data_dir: Path | None = _DATA_DIR, backend: str | None = _BACKEND,
) -> None:
    """Search an index with a conversation and print the hits with timings."""
    from convsparse.integration.client import ConversationalSearch

    from convsparse.errors import ConvsparseError

    conv = read_conversation(conversation)
    policy = _pruning(top_k, min_weight, max_ratio, alpha_mass)
    settings = _settings(data_dir, backend, model)
    client = ConversationalSearch(index, encoder=load_encoder(settings), backend=open_backend(settings),
                                  pruning=policy, rescore_window=rescore_window)
    try:
        result = client.search(conv, k)
    except ConvsparseError as e:
        raise _fail(str(e), 2 if isinstance(e, ValueError) else 1) from None
    if as_json:
        typer.echo(json.dumps({
            "hits": [{"id": h.id, "score": h.score, "fields": dict(h.fields)} for h in result.hits],
            "timings": result.timings, "query_terms_before": result.query_terms_before,
            "query_terms_after": result.query_terms_after, "flops": result.flops,
        }, default=str))
    else:
        print_hits(result, title=f"{index}: top {k}")


# ---------------------------------------------------------------------- quickstart
def quickstart(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Keep the index here (default: a temp dir)."),
    model: str | None = _MODEL,
    k: int = typer.Option(3, "--k", "-k", min=1),
    conversations: int = typer.Option(2, "--conversations", min=1, help="Sample conversations to run."),
) -> None:
    """Index the bundled sample corpus with the default student and run sample conversations."""
    import tempfile
    import time
    from importlib import resources

    from convsparse.integration.client import ConversationalSearch
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from rich.console import Console

    from convsparse.pruning import PruningPolicy

    console = Console()
    sample = resources.files("convsparse") / "sample_data"
    corpus = [json.loads(ln) for ln in (sample / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    convs = [json.loads(ln) for ln in (sample / "conversations.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    # the multi-turn ones show what conversational search is for: longest context first
    convs = sorted(convs, key=lambda c: -len(c["turns"]))
    picked, seen = [], set()
    for c in convs:
        key = c.get("conversation_id", c["id"])
        if key not in seen:
            picked.append(c)
            seen.add(key)
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="convsparse-quickstart-")
        data_dir = Path(tmp.name)
    try:
        t = time.perf_counter()
        encoder = load_encoder(_settings(data_dir, "embedded", model))
        console.print(f"loaded student {encoder.fingerprint} in {time.perf_counter() - t:.1f} s")
        backend = EmbeddedBackend(data_dir)
        backend.delete_index("quickstart", missing_ok=True)
        client = ConversationalSearch("quickstart", encoder=encoder, backend=backend,
                                      pruning=PruningPolicy(top_k=64), rescore_window=20)
        report = client.index_documents(corpus, progress=True)
        console.print(f"indexed {report.indexed} passages into {data_dir / 'quickstart'} "
                      f"in {report.elapsed_s:.1f} s ({report.n_failed} failed)")
        client.search(picked[0]["turns"], k)  # warm-up (first torch call)
        for conv in picked[:conversations]:
            console.rule(f"conversation {conv['id']}")
            for turn in conv["turns"]:
                console.print(f"[bold]{turn['role']}:[/] {turn['text']}", highlight=False)
            print_hits(client.search(conv["turns"], k))
    finally:
        if tmp is not None:
            tmp.cleanup()


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level app."""
    app.add_typer(index_app, name="index")
    app.command("ingest")(ingest)
    app.command("search")(search)
    app.command("quickstart")(quickstart)
