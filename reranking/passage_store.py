"""The re-ranker's passage-vector store: each passage's unit vector (and, with windows, its window
vectors), kept by a digest of the passage's text (`text_key`) so an edited passage is never
scored with a stale vector; saved to and merged from ``passage_vectors.safetensors``.

The store only keeps vectors; embedding them is the bi-encoder's job (`reranking.semantic`).
Thread-safe for the client's rerank thread: lookups and additions share one lock.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from convsparse.errors import UnsupportedModelError

logger = logging.getLogger(__name__)


class PassageVectorStore:
    """Float16 unit vectors of passages by text digest, and each one's window vectors when the
    bi-encoder cuts passages into windows (`window`, `stride`: the cut they were made with).

    `model_tag`: ``name==version`` of the built-in bi-encoder (`builtin_tag`), written with the
    vectors so a file from other weights is left out on `merge`."""

    def __init__(self, dimension: int, *, window: int | None = None, stride: int | None = None,
                 model_tag: str | None = None, vectors: Mapping[str, np.ndarray] | None = None):
        self.dimension = dimension
        self.window, self.stride = window, stride
        self.model_tag = model_tag
        self._vectors: dict[str, np.ndarray] = dict(vectors or {})
        #: each passage's window vectors (windows, dim), by the same key as `_vectors`
        self._windows: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._vectors)

    def missing(self, keys: Sequence[str]) -> tuple[set[str], set[str]]:
        """The keys without a whole-passage vector, and (with windows) those without windows."""
        with self._lock:
            return ({k for k in keys if k not in self._vectors},
                    {k for k in keys if self.window is not None and k not in self._windows})

    def put(self, whole: Iterable[tuple[str, np.ndarray]],
            windows: Iterable[tuple[str, np.ndarray]] = ()) -> None:
        """Keep these (key, vector) and (key, window vectors) pairs."""
        with self._lock:
            self._vectors.update(whole)
            self._windows.update(windows)

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """(n, dim) float32 vectors of `keys` (all stored), and with windows each one's."""
        with self._lock:
            whole = np.stack([self._vectors[k] for k in keys]).astype(np.float32)
            windows = [self._windows[k] for k in keys] if self.window is not None else None
        return whole, windows

    def remember(self, key: str, stored: np.ndarray) -> bool:
        """Keep the vectors of the passage with text digest `key`, as `embed_passages` gave
        them (read back from an index), so it is not embedded again; False (nothing changed)
        when it had them already. Raises `ValueError` for rows of another dimension, or without
        window rows where the bi-encoder reads windows."""
        if np.ndim(stored) != 2 or np.shape(stored)[1] != self.dimension:
            raise ValueError(f"passage vectors of shape {list(np.shape(stored))}: this "
                             f"bi-encoder's are (1 + windows, {self.dimension})")
        if self.window is not None and len(stored) < 2:
            raise ValueError("this bi-encoder reads passage windows: give the passage's "
                             f"(1 + windows, {self.dimension}) rows with its window vectors")
        with self._lock:
            if key in self._vectors and (self.window is None or key in self._windows):
                return False
            self._vectors[key] = stored[0]
            if self.window is not None:
                self._windows[key] = stored[1:]
            return True

    def forget(self, keys: Sequence[str]) -> None:
        """Drop the vectors of these passages (`remember`ed for one re-rank)."""
        with self._lock:
            for k in keys:
                self._vectors.pop(k, None)
                self._windows.pop(k, None)

    def save(self, path: str | Path) -> Path:
        """The stored passage vectors alone (float16, keyed by text digest), and their window
        vectors with the window and stride they were cut by, written atomically."""
        from convsparse.reranking.files import write_safetensors

        path = Path(path)
        empty = np.zeros((0, self.dimension), np.float16)
        with self._lock:
            keys, window_keys = list(self._vectors), list(self._windows)
            matrix = np.stack([self._vectors[k] for k in keys]) if keys else empty
            windows = [self._windows[k] for k in window_keys]
        tensors = {"vectors": matrix}
        metadata = {"keys": json.dumps(keys)}
        if self.model_tag is not None:
            metadata["model"] = self.model_tag
        if window_keys:
            tensors["windows"] = np.concatenate(windows)
            metadata.update(window_keys=json.dumps(window_keys),
                            window_counts=json.dumps([len(w) for w in windows]),
                            window=json.dumps([self.window, self.stride]))
        return write_safetensors(path, tensors, metadata)

    def merge(self, path: str | Path) -> int:
        """Add the vectors of a `save` file; returns how many it held (0 when they came from
        another version of the built-in model: those are left out, embedded again on sight).
        A file that is not one (unreadable, shapes or keys that disagree, values that are not
        unit vectors) is an `UnsupportedModelError` naming it and the fix; nothing is merged."""
        path = Path(path)
        read = _read_vectors(path, self.model_tag, self.window, self.stride)
        if read is None:
            return 0
        keys, matrix, split = read
        if len(keys) and matrix.shape[1] != self.dimension:
            raise UnsupportedModelError(
                f"{path}: vectors of dimension {matrix.shape[1]}, this bi-encoder gives "
                f"{self.dimension}; {_VECTORS_FIX}")
        self.put(zip(keys, matrix.astype(np.float16)), split)
        return len(keys)


