"""A local Hugging Face causal or seq2seq LM through transformers `generate`.

Loading is offline (`local_files_only=True`): a folder, or a hub id already in the Hugging Face
cache; no weights are downloaded at run time. Device as the encoders choose it
(`resolve_device`: CUDA when available), dtype float32 unless given (`"bfloat16"` / `"float16"`
halve the memory on a GPU). Prompts are chat messages: the tokenizer's chat template when it has
one, else `role: content` lines ending in `assistant:`. Generation is greedy, in batches of
`batch_size` (left-padded for causal models), and returns only the new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convsparse.encoders.student import resolve_device
from convsparse.training.generators.base import GenerationError, Prompt


class LocalGenerator:
    def __init__(self, model, tokenizer, *, name: str = "local", device: str = "auto",
                 batch_size: int = 8, max_new_tokens: int = 64, max_input_tokens: int = 1024):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.max_input_tokens = max_input_tokens
        self.identity = f"local:{name}:{model.dtype}:max={max_new_tokens}"

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "auto", dtype: str = "float32",
                        **kw) -> LocalGenerator:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from convsparse.encoders.quiet_loading import quiet_loading

        with quiet_loading():
            config = AutoConfig.from_pretrained(name_or_path, local_files_only=True)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = auto.from_pretrained(name_or_path, dtype=getattr(torch, dtype),
                                         local_files_only=True)
            tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        return cls(model, tok, name=str(name_or_path), device=device, **kw)

    # ------------------------------------------------------------------ prompts
    def prompt_text(self, prompt: Prompt) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                                      add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant:"

    def _tokenize(self, texts: list[str]):
        self.tokenizer.padding_side = "right" if self.seq2seq else "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_input_tokens)
        return {k: v.to(self.device) for k, v in enc.items()}

    # ------------------------------------------------------------------ the interface
    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt]) -> list[str | GenerationError]:
        out: list[str | GenerationError] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [self.prompt_text(p) for p in prompts[i: i + self.batch_size]]
            try:
                enc = self._tokenize(texts)
                ids = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
                new = ids if self.seq2seq else ids[:, enc["input_ids"].shape[1]:]
                out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
            except (RuntimeError, ValueError) as e:  # e.g. out of memory: this batch fails, the run goes on
                out.extend(GenerationError(f"{type(e).__name__}: {e}") for _ in texts)
        return out

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt],
              continuations: Sequence[str]) -> list[float | GenerationError]:
        """Mean log-likelihood per token of each continuation given its prompt,
        `(1/|c|) sum_t log p(c_t | prompt, c_<t)`."""
        out: list[float | GenerationError] = []
        for prompt, cont in zip(prompts, continuations):
            ctx = self.tokenizer(self.prompt_text(prompt), add_special_tokens=not self.seq2seq)["input_ids"]
            tgt = self.tokenizer(" " + cont, add_special_tokens=False)["input_ids"]
            tgt = tgt[: max(1, self.max_input_tokens // 2)]
            ctx = ctx[-(self.max_input_tokens - len(tgt)):]
            if not tgt:
                out.append(GenerationError("empty continuation"))
                continue
            if self.seq2seq:
                logits = self.model(input_ids=torch.tensor([ctx], device=self.device),
                                    labels=torch.tensor([tgt], device=self.device)).logits[0]
                lp = torch.log_softmax(logits.float(), -1)
                ll = lp[torch.arange(len(tgt)), torch.tensor(tgt, device=self.device)]
            else:
                ids = torch.tensor([ctx + tgt], device=self.device)
                lp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), -1)
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(tgt) - 1, device=self.device)
                ll = lp[pos, torch.tensor(tgt, device=self.device)]
            out.append(float(ll.mean()))
        return out

    def close(self) -> None:
        pass


__all__ = ["LocalGenerator"]
