"""The re-ranker folder as files: serving from ONNX exports without torch, a corrupt file named
in one line (issue 29 item 6), exports rebuilt, files written with the umask's mode."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convsparse.errors import UnsupportedModelError
from convsparse.hits import Hit
from convsparse.reranking.reranker import load_reranker, new_reranker
from convsparse.termmap import TermMap

CONV = [{"role": "user", "text": "Tell me about Lisbon."},
        {"role": "assistant", "text": "Lisbon is the capital of Portugal."},
        {"role": "user", "text": "What about its population?"}]
TEXTS = ["Rome is the capital of Italy.", "Lisbon has about 545,000 inhabitants.",
         "Octopuses have three hearts."]
QUERY = {"lisbon": 1.0, "population": 0.5}
FIRST = [3.0, 2.5, 1.0]


@pytest.fixture(scope="module")
def folder(tiny_model_dir, tmp_path_factory):
    """The shipped recipe's shape (Term Control Layer, a bi-encoder with passage windows, no
    cross-encoder), its passages' vectors stored and its ONNX exports made."""
    torch.manual_seed(3)
    rr = new_reranker(tiny_model_dir, cross_encoder=False, semantic=tiny_model_dir,
                      semantic_window=8, semantic_stride=4, passages=TEXTS)
    with torch.no_grad():
        rr.model.semantic_linear.weight.normal_(0, 0.5)
        rr.model.gate.weight.normal_(0, 0.5)
    rr.semantic.add(TEXTS)
    out = rr.save(tmp_path_factory.mktemp("rr") / "rr")
    load_reranker(out, runtime="onnx")  # the exports, once, with torch
    assert (out / "model.onnx").is_file() and (out / "semantic.onnx").is_file()
    return out


@pytest.fixture()
def copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "rr"))


