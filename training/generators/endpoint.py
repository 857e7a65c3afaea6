"""Any OpenAI-compatible chat-completions endpoint (vLLM, TGI, Ollama, llama.cpp server, hosted
APIs): `POST {base_url}/chat/completions`, through httpx.

- Bounded concurrency: at most `concurrency` requests in flight (a thread pool over one
  `httpx.Client`, whose connection pool has the same size).
- Timeouts: `timeout_s` per request (connect, read, write, pool).
- Retries: a 429, a 5xx, a timeout or a dropped connection is retried as `backoff` (a
  `convsparse.backoff.Backoff`) says: up to `max_retries` times with capped exponential backoff
  and equal jitter; a `Retry-After` header in seconds is honoured up to the same cap. A 4xx other than 429 and a
  malformed body (not JSON, no `choices[0].message.content`) are not retried: they would fail the
  same way again, so they come back at once as that item's `GenerationError`.
- The API key (`CONVSPARSE_LLM_API_KEY`) is sent as `Authorization: Bearer ...` when set.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from convsparse.backoff import Backoff
from convsparse.training.generators.base import GenerationError, Prompt
from convsparse.training.generators.prompts import RATING_PROMPT

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Four retries, waits capped from 0.5 s up to 20 s.
DEFAULT_BACKOFF = Backoff(max_retries=4, initial_s=0.5, max_s=20.0)


class EndpointGenerator:
    """Chat completions from an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 concurrency: int = 8, timeout_s: float = 60.0,
                 backoff: Backoff = DEFAULT_BACKOFF, max_tokens: int = 128,
                 temperature: float = 0.0, transport: httpx.BaseTransport | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.concurrency = model, concurrency
        self.backoff = backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout_s), transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="convsparse-llm")
        self._lock = threading.Lock()
        self.requests_sent = 0  # every HTTP attempt, retries included
        self.identity = f"endpoint:{self.url}:{model}:t={temperature}:max={max_tokens}"

    # ------------------------------------------------------------------ one request
    def _delay(self, attempt: int, retry_after: str | None) -> float:
        waited = self.backoff.retry_after(retry_after)
        return self.backoff.delay(attempt + 1) if waited is None else waited

    def _complete(self, prompt: Prompt, max_tokens: int | None = None) -> str | GenerationError:
        body = {"model": self.model, "messages": [dict(m) for m in prompt],
                "temperature": self.temperature, "max_tokens": max_tokens or self.max_tokens}
        reason = "no attempt made"
        for attempt in range(self.backoff.max_retries + 1):
            retry_after = None
            with self._lock:
                self.requests_sent += 1
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                reason = f"timed out ({type(e).__name__})"
            except httpx.TransportError as e:
                reason = f"connection failed ({type(e).__name__}: {e})"
            else:
                if resp.status_code == 200:
                    return _content(resp, attempts=attempt + 1)
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in _RETRY_STATUS:
                    return GenerationError(reason + " (not retried; check the model name, "
                                           "the URL and the API key)", attempts=attempt + 1)
                retry_after = resp.headers.get("retry-after")
            if attempt < self.backoff.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        return GenerationError(f"{reason} (after {self.backoff.max_retries + 1} attempts)",
                               attempts=self.backoff.max_retries + 1)

    # ------------------------------------------------------------------ the interface
    def generate(self, prompts: Sequence[Prompt]) -> list[str | GenerationError]:
        return list(self._pool.map(self._complete, prompts))

    def score(self, prompts: Sequence[Prompt],
              continuations: Sequence[str]) -> list[float | GenerationError]:
        """A rating prompt: `RATING_PROMPT` with the continuation (the passage) is appended to
        each prompt (the conversation) as a user message; the first number in the reply is the
        score (a chat endpoint returns no prompt log-probabilities)."""
        asks = [[*map(dict, p), {"role": "user", "content": RATING_PROMPT.format(passage=c)}]
                for p, c in zip(prompts, continuations)]
        out: list[float | GenerationError] = []
        for reply in self._pool.map(lambda p: self._complete(p, max_tokens=8), asks):
            if isinstance(reply, GenerationError):
                out.append(reply)
                continue
            m = re.search(r"-?\d+(?:\.\d+)?", reply)
            out.append(float(m.group()) if m else GenerationError(f"no rating in reply {reply[:80]!r}"))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> EndpointGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _content(resp: httpx.Response, *, attempts: int) -> str | GenerationError:
    try:
        data = resp.json()
        content = data["choices"][0]["message"]["content"]
    except (json.JSONDecodeError, ValueError, KeyError, IndexError, TypeError):
        return GenerationError(f"malformed response body (expected choices[0].message.content): "
                               f"{resp.text[:200]!r}", attempts=attempts)
    if not isinstance(content, str):
        return GenerationError(f"malformed response body: content is {type(content).__name__}",
                               attempts=attempts)
    return content


__all__ = ["EndpointGenerator"]
