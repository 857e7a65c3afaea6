"""The evaluation command group: `convsparse collection show|index`, `evaluate`, `tune`.

Heavy imports stay inside the command bodies so that `convsparse --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from convsparse.cli.options import BackendName, DataDir, Model, Runtime, settings_from
from convsparse.compose import load_encoder, open_backend

_DIR_HELP = "Collection folder: corpus.jsonl|tsv, conversations.jsonl, qrels.tsv ('sample' = shipped)."


def _collection(path: str, limit: int | None = None):
    from convsparse.benchmark_collections import load_collection, sample_collection

    col = sample_collection() if path == "sample" else load_collection(path)
    return col.subset(limit=limit, judged_only=bool(col.qrels)) if limit else col


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _console():
    from rich.console import Console

    return Console(stderr=False)


def _print_table(rows: list[dict[str, str]], title: str) -> None:
    """A table whose numbers are never cut: numeric columns do not wrap, and when the table is
    wider than the terminal it is printed at its own width (the terminal wraps lines) instead
    of being squeezed into "0.5…"."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    head = list(dict.fromkeys(h for r in rows for h in r))
    for h in head:
        text = h in ("System", "setting", "Query view")
        table.add_column(h, justify="left" if text else "right", no_wrap=not text,
                         min_width=None if text else max(len(r.get(h, "")) for r in rows))
    for r in rows:
        table.add_row(*[r.get(h, "") for h in head])
    console = _console()
    needed = Console(width=10_000).measure(table).maximum
    if needed > console.width:
        console = Console(width=needed)
    console.print(table)


def _report_rows(report) -> list[dict[str, str]]:
    from convsparse.evaluation.report import fmt, metric_label

    rows = []
    for r in report.results:
        rows.append({"System": r.system, "Query view": r.view, "Turns": str(r.n_queries),
                     **{metric_label(m): fmt(r.metrics.get(m), 3) for m in report.metrics},
                     "FLOPS": fmt(r.flops, 2), "Q terms": fmt(r.avg_query_terms, 1),
                     "D terms": fmt(r.avg_doc_terms, 1),
                     "p50 ms": fmt(r.latency_ms.get("p50"), 2),
                     "p95 ms": fmt(r.latency_ms.get("p95"), 2)})
    return rows


# ---------------------------------------------------------------------------------------------
# collection


def collection_show(path: str = typer.Argument(..., help=_DIR_HELP)) -> None:
    """Count passages, conversation turns, rewrites and judgments in a collection."""
    col = _collection(path)
    n_rw = sum(1 for c in col.conversations if c.rewrite)
    n_conv = len({c.conversation_id or c.id for c in col.conversations})
    typer.echo(f"{col.name}: {len(col.corpus)} passages, {len(col.conversations)} turns from "
               f"{n_conv} conversations ({n_rw} with a rewrite), "
               f"{sum(len(r) for r in col.qrels.values())} judgments for {len(col.qrels)} turns")


def collection_index(
    path: str = typer.Argument(..., help=_DIR_HELP),
    index: str = typer.Option(..., "--index", "-i", help="Index to create/fill."),
    model: Model = None, runtime: Runtime = None, backend: BackendName = None,
    data_dir: DataDir = None,
    batch_size: int = typer.Option(32, min=1),
    recreate: bool = typer.Option(False, help="Delete the index first."),
) -> None:
    """Encode a collection's corpus and write it to an index through the ingestion driver."""
    from convsparse.integration.ingest_options import Batching, IngestOptions
    from convsparse.integration.ingestion import ingest

    col = _collection(path)
    if not col.corpus:
        raise typer.BadParameter(f"{path} has no corpus file", param_hint="PATH")
    settings = settings_from(backend=backend, data_dir=data_dir, model=model, runtime=runtime)
    be = open_backend(settings)
    if recreate:
        be.delete_index(index, missing_ok=True)
    report = ingest(col.source_records(), encoder=load_encoder(settings), backend=be,
                    index=index, options=IngestOptions(batching=Batching(batch_size=batch_size)),
                    progress=True, total=len(col.corpus))
    first_error = ": ".join(report.failures[0]) if report.failed else None
    typer.echo(f"indexed {report.indexed} passages into {index!r} ({report.failed} failed)"
               + (f"; first failure {first_error}" if first_error else ""))
    if report.failed and not report.indexed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# evaluate


