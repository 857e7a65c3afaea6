"""`load_student`: one entry point for every student checkpoint and runtime.

Accepted sources:

- a Hugging Face masked-LM folder or hub id (``AutoModelForMaskedLM``: BERT, DistilBERT, ...);
- a sentence-transformers ``SparseEncoder`` folder: ``modules.json`` names an MLM transformer
  module (``MLMTransformer``, or ``Transformer`` with ``transformer_task="fill-mask"``) followed
  by ``SpladePooling`` with max pooling and ReLU -> log1p; the masked-LM is loaded from the
  transformer module's sub-folder and our own SPLADE pooling goes on top (same formula);
- a base-model name from `convsparse.encoders.base_models.BASE_MODELS` (``splade-tiny``,
  ``minilm``);
- an anchored-student folder (``anchored.json``: a gate over a named or relative base), loaded
  as `AnchoredStudent` on the same runtime;
- an ONNX export folder (`convsparse export --out FOLDER`), run by ONNX Runtime;
- ``None``: the default model, ``convsparse/models/student/`` (the shipped anchored student
  over SPLADE-tiny; see its MODEL_CARD.md).

On ONNX Runtime, a base folder with a pre-built export beside its weights (``onnx/``, as the
package ships for SPLADE-tiny) is run from that export when the options match it (default max
length and document pruning, float32, no optimizer passes): neither torch nor transformers is
imported. Anything else on ONNX Runtime is exported from PyTorch first (the ``torch`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

from convsparse.encoders.query_graph import DEFAULT_QUERY_PRECISION, QueryPrecision, query_encoder
from convsparse.errors import UnsupportedModelError
from convsparse.pruning import PruningPolicy
from convsparse.settings import DEFAULT_RUNTIME, Runtime

#: the pre-built ONNX export inside a base model's folder
PREBUILT_EXPORT = "onnx"

_MLM_MODULE_TYPES = ("MLMTransformer",)
_TRANSFORMER_MODULE_TYPES = ("Transformer",)


def shipped_student_dir() -> Path:
    """Where the package's distilled student lives (may not exist)."""
    import convsparse

    return Path(convsparse.__file__).parent / "models" / "student"


def default_model_path() -> Path:
    """The shipped student when present, else the SPLADE-tiny base."""
    from convsparse.encoders.anchored import is_anchored_folder
    from convsparse.encoders.base_models import splade_tiny_dir

    shipped = shipped_student_dir()
    if is_anchored_folder(shipped) or (shipped / "config.json").exists():
        return shipped
    return splade_tiny_dir()


def prebuilt_export(source: Path | str, *, max_length: int | None,
                    document_pruning: PruningPolicy | None, fp16: bool, optimize: bool) -> Path | None:
    """The export folder shipped beside `source`'s weights, when it is what `load_student`
    would export with these options (same max length, default document pruning, float32, no
    optimizer passes); else None."""
    if fp16 or optimize or not isinstance(source, Path):
        return None
    from convsparse.encoders.onnx_runtime import GRAPH_VERSION, is_export_folder, read_export_metadata

    folder = source / PREBUILT_EXPORT
    if not is_export_folder(folder):
        return None
    meta = read_export_metadata(folder)
    if document_pruning is not None and document_pruning.describe() != PruningPolicy().describe():
        return None
    if max_length is not None and max_length != meta["max_length"]:
        return None
    if meta.get("graph_version") != GRAPH_VERSION or meta.get("top_k") or meta.get("fp16"):
        return None
    return folder


