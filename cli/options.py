"""Options every command group shares, declared once (`Annotated`), and the two helpers all
commands use: `settings_from` (options over `CONVSPARSE_*`) and `fail` (a red message, an exit
code)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convsparse.settings import Settings, get_settings

Model = Annotated[str | None, typer.Option(
    "--model", help="Student folder or hub id (default: CONVSPARSE_MODEL, else the shipped student).")]
Runtime = Annotated[str | None, typer.Option(
    "--runtime", help="torch or onnx (default: CONVSPARSE_RUNTIME).")]
Device = Annotated[str | None, typer.Option(
    "--device", help="cpu, cuda or auto (default: CONVSPARSE_DEVICE).")]
BackendName = Annotated[str | None, typer.Option(
    "--backend", help="embedded, opensearch or elasticsearch (default: CONVSPARSE_BACKEND).")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Embedded backend folder (default: CONVSPARSE_DATA_DIR).")]

SourceFormatOption = Annotated[str | None, typer.Option(
    "--format", help="jsonl, csv, tsv or parquet (default: from the suffix).")]
IdField = Annotated[str, typer.Option(
    "--id-field", help="The field holding each document's id.")]
TextField = Annotated[str, typer.Option(
    "--text-field", help="The field holding each document's text.")]


def settings_from(**options: object) -> Settings:
    """`Settings` from the environment, with every option the user passed (not None) on top."""
    return get_settings(**options)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` in red on stderr; return the `typer.Exit` to raise."""
    from rich.console import Console
    from rich.markup import escape

    from convsparse.redaction import mask_secrets
    from convsparse.terminal import printable

    Console(stderr=True).print(f"[bold red]error:[/] {escape(printable(mask_secrets(message)))}",
                               highlight=False)
    return typer.Exit(code)


__all__ = ["BackendName", "DataDir", "Device", "IdField", "Model", "Runtime", "SourceFormatOption", "TextField",
           "fail", "settings_from"]