def evaluate_command(
    path: str = typer.Argument(..., help=_DIR_HELP),
    index: str | None = typer.Option(None, "--index", "-i",
                                        help="Existing index to search through the client. "
                                             "Without it the corpus is indexed into a temporary "
                                             "embedded index."),
    view: str = typer.Option("both", help="raw (whole conversation), rewrite, or both."),
    compare_bm25: bool = typer.Option(True, "--bm25/--no-bm25",
                                      help="Add the BM25 rows (raw and rewrite) with bm25s."),
    k: int = typer.Option(100, min=10, help="Hits per turn (Recall@100 needs 100)."),
    model: Model = None, runtime: Runtime = None, backend: BackendName = None,
    data_dir: DataDir = None,
    limit: int | None = typer.Option(None, min=1, help="Evaluate the first N judged turns."),
    flops_docs: int = typer.Option(5000, min=0, help="Passages encoded to estimate p_d for "
                                                     "FLOPS when searching an existing index "
                                                     "(0 = skip FLOPS)."),
    out: Path | None = typer.Option(None, help="Write <out>.json and <out>.md."),
    bm25_only: bool = typer.Option(False, help="Only the BM25 rows (no model needed)."),
) -> None:
    """MRR@10, nDCG@3, Recall@10/100, FLOPS, term counts and latency on a collection.

    With --index every judged turn goes through `ConversationalSearch` against that index;
    without it the corpus is encoded once into a temporary embedded index. BM25 rows (bm25s)
    on the concatenated conversation and on the rewrite are added for comparison.
    """
    from convsparse.evaluation import harness as ev
    from convsparse.evaluation.flops import TermStats
    from convsparse.evaluation.report import EvaluationReport

    if view not in ("raw", "rewrite", "both"):
        raise typer.BadParameter("view must be raw, rewrite or both", param_hint="--view")
    col = _collection(path, limit)
    views = ["raw", "rewrite"] if view == "both" else [view]
    if not any(c.rewrite for c in col.conversations):
        views = [v for v in views if v == "raw"]
    encoder = None
    if not bm25_only:
        encoder = load_encoder(settings_from(backend=backend, data_dir=data_dir, model=model, runtime=runtime))
    if index is None or bm25_only:
        report = ev.compare(col, encoder=encoder, k=k, progress=True)
        if not compare_bm25 and encoder is not None:
            report.results = [r for r in report.results if not r.system.startswith("BM25")]
        report.results = [r for r in report.results if r.view in views]
    else:
        from convsparse.integration.client import ConversationalSearch

        settings = settings_from(backend=backend, data_dir=data_dir, model=model, runtime=runtime)
        be = open_backend(settings)
        client = ConversationalSearch(index, encoder=encoder, backend=be)
        doc_stats = None
        if flops_docs and col.corpus:
            passages = list(col.corpus.values())[:flops_docs]
            batch = encoder.encode_documents([p.encoded_text for p in passages], progress=True)
            doc_stats = TermStats.from_term_maps(batch.term_maps)
        results = []
        if compare_bm25:
            bm25 = ev.BM25Baseline(col)
            results += [bm25.evaluate(col, v, k=k) for v in views]
        results += [ev.evaluate_client(client, col, v, k=k, doc_stats=doc_stats,
                                       name=f"student ({index})") for v in views]
        report = EvaluationReport(col.name, len(col.corpus), results,
                                     config={"index": index, "k": k, "backend": type(be).__name__})
    _print_table(_report_rows(report), f"{report.collection}: {len(col.judged_conversations)} "
                                       "judged turns")
    if out is not None:
        js, md = report.save(out)
        typer.echo(f"wrote {js} and {md}")


# ---------------------------------------------------------------------------------------------
# tune


