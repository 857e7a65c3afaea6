"""One document's passage vectors, in the one encoding every backend stores them in.

What the re-ranker's bi-encoder made of a passage (the text it reads: title and text): the
float16 unit vector of the whole passage and, when the re-ranker reads windows, one per window.
They live in the core because both sides read them: the backends store and return them (on a
`convsparse.hits.Hit`), the re-ranker reads them, and neither imports the other. Which
bi-encoder made an index's vectors, and the embedder that writes them, are the index's concern
(`convsparse.integration.vectors`).

The encoding (`DocumentVectors.to_bytes`): the 12-byte digest of the passage text (`text_key`:
a vector read back for an edited text is never used), then the rows as little-endian float16,
row 0 the whole passage. The embedded store keeps these bytes in a BLOB; OpenSearch and
Elasticsearch keep them base64 in a `binary` field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["DocumentVectors", "text_key"]

_KEY_BYTES = 12  # text_key: blake2b, digest_size 12
_F16 = np.dtype("<f2")


@dataclass(frozen=True, eq=False)
class DocumentVectors:
    """One document's stored vectors: `key` (the digest of the passage text they were made
    from) and `rows` ((1 + windows, dim) float16; row 0 the whole passage)."""

    key: str
    rows: np.ndarray

    @property
    def dimension(self) -> int:
        return int(self.rows.shape[1])

    def to_bytes(self) -> bytes:
        return bytes.fromhex(self.key) + np.ascontiguousarray(self.rows, _F16).tobytes()

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_bytes(cls, blob: bytes, dimension: int) -> DocumentVectors:
        """Raises `ValueError` when `blob` is not vectors of `dimension`."""
        body = len(blob) - _KEY_BYTES
        if body <= 0 or body % (2 * dimension):
            raise ValueError(f"{len(blob)} bytes are not passage vectors of {dimension} dims")
        rows = np.frombuffer(blob, _F16, offset=_KEY_BYTES).reshape(-1, dimension)
        return cls(blob[:_KEY_BYTES].hex(), rows)

    @classmethod
    def from_base64(cls, text: str, dimension: int) -> DocumentVectors:
        try:
            blob = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError) as e:
            raise ValueError(f"not base64: {e}") from None
        return cls.from_bytes(blob, dimension)


def text_key(text: str) -> str:
    """The digest a passage's vectors are kept under: vectors read back for an edited text
    never match it, so they are never used for it."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()
