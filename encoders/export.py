"""Export a student to a self-contained ONNX folder (or a single .onnx file).

A folder gets ``model.onnx``, the tokenizer files and ``convsparse_encoder.json`` (fingerprint,
max length, pooling, precision, output form), which is what a service needs to run the
encoder without PyTorch, and, for a float32 export, ``query-int8.onnx``: the int8 graph that
encodes conversations on a CPU (`encoders/query_graph.py`). The export itself is
`onnx_runtime.export_onnx` (pooling inside the graph, dynamic batch and sequence axes), reused
from the fingerprint cache when present.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

METADATA_NAME = "convsparse_encoder.json"


@dataclass(frozen=True)
class ExportReport:
    onnx_path: Path
    fingerprint: str
    max_length: int
    fp16: bool
    top_k: int | None
    source: str
    vocabulary_name: str = ""
    #: the int8 query graph's file name in the folder (`encoders/query_graph.py`), or None
    query_int8: str | None = None

    def to_json(self) -> dict[str, object]:
        from convsparse.encoders.onnx_runtime import GRAPH_VERSION

        out = asdict(self)
        out["onnx_path"] = str(self.onnx_path)
        # literal, not imported: the pooling module needs torch, and reading an export must not
        out["pooling"] = "splade-max-log1p-relu"
        out["graph_version"] = GRAPH_VERSION
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
    from convsparse.encoders.query_graph import QUERY_INT8, build_query_int8

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
    query_int8 = None
    if out.suffix != ".onnx" and not fp16 and not top_k:  # a folder of the float32 graph
        build_query_int8(cached, out / QUERY_INT8)
        query_int8 = QUERY_INT8
    report = ExportReport(target, fingerprint, student.max_length, fp16, top_k,
                          getattr(student, "source", str(model)), student.vocabulary_name,
                          query_int8)
    meta_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report


def write_prebuilt_export(name: str = "splade-tiny") -> Path:
    """(Re)build the ONNX export the package ships inside base model `name`'s folder
    (``<folder>/onnx``), which `load_student` runs without torch. Run it after changing the
    weights, the graph (`onnx_runtime.GRAPH_VERSION`) or the fingerprint rule; the tests check
    that the shipped export still matches the PyTorch student:
    ``python -c "from convsparse.encoders.export import write_prebuilt_export as w; w()"``."""
    from convsparse.encoders.base_models import base_model_dir
    from convsparse.encoders.loading import PREBUILT_EXPORT

    folder = base_model_dir(name) / PREBUILT_EXPORT
    shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as cache:  # a fresh export, never a stale cached one
        report = export_student(base_model_dir(name), folder, cache_dir=cache)
    meta = report.to_json() | {"onnx_path": "model.onnx", "source": name}
    (folder / METADATA_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder
