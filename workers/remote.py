"""`RemoteEncoder`: encode a conversation on a GPU worker, or locally when none answers.

    >>> enc = RemoteEncoder(settings, fallback=load_student(device="cpu"), timeout_s=0.5)
    >>> tm = enc.encode_conversation([{"role": "user", "text": "who wrote dune?"}])
    >>> enc.last_path, enc.last_latency_ms          # ("remote", 7.9) or ("local", 512.3)

It is a drop-in encoder for `ConversationalSearch` (`encode_conversation(conv) -> TermMap` and
`.fingerprint`). The request goes to the `query` queue with `expires=timeout_s`, so a worker that
picks it up too late drops it instead of doing useless work. If no answer arrives within
`timeout_s` (no worker, all busy, broker down), the local fallback encodes on CPU, and for
`down_cooldown_s` seconds afterwards requests go straight to the fallback instead of paying the
timeout again. A remote answer whose encoder fingerprint differs from the expected one (a worker
running another model) is refused and encoded locally; `.last_error` says why.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from convsparse.conversation import ConversationLike, Turn
from convsparse.termmap import TermMap
from convsparse.timing import elapsed_ms

logger = logging.getLogger(__name__)


def _jsonable_conversation(conversation: ConversationLike) -> Any:
    if isinstance(conversation, str):
        return conversation
    out = []
    for turn in conversation:
        if isinstance(turn, Turn):
            out.append(turn.model_dump(mode="json"))
        else:
            out.append(dict(turn))
    return out


class RemoteEncoder:
    """Conversation encoder backed by the Celery `query` queue, with a local fallback."""

    def __init__(
        self, settings_or_app=None, *, fallback=None, timeout_s: float | None = None,
        fingerprint: str | None = None, down_cooldown_s: float = 10.0,
    ):
        from celery import Celery

        from convsparse.workers.app import WorkerSettings, make_app

        if isinstance(settings_or_app, Celery):
            self.app = settings_or_app
            self.settings = WorkerSettings()
        else:
            settings = settings_or_app or WorkerSettings()
            if not isinstance(settings, WorkerSettings):  # plain Settings: add the queue knobs
                settings = WorkerSettings(**settings.model_dump())
            self.settings = settings
            self.app = make_app(settings)
        self.timeout_s = float(timeout_s if timeout_s is not None else self.settings.query_timeout_s)
        self._fallback = fallback
        self._fingerprint = fingerprint
        self.down_cooldown_s = down_cooldown_s
        self._down_until = 0.0
        self.last_path: str | None = None
        self.last_latency_ms: float | None = None
        self.last_error: str | None = None

    @property
    def fallback(self):
        """The local encoder (loaded on first use from settings, on CPU, if not given)."""
        if self._fallback is None:
            from convsparse.compose import load_encoder

            self._fallback = load_encoder(self.settings.model_copy(update={"device": "cpu"}))
        return self._fallback

    @property
    def fingerprint(self) -> str:
        return self._fingerprint or self.fallback.fingerprint

    @property
    def vocabulary(self):
        return self.fallback.vocabulary

    @property
    def vocabulary_name(self) -> str:
        return self.fallback.vocabulary_name

    def encode_documents(self, texts, *, ids=None, batch_size: int = 32, progress: bool = False):
        return self.fallback.encode_documents(texts, ids=ids, batch_size=batch_size,
                                              progress=progress)

    def encode_remote(self, conversation: ConversationLike) -> dict[str, Any]:
        """The worker's raw answer; raises on timeout or broker errors."""
        from convsparse.workers.app import QUERY_QUEUE, QUERY_TASK

        result = self.app.send_task(
            QUERY_TASK, args=[_jsonable_conversation(conversation)], queue=QUERY_QUEUE,
            expires=self.timeout_s, retry=False,
        )
        try:
            return result.get(timeout=self.timeout_s, propagate=True)
        finally:
            try:
                result.forget()
            except Exception:  # best effort: results also expire
                pass

    def encode_conversation(self, conversation: ConversationLike) -> TermMap:
        start = time.perf_counter()
        self.last_error = None
        if time.monotonic() >= self._down_until:
            try:
                answer = self.encode_remote(conversation)
            except Exception as e:  # timeout, no broker, worker error
                self.last_error = f"remote encoding failed: {type(e).__name__}: {e}"
                self._down_until = time.monotonic() + self.down_cooldown_s
                logger.warning("%s; encoding locally", self.last_error)
            else:
                if answer.get("fingerprint") == self.fingerprint:
                    term_map = TermMap.from_rank_features(answer["terms"])
                    self.last_path = "remote"
                    self.last_latency_ms = elapsed_ms(start)
                    return term_map
                self.last_error = (
                    f"worker encoder {answer.get('fingerprint')} differs from the expected "
                    f"{self.fingerprint}; encoding locally"
                )
                logger.warning(self.last_error)
        term_map = self.fallback.encode_conversation(conversation)
        self.last_path = "local"
        self.last_latency_ms = elapsed_ms(start)
        return term_map

    def encode_conversations(self, conversations, **_: Any):
        from convsparse.termmap import TermMapBatch

        return TermMapBatch([self.encode_conversation(c) for c in conversations],
                            self.fingerprint)
