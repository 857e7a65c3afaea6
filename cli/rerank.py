"""The re-ranker command group: `convsparse rerank train CONFIG` and
`convsparse rerank vectors FOLDER SOURCE` (store the passages' bi-encoder vectors beside the
re-ranker, so that queries never wait for them).

Searching with a re-ranker is `convsparse search --rerank FOLDER` (cli/search.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

#: the recipe file shipped beside the default re-ranker
RECIPE_FILE = "recipe.yaml"
#: passages embedded between progress updates
STEP = 64


def rerank_train(
    config: Path = typer.Argument(..., help="YAML or JSON RerankConfig (collection, "
                                  "output_dir, ...); `default`: the shipped re-ranker's recipe"),
    collection: Path | None = typer.Option(None, help="the collection to train on (replaces "
                                           "the config's)"),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="where the run is "
                                           "written (replaces the config's)"),
    epochs: int | None = typer.Option(None, help="override the config's epochs"),
    no_resume: bool = typer.Option(False, "--no-resume", help="ignore an existing checkpoint"),
) -> None:
    """Distil a re-ranker (semantic part + Term Control Layer) from the teacher's scores over
    the first stage's candidates; writes <output_dir>/reranker. The shipped one is
    `convsparse rerank train default --collection mtrag-pooled --output-dir runs/rr`."""
    from convsparse.reranking.reranker import DEFAULT_FOLDER
    from convsparse.reranking.training import train_reranker
    from convsparse.training.config import RerankConfig

    if str(config) == "default":
        config = DEFAULT_FOLDER / RECIPE_FILE
    overrides = {k: str(v.resolve()) for k, v in (("collection", collection),
                                                  ("output_dir", output_dir)) if v is not None}
    try:
        cfg = RerankConfig.from_file(config, overrides)
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


def rerank_vectors(
    folder: Path = typer.Argument(..., help="re-ranker folder (convsparse rerank train)"),
    source: Path = typer.Argument(..., help="the indexed documents: JSONL, CSV, TSV or Parquet"),
    id_field: str = typer.Option("id", help="id column/key"),
    text_field: str = typer.Option("text", help="text column/key"),
    batch: int = typer.Option(2048, min=1, help="passages embedded between saves"),
) -> None:
    """Embed the documents of SOURCE with the re-ranker's bi-encoder into its folder
    (passage_vectors.safetensors), and their windows when the re-ranker reads them. Vectors
    are kept by a digest of the text the re-ranker reads (title and text), so re-running after
    an edit embeds only what changed; a passage met without a vector is embedded at query
    time (slow). Bad records are reported and skipped."""
    from tqdm.auto import tqdm

    from convsparse.documents import document_text
    from convsparse.errors import UnsupportedModelError
    from convsparse.integration.sources import RecordError, read_records
    from convsparse.reranking import load_reranker
    from convsparse.reranking.semantic import VECTORS_FILE

    try:
        rr = load_reranker(folder)
    except UnsupportedModelError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    if rr.semantic is None:
        typer.echo(f"{folder}: this re-ranker reads no semantic features; nothing to store",
                   err=True)
        raise typer.Exit(2)
    new = bad = 0
    pending: list[str] = []
    # a first pass counts the records (reading is cheap next to embedding), so that the bar
    # has a total and an estimate; it advances as passages are embedded, not as they are read
    total = sum(1 for _ in read_records(source, id_field=id_field, text_field=text_field))
    bar = tqdm(total=total, desc="embedding passages", unit="doc")

    def flush() -> None:
        nonlocal new
        for s in range(0, len(pending), STEP):
            new += rr.semantic.add(pending[s:s + STEP])
            bar.update(len(pending[s:s + STEP]))
        rr.semantic.save_vectors(folder / VECTORS_FILE)  # a killed run keeps what it embedded
        pending.clear()

    for rec in read_records(source, id_field=id_field, text_field=text_field):
        if isinstance(rec, RecordError):
            bad += 1
            bar.update(1)
            bar.write(f"skipped {rec.where}: {rec.reason}", file=sys.stderr)
            continue
        pending.append(document_text(rec.fields.get("title"), rec.text))
        if len(pending) >= batch:
            flush()
    flush()
    bar.close()
    windows = rr.semantic.window
    typer.echo(f"{new} passages embedded"
               + (f" (whole and in windows of {windows} word pieces)" if windows else "")
               + f", {len(rr.semantic)} stored in {folder / VECTORS_FILE}"
               + (f", {bad} bad records skipped" if bad else ""))


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Train the optional second stage (a distilled re-ranker).",
                        no_args_is_help=True)
    group.command("train")(rerank_train)
    group.command("vectors")(rerank_vectors)
    app.add_typer(group, name="rerank")
