"""`Encoder`: what every part of convsparse needs from an encoder, and nothing more.

The client, the ingestion driver, the evaluation harness, the tuner and the workers only see
this protocol; `SpladeStudent` (PyTorch), `OnnxStudent` (ONNX Runtime) and the workers'
`RemoteEncoder` implement it, and a test can pass its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from convsparse.conversation import ConversationLike
from convsparse.termmap import TermMap, TermMapBatch


@runtime_checkable
class Encoder(Protocol):
    """Conversations and documents -> term maps, tagged with the encoder's fingerprint."""

    @property
    def fingerprint(self) -> str:
        """sha256 over weights, vocabulary, config, pooling, max length and document pruning;
        an index only accepts queries from the encoder that built it."""
        ...

    @property
    def vocabulary_name(self) -> str:
        """Names the vocabulary (tokenizer class, size, hash), written to an index's
        `_meta.vocabulary`."""
        ...

    def encode_conversation(self, conversation: ConversationLike) -> TermMap: ...

    def encode_conversations(
        self, conversations: Sequence[ConversationLike], *, ids: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> TermMapBatch: ...

    def encode_documents(
        self, texts: Sequence[str], *, ids: Sequence[str] | None = None, batch_size: int = 32,
        progress: bool = False,
    ) -> TermMapBatch: ...


@runtime_checkable
class ReportsEncoderPath(Protocol):
    """An encoder that may answer from somewhere else (the workers' `RemoteEncoder`): where the
    last conversation was encoded, "remote" or "local"."""

    last_path: str | None


__all__ = ["Encoder", "ReportsEncoderPath"]