_VECTORS_FIX = "delete it and run `convsparse rerank vectors` to embed the passages again"


def _read_vectors(path: Path, model_tag: str | None, window: int | None, stride: int | None):
    """(keys, (n, dim) float16 vectors, [(key, window vectors)]) of a vectors file, or None
    when another version of the built-in model wrote it; any fault is named."""
    from safetensors import SafetensorError, safe_open

    def bad(reason: str) -> UnsupportedModelError:
        return UnsupportedModelError(f"{path}: {reason}; {_VECTORS_FIX}")

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            if meta.get("model", model_tag) != model_tag:
                logger.warning("%s: passage vectors of %s, this bi-encoder is %s: left out, the "
                               "passages are embedded again on sight (or run `convsparse rerank "
                               "vectors`)", path, meta["model"], model_tag or "a model of its own")
                return None
            keys = json.loads(meta["keys"])
            matrix = f.get_tensor("vectors")
            # windows cut another way (or none here) are not these windows: left to re-embed
            same_cut = window is not None and json.loads(meta.get("window", "null")) == [
                window, stride]
            windows = f.get_tensor("windows") if same_cut and "windows" in f.keys() else None
            window_keys = json.loads(meta["window_keys"]) if windows is not None else []
            counts = json.loads(meta["window_counts"]) if windows is not None else []
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise bad(f"not a passage-vectors file ({type(e).__name__}: {str(e)[:120]})") from None
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise bad("its keys are not a list of text digests")
    if matrix.ndim != 2 or len(matrix) != len(keys):
        raise bad(f"{len(keys)} keys for vectors of shape {list(matrix.shape)}")
    split = []
    if windows is not None:
        if (not isinstance(counts, list) or len(counts) != len(window_keys)
                or not all(isinstance(c, int) and c > 0 for c in counts)
                or windows.ndim != 2 or sum(counts) != len(windows)
                or windows.shape[1] != matrix.shape[1]):
            raise bad(f"window counts do not match the {list(windows.shape)} window vectors")
        split = list(zip(window_keys, np.split(windows.astype(np.float16), np.cumsum(counts)[:-1])))
    for name, m in (("vectors", matrix), ("window vectors", windows)):
        if m is None or not len(m):
            continue
        norms = np.linalg.norm(m.astype(np.float32), axis=1)
        if not np.all(np.isfinite(norms)) or np.abs(norms - 1).max() > 0.01:
            raise bad(f"{name} that are not unit vectors (norms {norms.min():.3g}-"
                      f"{norms.max():.3g})")
    return keys, matrix.astype(np.float16), split



__all__ = ["PassageVectorStore"]
