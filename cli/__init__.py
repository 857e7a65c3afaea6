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
| `generate` | `rewrite`, `augment` (the LLM teacher's data) |
| `workers` | `worker`, `jobs status / retry` |

Shared options (`--model`, `--runtime`, `--device`, `--backend`, `--data-dir`) are declared once
in `options`; every command builds its encoder and backend through `convsparse.compose`.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer.core import TyperGroup

HELP = ("Conversational learned-sparse search: encode, index, search, tune, distil.\n\n"
        "Exit codes: 0 success; 1 a runtime error (missing index, another encoder's index, Redis "
        "or worker not there, disk full) or, for ingest, any record that failed (--allow-failures "
        "accepts a partial ingest); 2 a usage error (argument, option, path or conversation).\n\n"
        "Errors are one line with the fix; --debug (or CONVSPARSE_DEBUG=1) shows the traceback.")


class ConvsparseGroup(TyperGroup):
    """The root group: every command runs inside `invoke`, so an expected error becomes one
    line and an exit code here (`cli/errors.py`), whichever command raised it."""

    def make_context(self, info_name, args, parent=None, **extra):
        """The root's own options (`convsparse --bogus`): a usage error is one line too."""
        from convsparse.cli.errors import click_error_kind, print_error, usage_error_line

        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as e:
            if click_error_kind(e) != "usage":
                raise
            print_error(usage_error_line(e))
            raise typer.Exit(e.exit_code) from None

    def invoke(self, ctx):
        from convsparse.cli.errors import debug_enabled, describe, print_error

        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            import click

            from convsparse.cli.errors import click_error_kind, usage_error_line

            if click_error_kind(e) == "usage":
                print_error(usage_error_line(e))  # one line, not a box
                raise typer.Exit(e.exit_code) from None
            if click_error_kind(e) or isinstance(e, click.exceptions.ClickException) or \
                    debug_enabled() or \
                    ctx.meta.get("convsparse.debug"):
                raise
            described = describe(e)
            if described is None:
                raise
            message, code = described
            print_error(message)
            raise typer.Exit(code) from None



class _MaskingTyper(typer.Typer):
    """The top-level app: an uncaught error is printed with credentials masked (a Redis or
    OpenSearch URL can carry a password) and control characters escaped, then exit 1."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            from convsparse.redaction import mask_secrets
            from convsparse.terminal import printable

            text = "".join(traceback.format_exception(e))
            sys.stderr.write(printable(mask_secrets(text), newlines=True))
            sys.stderr.write(f"error: {printable(mask_secrets(f'{type(e).__name__}: {e}'))}\n")
            sys.exit(1)


app = _MaskingTyper(
    name="convsparse",
    cls=ConvsparseGroup,
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug",
                                     help="Show the traceback of an error (or CONVSPARSE_DEBUG=1).")) -> None:
    ctx.meta["convsparse.debug"] = debug  # read by ConvsparseGroup.invoke (not the environment:
    # an in-process caller, e.g. a test runner, keeps its own)


def version() -> None:
    """Print the convsparse version."""
    import convsparse

    typer.echo(convsparse.__version__)


app.command("version")(version)

from convsparse.cli import (  # noqa: E402  (the groups register on `app`, defined above)
    distill,
    encode,
    evaluation,
    generate,
    index,
    ingest,
    mlcommons,
    quickstart,
    rerank,
    search,
    workers,
)

# One registration style: every command is a plain function, and every command-group module
# has `register(app)`, which adds its commands (`app.command(name)(function)`) and builds its
# sub-apps the same way (`group.command(name)(function)`, then `app.add_typer(group, ...)`).
# Heavy imports stay inside the command bodies, so `--help` is fast.
for _group in (encode, index, ingest, search, quickstart, evaluation, distill, rerank, generate,
               workers, mlcommons):
    _group.register(app)

from convsparse.redaction import install_log_masking  # noqa: E402

install_log_masking()  # no log line of any command may show a password

if __name__ == "__main__":
    app()
