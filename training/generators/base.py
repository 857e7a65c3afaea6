"""What a generator is: one small interface over an LLM, local or behind an HTTP endpoint.

A `Generator` turns chat prompts (lists of `{"role", "content"}` messages) into texts
(`generate`) and scores a continuation given a prompt (`score`). Both take a batch and return one
result per item, in order: a `str` / `float`, or a `GenerationError` for that item alone, so one
failed turn is one reported failure while the rest go on (the `streaming_bulk` habit).
`identity` names the model and every setting that changes its outputs; the rewrite cache keys on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

Message = Mapping[str, str]
Prompt = Sequence[Message]


class GenerationError(Exception):
    """One item failed (after retries): `reason` says why; the caller reports it per turn."""

    def __init__(self, reason: str, *, attempts: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


@runtime_checkable
class Generator(Protocol):
    identity: str

    def generate(self, prompts: Sequence[Prompt]) -> list[str | GenerationError]:
        """One generated text per prompt (greedy / temperature 0 unless configured otherwise)."""
        ...

    def score(self, prompts: Sequence[Prompt],
              continuations: Sequence[str]) -> list[float | GenerationError]:
        """How well each continuation follows its prompt (higher is better): a local model's
        mean log-likelihood per token, an endpoint's parsed rating."""
        ...


__all__ = ["GenerationError", "Generator", "Message", "Prompt"]
