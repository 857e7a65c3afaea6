"""The ML Commons model artifact, without torch: its manifest, the zip rules, hash and chunks.

`convsparse mlcommons build` (`convsparse.encoders.torchscript_export`) writes two files into
its folder: the model zip and `manifest.json`. Everything that registers the model (chunked
upload or URL) reads them back here, so the client and the CLI never need torch.

Zip rules (ML Commons `ModelHelper.verifyModelZipFile` and `DLModel.loadModel`, checked by
`check_model_zip`): exactly one `.pt` (TORCH_SCRIPT; the server renames it, so its name is
free), an entry named exactly `tokenizer.json` at the root, no native code (`.jar`, `.class`,
`.so`, `.dylib`, `.dll`), and a `serving.properties` may only name `ai.djl.*` classes.

Hash and chunks: `model_content_hash_value` is the lowercase hex sha256 of the whole zip
(`FileUtils.calculateFileHash`); chunks are the zip's raw bytes, at most 10,000,000 each
(`Chunk size exceeds 10MB` above that), numbered from 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convsparse.errors import ConvsparseError

__all__ = [
    "CHUNK_SIZE",
    "MANIFEST_NAME",
    "TARGET_LIBTORCH",
    "ArtifactManifest",
    "ModelZipError",
    "check_model_zip",
    "iter_chunks",
    "read_manifest",
    "sha256_file",
]

#: ML Commons' largest chunk (`MLModelChunkUploader`; opensearch-py-ml MODEL_CHUNK_MAX_SIZE).
CHUNK_SIZE = 10_000_000
MANIFEST_NAME = "manifest.json"
#: libtorch of the cluster's ML Commons, by OpenSearch major version (2.x: 1.13.1, 3.x: 2.5.1).
TARGET_LIBTORCH = ("1.13.1", "2.5.1")
_NATIVE = (".jar", ".class", ".so", ".dylib", ".dll")


class ModelZipError(ConvsparseError, ValueError):
    """The zip (or its manifest) breaks a rule ML Commons enforces at register or deploy time."""


@dataclass(frozen=True)
class ArtifactManifest:
    """What `manifest.json` records about one built zip."""

    zip_name: str
    sha256: str
    size: int
    chunk_size: int
    total_chunks: int
    fingerprint: str
    vocabulary: str
    base_model: str
    max_length: int
    special_ids_zeroed: list[int]
    pt_name: str
    torch_version: str
    transformers_version: str
    target_libtorch: str
    convsparse_version: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: str = MANIFEST_NAME) -> ArtifactManifest:
        names = {f for f in cls.__dataclass_fields__}
        missing = sorted(names - set(data))
        if missing:
            raise ModelZipError(f"{where}: missing {', '.join(missing)}; rebuild it with "
                                "`convsparse mlcommons build`")
        return cls(**{k: data[k] for k in names})

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path


def sha256_file(path: str | Path) -> str:
    """Lowercase hex sha256 of a file (ML Commons' `model_content_hash_value`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def total_chunks(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    return max(1, math.ceil(size / chunk_size))


def iter_chunks(path: str | Path, chunk_size: int = CHUNK_SIZE) -> Iterator[tuple[int, bytes]]:
    """(chunk number from 0, raw bytes) of a file, each at most `chunk_size` bytes."""
    if not 0 < chunk_size <= CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in (0, {CHUNK_SIZE:,}], not {chunk_size}")
    with open(path, "rb") as f:
        yield from enumerate(iter(lambda: f.read(chunk_size), b""))


def check_model_zip(data: str | Path | bytes, model_format: str = "TORCH_SCRIPT") -> str:
    """Apply ML Commons' zip rules; return the model entry's name, or raise `ModelZipError`."""
    import io

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
            serving = zf.read("serving.properties").decode() if "serving.properties" in names else ""
    except zipfile.BadZipFile as exc:
        raise ModelZipError(f"not a zip file ({exc})") from None
    suffix = ".pt" if model_format == "TORCH_SCRIPT" else ".onnx"
    models = [n for n in names if n.endswith((".pt", ".onnx"))]
    if len(models) != 1 or not models[0].endswith(suffix):
        raise ModelZipError(f"a {model_format} zip needs exactly one {suffix} file, found {models}")
    if "tokenizer.json" not in names:
        raise ModelZipError("no tokenizer.json at the zip's root")
    native = [n for n in names if n.lower().endswith(_NATIVE)]
    if native:
        raise ModelZipError(f"native code is not allowed in a model zip: {native}")
    classes = re.findall(r"=\s*([\w.$]+\.[A-Z][\w$]*)\s*$", serving, flags=re.M)
    foreign = [c for c in classes if not c.startswith("ai.djl.")]
    if foreign:
        raise ModelZipError(f"serving.properties names classes outside ai.djl: {foreign}")
    return models[0]


def read_manifest(folder: str | Path, *, verify: bool = True) -> tuple[ArtifactManifest, Path]:
    """(manifest, zip path) of a built artifact folder; with `verify`, the zip's size and
    sha256 must be the manifest's (a rebuilt or truncated zip is named with the fix)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelZipError(f"{path} not found; build the artifact with "
                            f"`convsparse mlcommons build --out {folder}`")
    try:
        manifest = ArtifactManifest.from_json(json.loads(path.read_text(encoding="utf-8")), where=str(path))
    except json.JSONDecodeError as exc:
        raise ModelZipError(f"{path} is not valid JSON ({exc}); rebuild the artifact") from None
    zip_path = folder / manifest.zip_name
    if not zip_path.is_file():
        raise ModelZipError(f"{zip_path} (named by {path}) not found; rebuild the artifact")
    if verify:
        size, digest = zip_path.stat().st_size, sha256_file(zip_path)
        if size != manifest.size or digest != manifest.sha256:
            raise ModelZipError(
                f"{zip_path} is not the zip {path} describes (sha256 {digest[:12]}..., "
                f"{size:,} bytes; manifest {manifest.sha256[:12]}..., {manifest.size:,} bytes); "
                "rebuild the artifact, or restore the zip that was built with it")
    return manifest, zip_path
