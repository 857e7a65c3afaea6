"""The encoder command group: `convsparse encode` and `convsparse export`.

Heavy imports (torch, onnxruntime) happen inside the command bodies so `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from convsparse.cli.options import Device, Model, Runtime, settings_from


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


def _read_documents(path: Path) -> tuple[list[str], list[str]]:
    """JSONL ({"id", "text"[, "title"]}, encoded as `document_text` says) or plain text (one
    document a line)."""
    from convsparse.documents import document_text

    ids, texts = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix in (".jsonl", ".json") and line.lstrip().startswith("{"):
            rec = json.loads(line)
            text = document_text(rec.get("title"), str(rec.get("text") or ""))
            ids.append(str(rec.get("id", n)))
            texts.append(text)
        else:
            ids.append(str(n))
            texts.append(line)
    return ids, texts


def _read_conversations(path: Path) -> tuple[list[str], list]:
    """A conversation ([{role, text}, ...] or {"id", "turns"}), a list of them, or JSONL."""
    raw = path.read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in raw.splitlines() if line.strip()]
    if isinstance(data, dict) or (isinstance(data, list) and data and isinstance(data[0], dict)
                                  and "role" in data[0]):
        data = [data]
    ids = [str(c.get("id", i)) if isinstance(c, dict) else str(i) for i, c in enumerate(data)]
    return ids, data


def encode(
    documents: Path | None = typer.Option(None, "--documents", exists=True, dir_okay=False,
                                             help="JSONL {id, text} or a text file (one a line)."),
    conversation: Path | None = typer.Option(None, "--conversation", exists=True, dir_okay=False,
                                                help="A conversation JSON (or a list / JSONL of them)."),
    model: Model = None, runtime: Runtime = None, device: Device = None,
    top: int | None = typer.Option(None, "--top", min=1, help="Keep only the top N terms in the output."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON here (default: stdout)."),
) -> None:
    """Encode documents or conversations into term maps (JSON)."""
    from convsparse.compose import load_encoder
    from convsparse.errors import InvalidConversationError

    if (documents is None) == (conversation is None):
        raise typer.BadParameter("pass exactly one of --documents or --conversation")
    settings = settings_from(model=model, runtime=runtime, device=device)
    student = load_encoder(settings)
    try:
        if documents is not None:
            ids, texts = _read_documents(documents)
            batch = student.encode_documents(texts, ids=ids)
        else:
            ids, convs = _read_conversations(conversation)
            batch = student.encode_conversations(convs, ids=ids)
    except InvalidConversationError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
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
