"""`convsparse search --index NAME -c CONVERSATION`, and the hit table `quickstart` prints too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, fail, settings_from
from convsparse.compose import load_encoder, open_backend


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
            raise fail(f"--conversation is not valid JSON ({e.msg} at line {e.lineno} col {e.colno})", 2) from None
    return stripped


def print_hits(result, *, title: str = "", snippet_chars: int = 90) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from convsparse.terminal import printable

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
        # document text is data, never markup or terminal control sequences
        table.add_row(str(i), Text(printable(hit.id)), f"{hit.score:.3f}", Text(printable(snippet)))
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
        raise fail(f"invalid pruning option: {e}", 2) from None


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
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Search an index with a conversation and print the hits with timings."""
    from convsparse.errors import ConvsparseError
    from convsparse.integration.client import ConversationalSearch

    conv = read_conversation(conversation)
    policy = _pruning(top_k, min_weight, max_ratio, alpha_mass)
    settings = settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime)
    client = ConversationalSearch(index, encoder=load_encoder(settings), backend=open_backend(settings),
                                  pruning=policy, rescore_window=rescore_window)
    try:
        result = client.search(conv, k)
    except ConvsparseError as e:
        raise fail(str(e), 2 if isinstance(e, ValueError) else 1) from None
    if as_json:
        typer.echo(json.dumps({
            "hits": [{"id": h.id, "score": h.score, "fields": dict(h.fields)} for h in result.hits],
            "timings": result.timings, "query_terms_before": result.query_terms_before,
            "query_terms_after": result.query_terms_after, "flops": result.flops,
        }, default=str))
    else:
        print_hits(result, title=f"{index}: top {k}")



def register(app: typer.Typer) -> None:
    app.command("search")(search)