def _read_json(path: Path) -> dict | list:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_sparse_encoder(folder: str | Path) -> tuple[Path, int | None]:
    """(masked-LM folder, max_seq_length or None) of a sentence-transformers SparseEncoder
    folder. Raises `UnsupportedModelError` when its modules are not MLM + SPLADE max pooling."""
    folder = Path(folder)
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or not modules:
        raise UnsupportedModelError(f"{folder}/modules.json lists no modules")
    kinds = [(m.get("type", "").rsplit(".", 1)[-1], m) for m in sorted(modules, key=lambda m: m.get("idx", 0))]
    names = [k for k, _ in kinds]
    if len(kinds) != 2 or kinds[1][0] != "SpladePooling":
        raise UnsupportedModelError(
            f"{folder}: expected an MLM transformer followed by SpladePooling, got modules {names}"
            " (inference-free / Router / SparseStaticEmbedding models are not SPLADE students)"
        )
    (mlm_kind, mlm_module), (_, pool_module) = kinds
    mlm_dir = folder / mlm_module.get("path", "")
    st_config_path = mlm_dir / "sentence_bert_config.json"
    st_config = _read_json(st_config_path) if st_config_path.exists() else {}
    if mlm_kind not in _MLM_MODULE_TYPES and not (
        mlm_kind in _TRANSFORMER_MODULE_TYPES and st_config.get("transformer_task") == "fill-mask"
    ):
        raise UnsupportedModelError(
            f"{folder}: module 0 is {mlm_kind!r}; a SPLADE student needs a masked-LM transformer "
            "(MLMTransformer or Transformer with transformer_task='fill-mask')"
        )
    pool_cfg_path = folder / pool_module.get("path", "") / "config.json"
    pool_cfg = _read_json(pool_cfg_path) if pool_cfg_path.exists() else {}
    strategy = pool_cfg.get("pooling_strategy", "max")
    activation = pool_cfg.get("activation_function", "relu")
    if strategy != "max" or activation != "relu":
        raise UnsupportedModelError(
            f"{folder}: SpladePooling is pooling_strategy={strategy!r}, "
            f"activation_function={activation!r}; convsparse runs max pooling of log1p(relu(x)) only"
        )
    return mlm_dir, st_config.get("max_seq_length")


