"""The `convsparse` command line. Each part of the library registers its own commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="convsparse",
    help="Conversational learned-sparse search: encode, index, search, tune, distil.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command()
def version() -> None:
    """Print the convsparse version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("convsparse"))


def _register_all() -> None:
    # Each area owns its commands; imports inside the command bodies keep `--help` fast.
    from convsparse.cli.encode import register as register_encoders
    from convsparse.cli.distill import register as register_distill
    from convsparse.cli.index import register as register_integration
    from convsparse.cli.evaluation import register as register_evaluation
    from convsparse.cli.workers import register as register_workers

    register_encoders(app)
    register_distill(app)
    register_integration(app)
    register_evaluation(app)
    register_workers(app)


_register_all()

if __name__ == "__main__":
    app()
