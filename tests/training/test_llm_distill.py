"""The user's path end to end on the sample collection: `rewrite` (scripted server) ->
`augment` -> `distill` with the variants at a weight and the `llm` teacher fused with BM25."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convsparse.benchmark_collections import load_conversations
from convsparse.training.config import DistillConfig
from convsparse.training.generators.augment import augment_conversations
from convsparse.training.generators.endpoint import EndpointGenerator
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script
from convsparse.training.generators.prompts import DEFAULT_REWRITE_PROMPT, render
from convsparse.training.generators.rewrite import rewrite_conversations
from convsparse.training.trainer import distill

SAMPLE = Path(__file__).resolve().parents[2] / "convsparse" / "sample_data"


@pytest.mark.slow
def test_rewrite_augment_then_distill_with_the_llm_teacher(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    src = tmp_path / "chats.jsonl"  # the sample conversations without their rewrites: a user's logs
    tasks = load_conversations(SAMPLE / "conversations.jsonl")
    src.write_text("".join(json.dumps({"id": t.id, "conversation_id": t.conversation_id,
                                       "turns": [{"role": x.role, "text": x.text} for x in t.turns]}) + "\n"
                           for t in tasks))
    answers = {render(DEFAULT_REWRITE_PROMPT, t.turns)[-1]["content"]: t.rewrite or t.question for t in tasks}

    def reply(content):
        if content in answers:
            return Script(answer=answers[content])
        if content.startswith("Passage:"):  # the llm teacher's rating prompt
            return Script(answer=str(len(content) % 11))
        return Script(answer="Could you say more about that?")  # augmentation

    with FakeChatServer(reply) as server:
        with EndpointGenerator(server.base_url, "m", concurrency=4) as gen:
            rw = rewrite_conversations(src, tmp_path / "rw.jsonl", gen, progress=False)
            aug = augment_conversations(tmp_path / "rw.jsonl", tmp_path / "aug.jsonl", gen, n=1,
                                        include_sources=False, progress=False)
        assert not rw.failures and not aug.failures
        monkeypatch.setenv("CONVSPARSE_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("CONVSPARSE_LLM_MODEL", "m")
        monkeypatch.setenv("CONVSPARSE_LLM_RERANK_DEPTH", "10")
        cfg = DistillConfig(
            output_dir=tmp_path / "run", student=str(tiny_model_dir), corpus=SAMPLE / "corpus.jsonl",
            conversations=[{"path": tmp_path / "rw.jsonl"}, {"path": tmp_path / "aug.jsonl", "weight": 0.5}],
            qrels=SAMPLE / "qrels.tsv", holdout_fraction=0.25, teachers=["bm25", "llm"], n_negatives=4,
            rank_window=(2, 10), steps=4, batch_size=4, max_length=64, progress=False, device="cpu")
        result = distill(cfg)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert any("::aug-" in t for t in split["train"]) and not any("::aug-" in t for t in split["heldout"])
    assert list((tmp_path / "run" / "teacher_runs").glob("llm-*.trec"))
    assert len([r for r in result.log if r["stage"] == "conversations"]) == 4
