"""The re-ranker command group: `convsparse rerank train CONFIG` and
`convsparse rerank vectors INDEX` (the backfill: store the re-ranker's passage vectors in an
index built without them, so that queries never wait for them).

Searching with a re-ranker is `convsparse search --rerank FOLDER` (cli/search.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from convsparse.cli.options import BackendName, DataDir, settings_from
from convsparse.errors import UsageError

#: the recipe file shipped beside the default re-ranker
RECIPE_FILE = "recipe.yaml"


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
    from convsparse.reranking.config import RerankConfig
    from convsparse.reranking.reranker import DEFAULT_FOLDER
    from convsparse.reranking.training import train_reranker

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
    index: str = typer.Argument(..., help="the index whose passages to embed"),
    extra: list[str] = typer.Argument(None, hidden=True),
    rerank: Path | None = typer.Option(None, "--rerank", help="a re-ranker folder whose "
                                       "bi-encoder to use (default: the shipped re-ranker's)"),
    replace: bool = typer.Option(False, "--replace", help="the index holds another "
                                 "bi-encoder's vectors: drop them and embed every passage"),
    batch: int = typer.Option(256, min=1, help="passages embedded and stored per write"),
    show_failures: int = typer.Option(10, "--show-failures", help="failed documents to print"),
    data_dir: DataDir = None, backend: BackendName = None,
) -> None:
    """Backfill: store the re-ranker's passage vectors in INDEX for every document that lacks
    them (an index built before vectors, or with --no-rerank-vectors) or whose text changed
    since. New documents get theirs at ingestion. Safe to stop and re-run: it resumes with what
    is left. A document that cannot be embedded is reported and the rest go on."""
    from convsparse.compose import open_backend
    from convsparse.integration.backends.base import SupportsPassageVectors
    from convsparse.integration.vectors import PassageEmbedder, load_embedder
    from convsparse.progress import progress_bar
    from convsparse.terminal import printable

    if extra:
        raise UsageError(
            "`convsparse rerank vectors` takes an index name now: passage vectors live in the "
            "index, stored with the term maps at ingestion (`convsparse ingest SOURCE --index "
            "NAME`); `convsparse rerank vectors NAME [--rerank FOLDER]` fills in those missing")
    settings = settings_from(data_dir=data_dir, backend=backend)
    be = open_backend(settings)
    be.describe_index(index)  # IndexNotFoundError (exit 1) before any model loads
    if not isinstance(be, SupportsPassageVectors):
        raise UsageError(f"the {type(be).__name__} cannot store passage vectors")
    if rerank is not None:
        from convsparse.reranking import load_reranker

        # UnsupportedModelError (exit 2) names the folder
        rr = load_reranker(rerank, runtime=settings.runtime)
        if rr.semantic is None:
            raise UsageError(f"{rerank}: this re-ranker reads no passage vectors")
        embedder = PassageEmbedder(rr.semantic)
    else:
        embedder = load_embedder()
    held = be.vector_spec(index)
    if held != embedder.spec:
        if held is not None and not replace:
            from convsparse.integration.vectors import VectorSpecMismatchError

            raise UsageError(f"{VectorSpecMismatchError(index, held, embedder.spec)}; or "
                             f"--replace to drop them and embed every passage again")
        be.enable_vectors(index, embedder.spec, replace=replace)
    todo = list(be.passages_to_embed(index))
    total = be.count(index)
    typer.echo(f"index {index}: {len(todo)} of {total} passages to embed "
               f"({embedder.spec.describe()})")
    done, failed = 0, []
    with progress_bar(total=len(todo), desc=f"embedding {index}", unit="passage") as bar:
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            items = []
            for doc_id, text in part:
                if not text.strip():
                    failed.append((doc_id, "no stored text to embed"))
                    continue
                items.append((doc_id, text))
            try:
                vecs = embedder.embed([t for _, t in items]) if items else []
            except (ValueError, RuntimeError):  # one bad passage: find it, keep the rest
                vecs = []
                for doc_id, text in list(items):
                    try:
                        vecs.append(embedder.embed([text])[0])
                    except (ValueError, RuntimeError) as e:
                        failed.append((doc_id, f"embedding failed: {e}"))
                        items.remove((doc_id, text))
            for res in be.put_vectors(index, [(d, v) for (d, _), v in zip(items, vecs)]):
                if res.ok:
                    done += 1
                else:
                    failed.append((res.id, res.error or f"status {res.status}"))
            bar.update(len(part))
    typer.echo(f"{done} passages embedded into {index}, {total - len(todo)} already had "
               f"vectors" + (f", {len(failed)} failed" if failed else ""))
    for doc_id, reason in failed[:show_failures]:
        typer.echo(f"  failed {printable(doc_id)}: {printable(reason)}", err=True)
    if len(failed) > show_failures:
        typer.echo(f"  ... {len(failed) - show_failures} more (--show-failures N)", err=True)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Train the optional second stage (a distilled re-ranker).",
                        no_args_is_help=True)
    group.command("train")(rerank_train)
    group.command("vectors")(rerank_vectors)
    app.add_typer(group, name="rerank")