def _local_or_snapshot(name_or_path: str | Path) -> Path | str:
    """A local folder stays a Path; a hub id stays a string unless it is a SparseEncoder repo
    available locally (then its snapshot folder, so modules.json can be read)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    name = str(name_or_path)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        hf_hub_download(name, "modules.json")
        return Path(snapshot_download(name))
    except Exception:
        return name


def load_student(
    name_or_path: str | Path | None = None,
    *,
    runtime: Runtime = DEFAULT_RUNTIME,
    device: str = "auto",
    max_length: int | None = None,
    document_pruning: PruningPolicy | None = None,
    fp16: bool = False,
    cache_dir: str | Path | None = None,
    dtype: str = "auto",
    compile: bool = False,
    onnx_optimize: bool = False,
    onnx_int8: bool = False,
    query_precision: QueryPrecision = DEFAULT_QUERY_PRECISION,
):
    """Load a student encoder (a `StudentEncoderBase`).

    ``runtime`` defaults to ``"onnx"`` (`convsparse.settings.DEFAULT_RUNTIME`, also the default
    of `Settings.runtime` and so of `compose.load_encoder`); ``"torch"`` for a trainable model.
    ``runtime="onnx"`` exports the PyTorch model once (cached by fingerprint under
    ``Settings().cache_dir/onnx``) and runs it with ONNX Runtime; ``fp16`` applies to ONNX on
    CUDA (and to the PyTorch runtime on CUDA). The fingerprint is the same for both runtimes.

    PyTorch: ``dtype="auto"`` runs bfloat16 on CUDA and float32 on CPU (``fp16=True`` on CUDA
    means float16); ``compile=True`` wraps forward + pooling in ``torch.compile``. ONNX Runtime
    opt-ins (CPU): ``onnx_optimize`` runs ONNX Runtime's transformer optimizer on the export,
    ``onnx_int8`` adds int8 dynamic quantization (see `encoders/onnx_runtime.py` for the speed
    and ranking-quality numbers).

    ``query_precision`` (anchored students, the shipped one included): ``"int8"`` encodes
    conversations on ONNX Runtime's CPU through the int8 query graph while documents keep the
    float32 one (same fingerprint; `encoders/query_graph.py`); ``"fp32"`` through the float32
    graph, as documents.
    """
    from convsparse.encoders.anchored import AnchoredStudent, GateWeights, is_anchored_folder
    from convsparse.encoders.base_models import BASE_MODELS, base_model_dir
    from convsparse.encoders.onnx_runtime import is_export_folder

    if runtime not in ("torch", "onnx"):
        raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if isinstance(name_or_path, str) and name_or_path in BASE_MODELS:
        name_or_path = base_model_dir(name_or_path)
    source = default_model_path() if name_or_path in (None, "") else _local_or_snapshot(name_or_path)
    if isinstance(source, Path) and is_anchored_folder(source):
        gate, base_ref = GateWeights.load(source)
        base_path = base_ref if base_ref in BASE_MODELS else source / base_ref
        # every option reaches the base, which does all the encoding
        base = load_student(base_path, runtime=runtime, device=device, max_length=max_length,
                            document_pruning=document_pruning, fp16=fp16, cache_dir=cache_dir,
                            dtype=dtype, compile=compile, onnx_optimize=onnx_optimize,
                            onnx_int8=onnx_int8)
        # the optimizer / int8 opt-ins already chose the graph for both sides
        chosen = "fp32" if onnx_optimize or onnx_int8 else query_precision
        return AnchoredStudent(base, gate, source=str(source),
                               query_base=query_encoder(base, chosen, cache_dir=cache_dir))
    if isinstance(source, Path) and is_export_folder(source):
        if runtime != "onnx":
            raise UnsupportedModelError(f"{source} is an ONNX export: run it with runtime 'onnx' "
                                        "(--runtime onnx, CONVSPARSE_RUNTIME=onnx)")
        _check_export_options(source, max_length=max_length, document_pruning=document_pruning,
                              fp16=fp16, optimize=onnx_optimize or onnx_int8)
        return _open_export(source, device=device, source=str(source))
    if runtime == "onnx":
        prebuilt = prebuilt_export(source, max_length=max_length, document_pruning=document_pruning,
                                   fp16=fp16, optimize=onnx_optimize or onnx_int8)
        if prebuilt is not None:
            return _open_export(prebuilt, device=device, source=str(source))
    from convsparse.encoders.student import SpladeStudent

    model_path: Path | str = source
    if isinstance(source, Path) and (source / "modules.json").exists():
        model_path, st_max = resolve_sparse_encoder(source)
        if max_length is None and st_max:
            max_length = int(st_max)
    torch_device = "cpu" if runtime == "onnx" else device
    from convsparse.encoders.student import resolve_device

    if runtime == "torch" and fp16 and resolve_device(torch_device).startswith("cuda"):
        dtype = "float16"
    student = SpladeStudent.from_pretrained(
        model_path, device=torch_device, max_length=max_length, document_pruning=document_pruning,
        dtype=dtype if runtime == "torch" else "float32", compile=compile and runtime == "torch",
    )
    student.source = str(source)
    if runtime == "torch":
        return student
    from convsparse.encoders.onnx_runtime import OnnxStudent

    return OnnxStudent.from_torch(student, device=device, fp16=fp16, cache_dir=cache_dir,
                                  optimize=onnx_optimize, int8=onnx_int8)


def _check_export_options(folder: Path, *, max_length: int | None,
                          document_pruning: PruningPolicy | None, fp16: bool, optimize: bool) -> None:
    """An export folder runs as it was exported: options that would change its term maps are
    refused with the fix, never ignored."""
    from convsparse.encoders.onnx_runtime import read_export_metadata

    exported = read_export_metadata(folder)["max_length"]
    asked = []
    if max_length is not None and max_length != exported:
        asked.append(f"max_length {max_length} (exported with {exported})")
    if document_pruning is not None and document_pruning.describe() != PruningPolicy().describe():
        asked.append("document pruning")
    if fp16 or optimize:
        asked.append("fp16 / optimizer passes")
    if asked:
        raise UnsupportedModelError(f"{folder} is an ONNX export and runs as exported; asked for "
                                    f"{', '.join(asked)}: export it again with those options "
                                    "(`convsparse export`), or load the checkpoint it came from")


def _open_export(folder: Path, *, device: str, source: str):
    from convsparse.encoders.onnx_runtime import OnnxStudent

    return OnnxStudent.from_export_folder(folder, device=device, source=source)
