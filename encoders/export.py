"""Export a student to a self-contained ONNX folder (or a single .onnx file).

A folder gets ``model.onnx``, the tokenizer files and ``convsparse_encoder.json`` (fingerprint,
max length, pooling, precision, output form), which is what a service needs to run the
encoder without PyTorch. The export itself is `onnx_runtime.export_onnx` (pooling inside the
graph, dynamic batch and sequence axes), reused from the fingerprint cache when present.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from convsparse.encoders.pooling import POOLING_NAME

METADATA_NAME = "convsparse_encoder.json"


@dataclass(frozen=True)
class ExportReport:
    onnx_path: Path
    fingerprint: str
    max_length: int
    fp16: bool
    top_k: int | None
    source: str

    def to_json(self) -> dict:
        out = asdict(self)
        out["onnx_path"] = str(self.onnx_path)
        out["pooling"] = POOLING_NAME
        return out


def export_student(
    model: str | Path | None, out: str | Path, *, fp16: bool = False, top_k: int | None = None,
    max_length: int | None = None, cache_dir: str | Path | None = None,
) -> ExportReport:
    """Export `model` (anything `load_student` accepts; None = the default student) to `out`:
    a path ending in ``.onnx`` gets the graph alone (plus ``<out>.json`` metadata), any other
    path becomes a folder with the graph, the tokenizer and the metadata."""
    from convsparse.encoders.loading import load_student
    from convsparse.encoders.onnx_runtime import export_onnx, onnx_cache_path

    student = load_student(model, runtime="torch", device="cpu", max_length=max_length)
    fingerprint = student.fingerprint
    cached = onnx_cache_path(fingerprint, fp16=fp16, top_k=top_k, cache_dir=cache_dir)
    if not cached.exists():
        export_onnx(student.model, cached, vocab_size=len(student.vocabulary), fp16=fp16, top_k=top_k)
    out = Path(out)
    if out.suffix == ".onnx":
        out.parent.mkdir(parents=True, exist_ok=True)
        target, meta_path = out, out.with_suffix(".json")
    else:
        out.mkdir(parents=True, exist_ok=True)
        target, meta_path = out / "model.onnx", out / METADATA_NAME
        student.tokenizer.save_pretrained(out)
    shutil.copyfile(cached, target)
    report = ExportReport(target, fingerprint, student.max_length, fp16, top_k,
                          getattr(student, "source", str(model)))
    meta_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report
