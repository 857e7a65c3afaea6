"""The encoder command group: `convsparse encode` and `convsparse export`.

Heavy imports (torch, onnxruntime) happen inside the command bodies so `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from convsparse.cli.options import (
    Device,
    IdField,
    Model,
    Runtime,
    SourceFormatOption,
    TextField,
    settings_from,
)
from convsparse.sources import DEFAULT_ID_FIELD, DEFAULT_TEXT_FIELD


def export(
    model: str | None = typer.Argument(None, help="Student folder or hub id (default: the shipped student)."),
    out: Path = typer.Option(..., "--out", help="A .onnx file, or a folder (graph + tokenizer + metadata)."),
    fp16: bool = typer.Option(False, "--fp16", help="float16 graph (for the CUDA execution provider)."),
    top_k: int | None = typer.Option(None, "--top-k", min=1, help="Output only the k heaviest terms."),
    max_length: int | None = typer.Option(None, "--max-length", min=8),
) -> None:
    """Export a student (masked-LM + SPLADE pooling) to ONNX."""
    from convsparse.encoders.export import export_student

    report = export_student(model, out, fp16=fp16, top_k=top_k, max_length=max_length)
    typer.echo(json.dumps(report.to_json(), indent=2))


def encode(
    documents: Path | None = typer.Option(None, "--documents", exists=True, dir_okay=False,
                                             help="A document file as `convsparse ingest` reads "
                                                  "it: JSONL, CSV/TSV or Parquet."),
    conversation: Path | None = typer.Option(None, "--conversation", exists=True, dir_okay=False,
                                                help="A conversation file: .json (one conversation "
                                                     "or a list of them) or .jsonl (one a line)."),
    format: SourceFormatOption = None, id_field: IdField = DEFAULT_ID_FIELD,
    text_field: TextField = DEFAULT_TEXT_FIELD,
    model: Model = None, runtime: Runtime = None, device: Device = None,
    top: int | None = typer.Option(None, "--top", min=1, help="Keep only the top N terms in the output."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON here (default: stdout)."),
) -> None:
    """Encode documents or conversations into term maps (JSON).

    Every document and conversation is checked before the model loads; the first bad one is
    an error (exit 2) naming the file, the line and the reason."""
    from convsparse.compose import load_encoder
    from convsparse.conversation_files import read_conversation_file
    from convsparse.sources import check_format, read_documents

    if (documents is None) == (conversation is None):
        raise typer.BadParameter("pass exactly one of --documents or --conversation")
    if documents is not None:
        records = read_documents(documents, id_field=id_field, text_field=text_field,
                                 format=check_format(format))
        ids = [r.id for r in records]
    else:
        convs = read_conversation_file(conversation)
        ids = [c.id for c in convs]
    settings = settings_from(model=model, runtime=runtime, device=device)
    student = load_encoder(settings)
    if documents is not None:
        batch = student.encode_documents([r.encoded_text for r in records], ids=ids)
    else:
        batch = student.encode_conversations([c.turns for c in convs], ids=ids)
    payload = {
        "fingerprint": batch.fingerprint,
        "runtime": student.runtime,
        "term_maps": [
            {"id": rid, "terms": dict(tm.top(top)) if top else tm.to_dict()}
            for rid, tm in zip(ids, batch.term_maps)
        ],
    }
    text = json.dumps(payload, ensure_ascii=False, indent=1)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote {len(ids)} term maps to {out}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("encode")(encode)
