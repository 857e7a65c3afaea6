"""`convsparse quickstart`: index the bundled sample corpus and answer sample conversations."""

from __future__ import annotations

from pathlib import Path

import typer

from convsparse.cli.options import Model, Runtime, settings_from
from convsparse.cli.search import print_hits
from convsparse.compose import load_encoder


def quickstart(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Keep the index here "
                                         "(default: CONVSPARSE_CACHE_DIR/quickstart, reused "
                                         "while the encoder is the same)."),
    model: Model = None, runtime: Runtime = None,
    k: int = typer.Option(3, "--k", "-k", min=1),
    conversations: int = typer.Option(2, "--conversations", min=1, help="Sample conversations to run."),
    fresh: bool = typer.Option(False, "--fresh", help="Re-index even when a cached index fits."),
) -> None:
    """Index the bundled sample corpus with the default student (term maps and the
    re-ranker's passage vectors) and run sample conversations, re-ranked by the shipped
    re-ranker (the table's footer shows the rerank stage, or why it was skipped).

    The sample index is kept and reused on the next run when it was built by the same encoder
    (same fingerprint) and holds the whole sample corpus; the ONNX export is cached too."""
    import time

    from rich.console import Console
    from rich.markup import escape

    from convsparse.benchmark_collections import sample_collection
    from convsparse.integration.backends.embedded import EmbeddedBackend
    from convsparse.integration.client import ConversationalSearch
    from convsparse.pruning import PruningPolicy
    from convsparse.terminal import printable

    console = Console()
    sample = sample_collection()
    # the multi-turn ones show what conversational search is for: longest context first
    convs = sorted(sample.conversations, key=lambda c: -len(c.turns))
    picked, seen = [], set()
    for c in convs:
        key = c.conversation_id or c.id
        if key not in seen:
            picked.append(c)
            seen.add(key)
    settings = settings_from(backend="embedded", model=model, runtime=runtime)
    data_dir = data_dir if data_dir is not None else Path(settings.cache_dir) / "quickstart"
    t = time.perf_counter()
    encoder = load_encoder(settings)
    console.print(f"loaded student {encoder.fingerprint} in {time.perf_counter() - t:.1f} s")
    backend = EmbeddedBackend(data_dir)
    client = ConversationalSearch("quickstart", encoder=encoder, backend=backend,
                                  pruning=PruningPolicy(top_k=64), rescore_window=20)
    if not fresh and _reusable(backend, encoder, len(sample.corpus)):
        console.print(f"reusing the sample index in {data_dir / 'quickstart'} (same encoder; "
                      f"--fresh re-indexes)")
    else:
        backend.delete_index("quickstart", missing_ok=True)
        report = client.index_documents(sample.source_records(), progress=True)
        console.print(f"indexed {report.indexed} passages into {data_dir / 'quickstart'} "
                      f"in {report.elapsed_s:.1f} s ({report.failed} failed)")
    client.search(list(picked[0].turns), k)  # warm-up (first inference call)
    for conv in picked[:conversations]:
        console.rule(f"conversation {conv.id}")
        for turn in conv.turns:
            console.print(f"[bold]{escape(printable(turn.role))}:[/] "
                          f"{escape(printable(turn.text))}", highlight=False)
        print_hits(client.search(list(conv.turns), k))


def _reusable(backend, encoder, n_docs: int) -> bool:
    from convsparse.errors import IndexNotFoundError

    try:
        info = backend.describe_index("quickstart")
    except IndexNotFoundError:
        return False
    from convsparse.extras import rerank_unavailable
    from convsparse.settings import get_settings

    # an index from before passage vectors is re-built, so the quickstart re-ranks (where this
    # install can: a core install's index holds none)
    holds_vectors = backend.vector_spec("quickstart") is not None
    wants_vectors = get_settings().rerank_vectors and rerank_unavailable() is None
    return (info.fingerprint == encoder.fingerprint and info.count == n_docs
            and holds_vectors == wants_vectors)



def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
