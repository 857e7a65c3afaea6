"""The `convsparse` command line: one typer app, one module per command group.

| module | commands |
|---|---|
| `encode` | `encode`, `export` |
| `index` | `index create / describe / list / delete` |
| `ingest` | `ingest` |
| `search` | `search` |
| `quickstart` | `quickstart` |
| `evaluation` | `collection show / index`, `evaluate`, `tune` |
| `distill` | `distill` |
| `workers` | `worker`, `jobs status / retry` |

Shared options (`--model`, `--runtime`, `--device`, `--backend`, `--data-dir`) are declared once
in `options`; every command builds its encoder and backend through `convsparse.compose`.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="convsparse",
    help="Conversational learned-sparse search: encode, index, search, tune, distil.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def version() -> None:
    """Print the convsparse version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("convsparse"))


app.command("version")(version)

from convsparse.cli import (  # noqa: E402  (the groups register on `app`, defined above)
    distill,
    encode,
    evaluation,
    index,
    ingest,
    quickstart,
    search,
    workers,
)

# One registration style: every command-group module has `register(app)`, which adds its
# commands (`app.command(name)(function)`) or its sub-app (`app.add_typer(group, name=...)`).
# Heavy imports stay inside the command bodies, so `--help` is fast.
for _group in (encode, index, ingest, search, quickstart, evaluation, distill, workers):
    _group.register(app)

if __name__ == "__main__":
    app()
