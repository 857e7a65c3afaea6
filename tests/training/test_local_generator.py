"""The local generator path on a tiny randomly initialised GPT-2 (and T5) built in the test:
a word-level tokenizer over a small vocabulary, no download."""

from __future__ import annotations

import json
import math

import pytest
import torch

from convsparse.benchmark_collections import load_conversations
from convsparse.training.generators.local import LocalGenerator
from convsparse.training.generators.rewrite import rewrite_conversations

WORDS = ("user assistant system : what about it ? the cat sat on mat where do guinea pigs sleep "
         "eat rewrite question conversation so far current none standalone a an of to is").split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>")


def tiny_gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_gpt2(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_batched_generation_equals_one_at_a_time(saved_tiny):
    gen = LocalGenerator.from_pretrained(str(saved_tiny), device="cpu", batch_size=3, max_new_tokens=5)
    prompts = [[{"role": "user", "content": t}] for t in
               ["what about it ?", "the cat sat on the mat", "where do guinea pigs sleep ?", "eat"]]
    batched = gen.generate(prompts)
    single = [gen.generate([p])[0] for p in prompts]
    assert batched == single and all(isinstance(t, str) for t in batched)
    assert gen.device == "cpu" and gen.identity.startswith(f"local:{saved_tiny}")


def test_score_is_the_mean_token_log_likelihood(saved_tiny):
    gen = LocalGenerator.from_pretrained(str(saved_tiny), device="cpu")
    prompt = [{"role": "user", "content": "where do guinea pigs sleep ?"}]
    (s,) = gen.score([prompt], ["the cat sat"])
    ctx = gen.tokenizer(gen.prompt_text(prompt))["input_ids"]
    tgt = gen.tokenizer(" the cat sat", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = gen.model(input_ids=torch.tensor([ctx + tgt])).logits[0]
    lp = torch.log_softmax(logits, -1)
    expected = sum(lp[len(ctx) - 1 + i, t].item() for i, t in enumerate(tgt)) / len(tgt)
    assert math.isclose(s, expected, rel_tol=1e-5) and s < 0


def test_seq2seq_models_generate_and_score():
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    gen = LocalGenerator(T5ForConditionalGeneration(cfg), tok, device="cpu", max_new_tokens=4)
    out = gen.generate([[{"role": "user", "content": "the cat"}], [{"role": "user", "content": "eat"}]])
    assert all(isinstance(t, str) for t in out)
    assert all(isinstance(x, float) for x in gen.score([[{"role": "user", "content": "cat"}]], ["mat"]))


def test_rewrite_with_the_local_model_is_cached(saved_tiny, tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"id": f"t{i}", "turns": [{"role": "user", "text": q}]}) + "\n"
                           for i, q in enumerate(["what about it ?", "the cat sat"])))
    gen = LocalGenerator.from_pretrained(str(saved_tiny), device="cpu", max_new_tokens=6)
    calls = []
    real = gen.generate
    gen.generate = lambda prompts: calls.append(len(prompts)) or real(prompts)
    first = rewrite_conversations(src, tmp_path / "o.jsonl", gen, progress=False)
    second = rewrite_conversations(src, tmp_path / "o.jsonl", gen, progress=False)
    # a random model may emit nothing usable for a turn: that turn is a reported failure
    assert first.generated + len(first.failures) == 2
    assert second.cached == first.generated and second.generated == 0
    assert len(load_conversations(tmp_path / "o.jsonl")) == 2