def test_onnx_serving_imports_neither_torch_nor_transformers(folder):
    """A chat app's re-rank in ONNX Runtime, in a fresh process: the exports exist, so neither
    torch, transformers nor sentence-transformers is imported, and the scores are PyTorch's,
    also for a passage met without a stored vector (embedded by the export)."""
    new = "Lisbon's population grew in the 2021 census."
    want = load_reranker(folder, runtime="torch").score(CONV, QUERY, [*TEXTS, new], [*FIRST, 0.5])
    script = f"""
import json, sys
from convsparse.hits import Hit
from convsparse.reranking import load_reranker
rr = load_reranker({str(folder)!r}, runtime="onnx")
hits = [Hit(str(i), s, {{"text": t}}) for i, (t, s) in enumerate(zip({[*TEXTS, new]!r}, {[*FIRST, 0.5]!r}))]
out = rr.rerank({CONV!r}, {QUERY!r}, hits)
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "scores": {{h.id: h.score for h in out}}}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CONVSPARSE_CACHE_DIR": str(folder.parent / "c")})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    scores = [got["scores"][str(i)] for i in range(len(want))]
    np.testing.assert_allclose(scores, want, rtol=1e-3, atol=2e-3)  # float16 passage vectors


def test_the_onnx_export_embeds_passages_as_sentence_transformers_does(folder):
    onnx = load_reranker(folder, runtime="onnx").semantic
    st = load_reranker(folder, runtime="torch").semantic
    long = " ".join(["The tram network of Lisbon is old and famous."] * 40)  # past the cut
    texts = [*TEXTS, long, "x"]
    np.testing.assert_allclose(onnx._encode(texts), st._encode(texts), atol=1e-5)
    assert onnx.window_texts(long) == st.window_texts(long)  # the same word pieces and offsets


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(256))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _edit_json(**changes):
    def edit(path: Path) -> None:
        spec = json.loads(path.read_text())
        spec.update(changes)
        path.write_text(json.dumps(spec))
    return edit


def _edit_tensors(change):
    def edit(path: Path) -> None:
        from safetensors import safe_open
        from safetensors.numpy import load_file, save_file

        with safe_open(str(path), "np") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        change(tensors)
        save_file(tensors, str(path), metadata=meta)
    return edit


def _set(name, value):
    def change(t):
        t[name] = value(t[name])
    return change


CORRUPTIONS = {
    "reranker.json garbage": ("reranker.json", _garbage, r"reranker\.json: unreadable"),
    "reranker.json truncated": ("reranker.json", _truncate, r"reranker\.json: unreadable"),
    "reranker.json a list": ("reranker.json", lambda p: p.write_text("[1, 2]"),
                             r"reranker\.json: not a JSON object"),
    "reranker.json wrong type": ("reranker.json", _edit_json(max_length="long"),
                                 r"reranker\.json: max_length: Input should be a valid integer"),
    "reranker.json out of range": ("reranker.json", _edit_json(semantic_views=7),
                                   r"reranker\.json: semantic_views: .*less than or equal to 3"),
    "reranker.json unknown model": ("reranker.json", _edit_json(semantic_model="../../etc"),
                                    r"reranker\.json: semantic_model '\.\./\.\./etc'"),
    "head garbage": ("head.safetensors", _garbage, r"head\.safetensors: not a safetensors file"),
    "head truncated": ("head.safetensors", _truncate, r"head\.safetensors: not a safetensors file"),
    "head not finite": ("head.safetensors",
                        _edit_tensors(_set("gate.weight", lambda w: w * np.nan)),
                        r"head\.safetensors: gate\.weight holds values that are not finite"),
    "statistics garbage": ("term_statistics.safetensors", _garbage,
                           r"term_statistics\.safetensors: not a term-statistics file"),
    "statistics truncated": ("term_statistics.safetensors", _truncate,
                             r"term_statistics\.safetensors: not a term-statistics file"),
    "statistics wrong shape": ("term_statistics.safetensors",
                               _edit_tensors(_set("idf", lambda v: v[:10].copy())),
                               r"term_statistics\.safetensors: idf of shape \[10\]"),
    "statistics negative": ("term_statistics.safetensors",
                            _edit_tensors(_set("idf", lambda v: -v)),
                            r"term_statistics\.safetensors: idf or average length out of range"),
    "vectors garbage": ("passage_vectors.safetensors", _garbage,
                        r"passage_vectors\.safetensors: not a passage-vectors file.*rerank vectors"),
    "vectors truncated": ("passage_vectors.safetensors", _truncate,
                          r"passage_vectors\.safetensors: not a passage-vectors file"),
    "vectors wrong shape": ("passage_vectors.safetensors",
                            _edit_tensors(_set("vectors", lambda v: v[:1].copy())),
                            r"passage_vectors\.safetensors: \d+ keys for vectors of shape \[1, "),
    "vectors not unit": ("passage_vectors.safetensors",
                         _edit_tensors(_set("vectors", lambda v: v * 3)),
                         r"passage_vectors\.safetensors: vectors that are not unit vectors"),
    "tokenizer garbage": ("encoder/tokenizer.json", _garbage, r"encoder"),
}


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupt_file_is_named_in_one_line(copy, case, runtime):
    name, corrupt, said = CORRUPTIONS[case]
    corrupt(copy / name)
    with pytest.raises(UnsupportedModelError, match=said) as err:
        load_reranker(copy, runtime=runtime)
    assert "\n" not in str(err.value)


def test_a_wrong_head_shape_is_named(copy):
    bad = _edit_tensors(_set("term_mlp.0.weight", lambda w: np.zeros((16, 5), w.dtype)))
    bad(copy / "head.safetensors")
    (copy / "model.onnx").unlink()  # the ONNX path then needs the head to export it
    for runtime in ("torch", "onnx"):
        with pytest.raises(UnsupportedModelError,
                           match=r"head\.safetensors: .*term_mlp\.0\.weight.*shape") as err:
            load_reranker(copy, runtime=runtime)
        assert "\n" not in str(err.value)


def test_cli_says_one_line_and_exits_2(copy, tmp_path):
    from typer.testing import CliRunner

    from convsparse.cli import app
    from convsparse.integration.backends.embedded import EmbeddedBackend

    _truncate(copy / "head.safetensors")
    EmbeddedBackend(tmp_path / "data").create_index("ix", fingerprint="fp")
    out = CliRunner().invoke(app, ["rerank", "vectors", "ix", "--rerank", str(copy),
                                   "--data-dir", str(tmp_path / "data")])
    assert out.exit_code == 2
    assert out.output.strip().count("\n") == 0 and "head.safetensors" in out.output


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another graph"])
def test_an_unusable_onnx_export_is_exported_again(copy, damage, caplog):
    want = load_reranker(copy, runtime="torch").score(CONV, QUERY, TEXTS, FIRST)
    if damage == "garbage":
        _garbage(copy / "model.onnx")
    elif damage == "truncated":
        _truncate(copy / "model.onnx")
    else:  # a readable ONNX file of something else
        shutil.copy(copy / "semantic.onnx", copy / "model.onnx")
    rr = load_reranker(copy, runtime="onnx")
    assert "not a usable ONNX export" in caplog.text
    np.testing.assert_allclose(rr.score(CONV, QUERY, TEXTS, FIRST), want, rtol=1e-4, atol=1e-5)
    caplog.clear()
    load_reranker(copy, runtime="onnx")  # rebuilt for good
    assert "not a usable ONNX export" not in caplog.text


def test_a_corrupt_bi_encoder_export_is_exported_again(copy, caplog):
    want = load_reranker(copy, runtime="torch").semantic.embed_views(CONV)
    _truncate(copy / "semantic.onnx")
    rr = load_reranker(copy, runtime="onnx")
    assert "semantic.onnx: not a usable ONNX export" in caplog.text
    np.testing.assert_allclose(rr.semantic.embed_views(CONV), want, atol=1e-5)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_files_follow_the_umask(folder, tmp_path, umask):
    old = os.umask(umask)
    try:
        fresh = load_reranker(folder, runtime="torch").save(tmp_path / "fresh")
        load_reranker(fresh, runtime="onnx")  # its exports
    finally:
        os.umask(old)
    modes = {p.relative_to(fresh).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in fresh.rglob("*") if p.is_file()}
    assert {"model.onnx", "semantic.onnx", "head.safetensors"} <= set(modes)
    assert {k: oct(v) for k, v in modes.items() if v != 0o666 & ~umask} == {}


def test_default_names_the_shipped_folder(monkeypatch, folder):
    from convsparse.reranking import reranker as module

    monkeypatch.setattr(module, "DEFAULT_FOLDER", folder)
    for name in ("default", None):
        rr = load_reranker(name, runtime="onnx")
        out = rr.rerank(CONV, TermMap(QUERY), [Hit(str(i), s, {"text": t})
                                               for i, (t, s) in enumerate(zip(TEXTS, FIRST))])
        assert len(out) == 3


def test_the_shipped_reranker_is_small_loads_by_name_and_serves_without_torch(tmp_path):
    """The package's re-ranker: under 2 MB (the bi-encoder is the MiniLM wheel's), its
    recipe reproduces its training config, and `load_reranker("default", runtime="onnx")`
    re-ranks in a process that never imports torch once the bi-encoder's export is cached."""
    from convsparse.reranking.config import RerankConfig
    from convsparse.reranking.reranker import DEFAULT_FOLDER

    files = [p for p in DEFAULT_FOLDER.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert not list(DEFAULT_FOLDER.glob("passage_vectors*"))
    trained = json.loads((DEFAULT_FOLDER / "training.json").read_text())["config"]
    recipe = RerankConfig.from_file(DEFAULT_FOLDER / "recipe.yaml", {
        "collection": str(tmp_path), "output_dir": str(tmp_path / "run")})
    paths = ("output_dir", "collection", "progress", "resume", "threads")
    assert ({k: v for k, v in json.loads(recipe.model_dump_json()).items() if k not in paths}
            == {k: v for k, v in trained.items() if k not in paths})
    env = {**os.environ, "CONVSPARSE_CACHE_DIR": str(tmp_path / "cache")}
    script = f"""
import json, sys
from convsparse.hits import Hit
from convsparse.reranking import load_reranker
rr = load_reranker("default", runtime="onnx")
hits = [Hit(str(i), s, {{"text": t}}) for i, (t, s) in enumerate(zip({TEXTS!r}, {FIRST!r}))]
out = rr.rerank({CONV!r}, {QUERY!r}, hits)
print(json.dumps({{"heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules),
                  "order": [h.id for h in out]}}))
"""
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=600, env=env)  # exports the MiniLM once, with torch
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    got = json.loads(again.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [] and got["order"][0] == "1"  # Lisbon's population first
    assert again.stderr.strip() == ""  # a quiet load: no progress bars, no warnings


def test_vectors_computed_elsewhere_are_used_as_they_are(folder):
    """What an index stores per passage (`embed_passages`) and gives back with the hits
    (`remember`): scoring them embeds nothing and gives the scores of vectors embedded on
    sight."""
    from convsparse.integration.vectors import text_key

    new = ["Lisbon's trams date from 1873.", "Porto is the second city of Portugal."]
    source = load_reranker(folder, runtime="onnx")
    rows = source.semantic.embed_passages(new)
    whole = np.stack([r[0] for r in rows])
    assert whole.dtype == np.float16 and whole.shape == (2, source.semantic.dimension)
    assert len(source.semantic) == len(load_reranker(folder, runtime="onnx").semantic)  # not kept
    served = load_reranker(folder, runtime="onnx")
    for text, r in zip(new, rows):
        served.semantic.remember(text_key(text), r)
    before = len(served.semantic)
    got = served.score(CONV, QUERY, new, [2.0, 1.0])
    assert served.semantic.add(new) == 0 and len(served.semantic) == before
    want = load_reranker(folder, runtime="onnx").score(CONV, QUERY, new, [2.0, 1.0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="window vectors"):
        served.semantic.remember(text_key("another passage"), rows[0][:1])


def test_loading_the_built_in_bi_encoder_is_quiet(capfd):
    load_reranker("default", runtime="torch")  # PyTorch: sentence-transformers loads the MiniLM
    assert "Loading weights" not in capfd.readouterr().err


def test_an_unusable_export_in_a_read_only_folder_is_made_in_the_cache(copy, tmp_path, monkeypatch):
    """The shipped folder sits in site-packages, read-only for the serving account: a damaged
    model.onnx there is replaced by an export in the cache, not a failure."""
    from convsparse.reranking import reranker as module

    want = load_reranker(copy, runtime="torch").score(CONV, QUERY, TEXTS, FIRST)
    _garbage(copy / "model.onnx")
    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(module, "_writable", lambda folder: False)  # root ignores chmod
    rr = load_reranker(copy, runtime="onnx")
    np.testing.assert_allclose(rr.score(CONV, QUERY, TEXTS, FIRST), want, rtol=1e-4, atol=1e-5)
    assert [p.name.split("-")[1] for p in (tmp_path / "cache" / "onnx").glob("*.onnx")] == ["model"]