def tune_command(
    path: str = typer.Argument(..., help=_DIR_HELP + " Conversations (and qrels) are used."),
    index: str = typer.Option(..., "--index", "-i", help="Index to search."),
    k: int = typer.Option(10, min=1, help="Recall@k cut-off."),
    kinds: str = typer.Option("top_k,max_ratio,min_weight,alpha_mass",
                              help="Comma-separated pruning kinds to sweep."),
    top_k: str | None = typer.Option(None, help="Thresholds for top_k, e.g. 8,16,32."),
    max_ratio: str | None = typer.Option(None, help="Thresholds for max_ratio."),
    min_weight: str | None = typer.Option(None, help="Thresholds for min_weight "
                                                        "(default: query weight quantiles)."),
    alpha_mass: str | None = typer.Option(None, help="Thresholds for alpha_mass."),
    budget_ms: float | None = typer.Option(None, help="Latency budget per search."),
    max_recall_drop: float | None = typer.Option(None, help="Largest acceptable drop of "
                                                               "recall@k vs unpruned (0.02 = 2%)."),
    target_recall: float | None = typer.Option(None, help="Recommend the fastest setting (pruning "
                                                             "or ANN) with recall@k vs exact >= this."),
    ann: bool | None = typer.Option(None, "--ann/--no-ann", help="Sweep the ANN knobs (default: "
                                    "when `convsparse index build-ann` was run for the index)."),
    latency_stat: str = typer.Option("p50", help="p50, p95 or mean: the latency the budget "
                                                 "and the frontier use."),
    rerank: str | None = typer.Option(None, "--rerank", help="Also sweep the re-rank depth with "
                                      "this re-ranker folder (`default`: the shipped one)."),
    rerank_depths: str = typer.Option("10,20,50", help="Re-rank depths to sweep with --rerank."),
    warmup: int = typer.Option(1, min=0), repeats: int = typer.Option(3, min=1),
    view: str = typer.Option("raw", help="raw (whole conversation) or rewrite."),
    limit: int | None = typer.Option(None, min=1, help="Use the first N turns."),
    model: Model = None, runtime: Runtime = None, backend: BackendName = None,
    data_dir: DataDir = None,
    out: Path | None = typer.Option(None, help="Write <out>.json, <out>.md and <out>.png."),
) -> None:
    """Sweep query pruning thresholds: latency p50/p95, recall@k vs unpruned and vs qrels,
    FLOPS; plot latency vs recall with the Pareto frontier and recommend a PruningPolicy."""
    from convsparse.evaluation.flops import TermStats
    from convsparse.evaluation.harness import tasks_for
    from convsparse.evaluation.tuning import PruningTuner

    if view not in ("raw", "rewrite"):
        raise typer.BadParameter("view must be raw or rewrite", param_hint="--view")
    col = _collection(path)
    tasks = tasks_for(col, view, judged_only=bool(col.qrels))  # type: ignore[arg-type]
    tasks = tasks[:limit] if limit else tasks
    if not tasks:
        raise typer.BadParameter(f"{path} has no conversations for the {view!r} view")
    settings = settings_from(backend=backend, data_dir=data_dir, model=model, runtime=runtime)
    be = open_backend(settings)
    be.describe_index(index)  # IndexNotFoundError before the model loads
    encoder = load_encoder(settings)
    doc_stats = None
    if col.corpus:
        passages = list(col.corpus.values())[:5000]
        batch = encoder.encode_documents([p.encoded_text for p in passages], progress=True)
        doc_stats = TermStats.from_term_maps(batch.term_maps)
    reranker = None
    if rerank is not None:
        from convsparse.reranking import load_reranker

        reranker = load_reranker(rerank, runtime=settings.runtime)
    tuner = PruningTuner(be, index, encoder, tasks, qrels=col.qrels or None, k=k, warmup=warmup,
                         repeats=repeats, view=view, doc_stats=doc_stats,
                         latency_stat=latency_stat, reranker=reranker,
                         rerank_depths=[int(d) for d in _floats(rerank_depths) or []])
    grid = tuner.default_grid()
    for kind, text in (("top_k", top_k), ("max_ratio", max_ratio), ("min_weight", min_weight),
                       ("alpha_mass", alpha_mass)):
        if text is not None:
            grid[kind] = _floats(text) or []
    from convsparse.evaluation.tuning import DEFAULT_ANN_GRID

    result = tuner.run(grid, kinds=[x.strip() for x in kinds.split(",") if x.strip()],
                       ann=None if ann is None else (DEFAULT_ANN_GRID if ann else ()))
    if target_recall is not None and max_recall_drop is not None:
        raise typer.BadParameter("give --max-recall-drop or --target-recall, not both")
    rec = result.recommend(budget_ms=budget_ms, max_recall_drop=max_recall_drop,
                           target_recall=target_recall)
    _print_table(result.rows(), f"pruning sweep: {result.n_queries} turns, index {index!r}, "
                                f"k={k}")
    if result.config.get("ann_unusable"):
        typer.echo(f"ANN unusable: {result.config['ann_unusable']}")
    typer.echo(f"Recommendation: {rec.reason}")
    if rec.point is not None and rec.point.ann is not None:
        typer.echo("Paste into code:\n\n    from convsparse.integration.backends.embedded import AnnQuery\n"
                   f"    hits = backend.search(index, query, k, approximate={rec.point.policy_code()})\n")
    elif rec.point is not None:
        typer.echo("Paste into code:\n\n    from convsparse.pruning import PruningPolicy\n    "
                   f"pruning = {rec.point.policy_code()}\n")
    if out is not None:
        paths = result.save(out, rec)
        typer.echo("wrote " + ", ".join(str(p) for p in paths))


def register(app: typer.Typer) -> None:
    """Add `collection`, `evaluate` and `tune` to the top-level app."""
    group = typer.Typer(help="Conversational retrieval collections (corpus, conversations, "
                             "qrels): inspect them and index their corpus.", no_args_is_help=True)
    group.command("show")(collection_show)
    group.command("index")(collection_index)
    app.add_typer(group, name="collection")
    app.command("evaluate")(evaluate_command)
    app.command("tune")(tune_command)


__all__ = ["register"]
