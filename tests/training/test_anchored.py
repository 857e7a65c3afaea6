"""The anchored recipe: held-out split, the term-space loss, and an end-to-end run on the
bundled sample with a tiny base (writes a student folder that `load_student` reads)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from convsparse.training.data import stratified_holdout
from convsparse.training.losses import TermSpaceLoss


def test_stratified_holdout_takes_n_per_domain_deterministically():
    pairs = [(f"{d}-{i}", d) for d in ("a", "b", "c") for i in range(10)] + [("a-0", "a")]
    held = stratified_holdout(pairs, 2, seed=13)
    assert len(held) == 6
    assert {h.split("-")[0] for h in held} == {"a", "b", "c"}
    assert held == stratified_holdout(list(reversed(pairs)), 2, seed=13)
    assert held != stratified_holdout(pairs, 2, seed=14)


def test_term_space_loss_is_the_mean_squared_distance():
    s = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 0.0]])
    loss = TermSpaceLoss()(s, t)
    assert loss.item() == pytest.approx((1 + 1 + 0 + 9) / 2)
    loss.backward()
    assert torch.allclose(s.grad, (s - t).detach())


def test_teacher_text_prefers_search_queries_then_rewrite():
    from convsparse.benchmark_collections import ConversationTask
    from convsparse.conversation import Turn
    from convsparse.training.anchored import teacher_text

    turns = (Turn(role="user", text="and there?"),)
    t = ConversationTask("t1", turns, "rewrite text", "c1", {"search_queries": ["q one", "q two"]})
    assert teacher_text(t, "search_queries") == "q one ; q two"
    assert teacher_text(t, "rewrite") == "rewrite text"
    bare = ConversationTask("t2", turns, None, "c2", {"search_queries": []})
    assert teacher_text(bare, "search_queries") is None


@pytest.mark.slow
def test_anchored_recipe_end_to_end_on_the_sample(tiny_model_dir, tmp_path, monkeypatch):
    from convsparse.benchmark_collections import SAMPLE_DIR
    from convsparse.encoders.anchored import AnchoredStudent
    from convsparse.encoders.loading import load_student
    from convsparse.training.anchored import distill_anchored
    from convsparse.training.config import load_config

    monkeypatch.setenv("CONVSPARSE_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(tiny_model_dir, tmp_path / "base")
    (tmp_path / "anchored.yaml").write_text(
        "recipe: anchored\noutput_dir: out\n"
        f"collection: {SAMPLE_DIR}\nbase: base\nteacher: rewrite\n"
        "holdout_per_domain: 1\nvalidation_conversations: 2\nepochs: 3\nbatch_size: 4\n"
        "n_candidates: 10\nterm_weight: 0.01\nflops_weight: 0.1\nprogress: false\n")
    cfg = load_config(tmp_path / "anchored.yaml")
    lines: list[str] = []
    result = distill_anchored(cfg, log=lines.append)
    assert result.examples > 0 and len(result.validation_mrr) == 4
    assert any("held out (never read)" in line for line in lines)
    report = json.loads((tmp_path / "out" / "training_report.json").read_text())
    assert report["heldout_conversations"] and report["validation_conversations"]
    assert not set(report["heldout_conversations"]) & set(report["validation_conversations"])
    student = load_student(tmp_path / "out", runtime="torch", device="cpu")
    assert isinstance(student, AnchoredStudent)
    assert student.encode_conversation([{"role": "user", "text": "lisbon"}])
    # the corpus is cached: a second run does not encode it again
    assert list((tmp_path / "cache" / "corpus").glob("documents-*.npz"))


def test_unknown_recipe_is_a_config_error(tmp_path):
    from convsparse.training.config import load_config

    (tmp_path / "c.yaml").write_text("recipe: magic\noutput_dir: o\n")
    with pytest.raises(ValueError, match="recipe"):
        load_config(tmp_path / "c.yaml")
