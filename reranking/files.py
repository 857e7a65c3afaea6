"""Writing the re-ranker folder's tensor files: atomically (a killed writer never leaves half a
file under the real name) and with the mode the umask gives, as every other tool's files.

safetensors' own ``save_file`` creates its file with mode 0600 whatever the umask, so a folder
built by one account (a container image built as root) could not be served by another; the
bytes are serialised by safetensors and written here instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from convsparse.encoders.onnx_session import temporary_sibling


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """`tensors` (numpy arrays) as a safetensors file at `path`."""
    from safetensors.numpy import save

    path = Path(path)
    data = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def current_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (setting it to read
    it back would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    old = os.umask(0o022)  # pragma: no cover
    os.umask(old)  # pragma: no cover
    return old  # pragma: no cover


def follow_umask(folder: str | Path) -> None:
    """Give the files under `folder` that a library wrote (Hugging Face's ``save_pretrained``
    writes its weights through safetensors, mode 0600) the mode the umask gives."""
    mode = 0o666 & ~current_umask()
    for f in Path(folder).rglob("*"):
        if f.is_file() and not f.is_symlink():
            f.chmod(mode)


__all__ = ["current_umask", "follow_umask", "write_safetensors"]
