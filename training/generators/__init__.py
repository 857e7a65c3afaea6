"""LLM generators for the teacher side of distillation: standalone rewrites (`convsparse
rewrite`), G2R data-level augmentation (`convsparse augment`) and G2R model-level scores (the
`llm` teacher).

One small interface (`Generator`: `generate`, `score`, `identity`) and two implementations:
`LocalGenerator` (a Hugging Face causal or seq2seq LM, offline) and `EndpointGenerator` (any
OpenAI-compatible chat-completions server). `generator_from_settings` builds one from
`CONVSPARSE_LLM_*`; `convsparse.compose.load_generator` is the entry points' way in.
"""

from __future__ import annotations

import dataclasses

from convsparse.settings import Settings, get_settings
from convsparse.training.generators.base import GenerationError, Generator, Prompt
from convsparse.training.generators.cache import GenerationCache, cache_key
from convsparse.training.generators.prompts import DEFAULT_REWRITE_PROMPT, RATING_PROMPT


def generator_from_settings(settings: Settings | None = None) -> Generator:
    """`llm_backend == "endpoint"`: `EndpointGenerator(llm_base_url, llm_model, api key,
    llm_concurrency, llm_timeout_s, llm_max_retries)`; `"local"`: `LocalGenerator.from_pretrained(
    llm_model)` on `device` with `llm_dtype`."""
    s = settings or get_settings()
    if not s.llm_model:
        raise ValueError("no LLM configured: set CONVSPARSE_LLM_MODEL (the served model name, or a "
                         "local Hugging Face folder with CONVSPARSE_LLM_BACKEND=local)")
    if s.llm_backend == "local":
        from convsparse.training.generators.local import LocalGenerator

        return LocalGenerator.from_pretrained(s.llm_model, device=s.device, dtype=s.llm_dtype,
                                              batch_size=s.llm_batch_size,
                                              max_new_tokens=s.llm_max_new_tokens)
    from convsparse.training.generators.endpoint import DEFAULT_BACKOFF, EndpointGenerator

    key = s.llm_api_key.get_secret_value() if s.llm_api_key else None
    return EndpointGenerator(s.llm_base_url, s.llm_model, api_key=key,
                             concurrency=s.llm_concurrency, timeout_s=s.llm_timeout_s,
                             backoff=dataclasses.replace(DEFAULT_BACKOFF, max_retries=s.llm_max_retries),
                             max_tokens=s.llm_max_new_tokens)


__all__ = ["DEFAULT_REWRITE_PROMPT", "RATING_PROMPT", "GenerationCache", "GenerationError",
           "Generator", "Prompt", "cache_key", "generator_from_settings"]
