"""`convsparse search --index NAME "question"` (or `-c CONVERSATION`), and the hit table
`quickstart` prints too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, settings_from
from convsparse.compose import open_backend
from convsparse.conversation import Turn
from convsparse.conversation_files import FileConversation, conversations_from_json, read_conversation_file
from convsparse.errors import UsageError

CONVERSATION_HELP = ("JSON text (a turn list, {\"turns\": [...]}, OpenAI-style {\"messages\": [...]}, or a "
                     "\"quoted string\" = one user turn), @FILE, - (stdin), or the path of an "
                     "existing file holding one conversation (.json: one JSON document; "
                     ".jsonl: one conversation a line).")


def _one(conversations: list[FileConversation], where: str) -> list[Turn]:
    if len(conversations) != 1:
        raise UsageError(f"{where} holds {len(conversations)} conversations; search takes one "
                         "(`convsparse encode --conversation` takes many)")
    return conversations[0].turns


def _from_file(path: Path) -> list[Turn]:
    try:
        return _one(read_conversation_file(path), str(path))
    except OSError as e:
        raise UsageError(f"cannot read --conversation file {str(path)!r}: {e.strerror or e}") from None


def read_conversation(value: str, *, stdin: TextIO | None = None) -> list[Turn]:
    """`--conversation`, explicitly one of: JSON text, ``@FILE``, ``-`` (stdin), or the path of
    an existing file, read by `convsparse.conversation_files` and validated. Anything else is a
    `UsageError`, never searched as literal text (a mistyped file name must not become a
    query)."""
    import sys

    stripped = value.strip()
    if stripped == "-":
        text = (stdin or sys.stdin).read()
        return _one(conversations_from_json(text, where="--conversation - (stdin)"), "stdin")
    if stripped.startswith("@"):
        path = Path(stripped[1:])
        if not path.is_file():
            raise UsageError(f"--conversation {stripped}: no such file {str(path)!r}")
        return _from_file(path)
    if stripped[:1] in ("[", "{", '"'):
        return _one(conversations_from_json(stripped, where="--conversation"), "--conversation")
    path = Path(stripped)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if is_file:
        return _from_file(path)
    try:
        json.loads(stripped)
        kind = "a JSON " + ("number" if stripped[:1] in "-0123456789" else "literal")
    except (json.JSONDecodeError, RecursionError):
        kind = "neither JSON nor an existing file"
    hint = ("; to search for plain text, quote it as JSON: -c '\"your question\"'"
            if kind.startswith("neither") else "")
    raise UsageError(f"--conversation {value!r} is {kind}; pass JSON text, @FILE, - "
                     f"(stdin) or the path of an existing file{hint}")


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
    # a fallback decided before the stage ran (no shipped re-ranker, other vectors) has no time
    spent = f" {t['rerank_ms']:.1f} ms" if "rerank_ms" in t else ""
    rerank = "" if result.rerank == "off" else (
        f" · rerank{spent}" + ("" if result.rerank == "ok" else f" ({printable(result.rerank)})"))
    console.print(
        f"format {t['format_ms']:.1f} ms · encode {t['encode_ms']:.1f} ms · search "
        f"{t['search_ms']:.1f} ms{rerank} · total {t['total_ms']:.1f} ms · query terms "
        f"{result.query_terms_before} -> {result.query_terms_after} · FLOPS {result.flops:.2f}",
        highlight=False,
    )


def _pruning(top_k, min_weight, max_ratio, alpha_mass):
    import math

    from convsparse.pruning import PruningPolicy

    for name, v in (("--min-weight", min_weight), ("--max-ratio", max_ratio), ("--alpha-mass", alpha_mass)):
        if v is not None and not math.isfinite(v):
            raise UsageError(f"{name} must be a finite number, got {v}")
    try:
        return PruningPolicy(top_k=top_k, min_weight=min_weight, max_ratio=max_ratio, alpha_mass=alpha_mass)
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else None
        if first:
            name = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "pruning"
            ctx = first.get("ctx", {})
            bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}",
                      "less_than": "< {lt}", "less_than_equal": "<= {le}"}
            kind = first.get("type", "")
            reason = (f"must be {bounds[kind].format(**ctx)}" if kind in bounds
                      else str(ctx.get("error", first["msg"])))
            raise UsageError(f"{name} {first.get('input')!r}: {reason}") from None
        raise UsageError(f"invalid pruning option: {e}") from None


def search(
    question: str | None = typer.Argument(None, show_default=False,
                                          help="A one-turn conversation: the question as plain "
                                          "text (for more turns, use -c)."),
    index: str = typer.Option(..., "--index"),
    conversation: str | None = typer.Option(None, "--conversation", "-c", help=CONVERSATION_HELP),
    k: int = typer.Option(10, "--k", "-k", min=1),
    top_k: int | None = typer.Option(None, "--top-k", help="Keep the top-k query terms."),
    min_weight: float | None = typer.Option(None, "--min-weight"),
    max_ratio: float | None = typer.Option(None, "--max-ratio"),
    alpha_mass: float | None = typer.Option(None, "--alpha-mass"),
    rescore_window: int = typer.Option(0, "--rescore-window", min=0,
                                       help="Rescore this many hits with the unpruned query."),
    rerank: Path | None = typer.Option(None, "--rerank", help="Re-rank the first stage's top "
                                       "hits with this re-ranker folder (`convsparse rerank "
                                       "train`) instead of the shipped one."),
    no_rerank: bool = typer.Option(False, "--no-rerank", help="First-stage order only (by "
                                   "default the shipped re-ranker reorders the top hits of an "
                                   "index that holds passage vectors)."),
    rerank_depth: int = typer.Option(20, "--rerank-depth", min=1,
                                     help="How many first-stage hits the re-ranker reorders."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    model: Model = None, runtime: Runtime = None, data_dir: DataDir = None,
    backend: BackendName = None,
) -> None:
    """Search an index with a question (`convsparse search --index docs "how do I renew a
    passport"`) or a conversation (-c) and print the hits with timings.

    The conversation, the pruning options and the index are checked before the model loads."""
    from convsparse.conversation import parse_conversation
    from convsparse.integration.client import ConversationalSearch

    if (question is None) == (conversation is None):
        raise UsageError("pass a question or -c CONVERSATION, not both" if question is not None else
                         "no question: pass one (convsparse search --index NAME \"your question\") "
                         "or a conversation with -c")
    conv = question if question is not None else read_conversation(conversation)
    parse_conversation(conv)  # InvalidConversationError (exit 2) before loading anything
    policy = _pruning(top_k, min_weight, max_ratio, alpha_mass)
    settings = settings_from(data_dir=data_dir, backend=backend, model=model, runtime=runtime)
    be = open_backend(settings)
    be.describe_index(index)  # IndexNotFoundError (exit 1) before the model loads
    if no_rerank and rerank is not None:
        raise UsageError("--rerank and --no-rerank exclude each other")
    from convsparse.integration.client import DEFAULT_RERANKER

    reranker: object = None if no_rerank else DEFAULT_RERANKER  # shipped, where vectors are
    if rerank is not None:
        from convsparse.reranking import load_reranker

        # the student's runtime runs the re-ranker too; UnsupportedModelError (exit 2) names
        # the folder
        reranker = load_reranker(rerank, runtime=settings.runtime)
    client = ConversationalSearch(index, backend=be, settings=settings, pruning=policy,
                                  rescore_window=rescore_window, reranker=reranker,
                                  rerank_depth=rerank_depth)  # the encoder loads on first use
    result = client.search(conv, k)
    if as_json:
        typer.echo(json.dumps({
            "hits": [{"id": h.id, "score": h.score, "fields": dict(h.fields)} for h in result.hits],
            "timings": result.timings, "query_terms_before": result.query_terms_before,
            "query_terms_after": result.query_terms_after, "flops": result.flops,
            "rerank": result.rerank, "rerank_statistics": result.rerank_statistics,
        }, default=str))
    else:
        print_hits(result, title=f"{index}: top {k}")



def register(app: typer.Typer) -> None:
    app.command("search")(search)
