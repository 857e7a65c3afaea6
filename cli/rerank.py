"""The re-ranker command group: `convsparse rerank train CONFIG`.

Searching with a re-ranker is `convsparse search --rerank FOLDER` (cli/search.py)."""

from __future__ import annotations

from pathlib import Path

import typer


def rerank_train(
    config: Path = typer.Argument(..., help="YAML or JSON RerankConfig (collection, "
                                  "output_dir, ...)"),
    epochs: int | None = typer.Option(None, help="override the config's epochs"),
    no_resume: bool = typer.Option(False, "--no-resume", help="ignore an existing checkpoint"),
) -> None:
    """Distil a re-ranker (cross-encoder + Term Control Layer) from the teacher's scores over
    the first stage's candidates; writes <output_dir>/reranker."""
    from convsparse.reranking.training import train_reranker
    from convsparse.training.config import RerankConfig

    try:
        cfg = RerankConfig.from_file(config)
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    updates: dict = {}
    if epochs is not None:
        updates["epochs"] = epochs
    if no_resume:
        updates["resume"] = False
    out = train_reranker(cfg.model_copy(update=updates), log=typer.echo)
    typer.echo(f"re-ranker written to {out} (convsparse search --rerank {out})")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Train the optional second stage (a distilled re-ranker).",
                        no_args_is_help=True)
    group.command("train")(rerank_train)
    app.add_typer(group, name="rerank")
