"""The ML Commons artifact (issue 33): zip rules, manifest, chunks, and the traced graph's
parity with the in-process document encoder (torch only, no JVM, no cluster)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

from convsparse.documents import document_text  # noqa: E402
from convsparse.integration.backends.mlcommons_artifact import (  # noqa: E402
    CHUNK_SIZE,
    ModelZipError,
    check_model_zip,
    iter_chunks,
    read_manifest,
    sha256_file,
)


def _sibling(name: str):
    """A helper module of this folder, loaded once by its conftest.py (`_load`)."""
    import sys

    return sys.modules[f"convsparse_tests_opensearch_{name}"]


fake_mlcommons = _sibling("fake_mlcommons")


@pytest.fixture(scope="module")
def artifact():
    folder = fake_mlcommons.built_artifact()
    manifest, zip_path = read_manifest(folder)
    return manifest, zip_path


@pytest.fixture(scope="module")
def loaded(artifact):
    manifest, zip_path = artifact
    with zipfile.ZipFile(zip_path) as zf:
        module = torch.jit.load(io.BytesIO(zf.read(manifest.pt_name)), map_location="cpu")
        tokenizer = tokenizers.Tokenizer.from_str(zf.read("tokenizer.json").decode())
    return module, tokenizer


def test_zip_obeys_ml_commons_rules(artifact):
    manifest, zip_path = artifact
    assert check_model_zip(zip_path) == manifest.pt_name
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert sorted(names) == sorted([manifest.pt_name, "tokenizer.json", "LICENSE"])
    assert all("/" not in n for n in names)  # all at the root
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


@pytest.mark.parametrize("entries, message", [
    ({"a.pt": b"x", "b.pt": b"y", "tokenizer.json": b"{}"}, "exactly one .pt"),
    ({"model.onnx": b"x", "tokenizer.json": b"{}"}, "exactly one .pt"),
    ({"a.pt": b"x"}, "no tokenizer.json"),
    ({"a.pt": b"x", "sub/tokenizer.json": b"{}"}, "no tokenizer.json"),
    ({"a.pt": b"x", "tokenizer.json": b"{}", "libx.so": b""}, "native code"),
    ({"a.pt": b"x", "tokenizer.json": b"{}",
      "serving.properties": b"translatorFactory=com.evil.Factory\n"}, "outside ai.djl"),
])
def test_zip_rules_refuse(entries, message):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(ModelZipError, match=message):
        check_model_zip(buffer.getvalue())


def test_zip_bytes_do_not_depend_on_the_clock(tmp_path, monkeypatch):
    from convsparse.encoders import torchscript_export as export

    entries = {"m.pt": b"\x00" * 1000, "tokenizer.json": b"{}", "LICENSE": b"Apache-2.0"}
    export.write_model_zip(tmp_path / "a.zip", entries)
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
    export.write_model_zip(tmp_path / "b.zip", entries)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_manifest_describes_the_zip(artifact):
    manifest, zip_path = artifact
    student = fake_mlcommons.shipped_student()
    assert manifest.sha256 == sha256_file(zip_path) and manifest.size == zip_path.stat().st_size
    assert manifest.total_chunks == -(-manifest.size // CHUNK_SIZE) == 2  # SPLADE-tiny: ~16.6 MB
    assert manifest.fingerprint == student.fingerprint  # the index's
    assert manifest.max_length == student.max_length == 256
    assert manifest.special_ids_zeroed == [0, 100, 101, 102, 103]
    assert manifest.torch_version == torch.__version__ and manifest.transformers_version
    assert manifest.target_libtorch == "2.5.1"
    with zipfile.ZipFile(zip_path) as zf:
        truncation = json.loads(zf.read("tokenizer.json"))["truncation"]
    assert truncation["max_length"] == 256  # the shipped tokenizer.json says 512


def test_chunks_round_trip(artifact):
    manifest, zip_path = artifact
    chunks = list(iter_chunks(zip_path))
    assert [n for n, _ in chunks] == list(range(manifest.total_chunks))
    assert all(len(c) <= CHUNK_SIZE for _, c in chunks) and len(chunks[0][1]) == CHUNK_SIZE
    assert b"".join(c for _, c in chunks) == zip_path.read_bytes()
    with pytest.raises(ValueError, match="chunk_size"):
        next(iter_chunks(zip_path, CHUNK_SIZE + 1))


def test_a_changed_zip_is_named_with_the_fix(artifact, tmp_path):
    manifest, zip_path = artifact
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    data = bytearray(zip_path.read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / manifest.zip_name).write_bytes(bytes(data))
    with pytest.raises(ModelZipError, match="is not the zip .* rebuild the artifact"):
        read_manifest(tmp_path)
    with pytest.raises(ModelZipError, match="not found; build the artifact"):
        read_manifest(tmp_path / "nowhere")


def test_graph_has_no_sdpa_and_the_dict_signature(loaded):
    from convsparse.encoders.torchscript_export import SDPA_OP, graph_ops

    module, tokenizer = loaded
    ops = graph_ops(module)
    assert SDPA_OP not in ops and "aten::index_fill" in ops
    enc = tokenizer.encode("a passport renewal")
    out = module({"input_ids": torch.tensor([enc.ids]), "attention_mask": torch.tensor([enc.attention_mask])})
    assert set(out) == {"output"}
    assert tuple(out["output"].shape) == (1, 30522) and out["output"].dtype == torch.float32


LONG = " ".join(f"word{i} passport visa embassy" for i in range(200))  # > 256 tokens


@pytest.mark.parametrize("title, text", [
    (None, "visa"),                                       # 1 token (+ specials)
    ("Passport renewal", "How do I renew my U.S. passport? It costs 100% more, e.g. $130. " * 6),
    (None, LONG),                                         # truncated at 256
    ("Embassy", LONG),
])
def test_traced_graph_gives_the_in_process_term_maps(loaded, title, text):
    """At batch 1, as ML Commons runs it, on the artifact's own tokenizer.json, at lengths the
    trace never saw: same tokens, weights within 1e-5, special tokens zeroed."""
    module, tokenizer = loaded
    student = fake_mlcommons.shipped_student()
    doc = document_text(title, text)
    enc = tokenizer.encode(doc)
    assert len(enc.ids) <= 256
    out = module({"input_ids": torch.tensor([enc.ids]), "attention_mask": torch.tensor([enc.attention_mask])})
    vector = out["output"][0]
    assert float(vector[[0, 100, 101, 102, 103]].abs().sum()) == 0.0
    server = {}
    for i in torch.nonzero(vector).flatten().tolist():
        name = tokenizer.decode([i], skip_special_tokens=True)
        if name:
            server[name] = float(vector[i])
    client = {t: w for t, w in student.encode_documents([doc])[0].items()
              if t not in student.tokenizer.all_special_tokens}
    assert set(server) == set(client)
    assert max(abs(server[t] - client[t]) for t in client) < 1e-5
