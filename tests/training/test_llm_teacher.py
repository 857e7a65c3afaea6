"""The `llm` teacher (G2R model-level) and augmented variants in distillation data."""

from __future__ import annotations

import json
import random

from convsparse.conversation import Turn
from convsparse.training.config import ConversationSource, DistillConfig
from convsparse.training.data import load_tasks, sample_tasks, split_tasks
from convsparse.training.fusion import average_runs
from convsparse.training.generators import GenerationError
from convsparse.training.generators.endpoint import EndpointGenerator
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script
from convsparse.training.teachers import TEACHERS, TeacherInputs, llm_run

CORPUS = {"d1": "cats sleep on mats", "d2": "dogs chase cats", "d3": "cats eat fish",
          "d4": "birds sing", "d5": "cats purr when happy"}
CONVS = {"q1": [Turn(role="user", text="tell me about cats"),
                Turn(role="assistant", text="they are pets"), Turn(role="user", text="what do they eat?")]}
QUERIES = {"q1": "what do cats eat"}


class Scripted:
    identity = "scripted"

    def __init__(self, table):
        self.table, self.calls = table, []

    def generate(self, prompts):
        raise AssertionError("not used")

    def score(self, prompts, continuations):
        self.calls.append((prompts, continuations))
        return [self.table.get(c, GenerationError("no score")) for c in continuations]


def test_llm_teacher_reorders_bm25_candidates_by_the_generator_score():
    gen = Scripted({"cats eat fish": 9.0, "dogs chase cats": 1.0, "cats sleep on mats": 2.0,
                    "cats purr when happy": 3.0})
    inputs = TeacherInputs(QUERIES, CORPUS, k=10, conversations=CONVS, generator=gen)
    run = TEACHERS["llm"](inputs)
    assert list(run["q1"]) == ["d3", "d5", "d1", "d2"]  # the BM25 candidates (d4 shares no term)
    prompts, conts = gen.calls[0]
    assert prompts[0][-1] == {"role": "user", "content": "what do they eat?"} and len(prompts[0]) == 3
    fused = average_runs([run, TEACHERS["bm25"](inputs)])  # fused like any other teacher
    assert set(fused["q1"]) >= set(run["q1"])


def test_failed_candidates_get_the_lowest_score():
    gen = Scripted({"cats eat fish": 5.0, "dogs chase cats": -1.0})
    run = llm_run(TeacherInputs(QUERIES, CORPUS, k=10, conversations=CONVS, generator=gen))
    assert run["q1"]["d3"] == 5.0 and run["q1"]["d1"] == -1.0 and run["q1"]["d5"] == -1.0


def test_endpoint_ratings_are_the_scores():
    def reply(content):
        return Script(answer="8" if "cats eat fish" in content else "Rating: 2/10")

    with FakeChatServer(reply) as server, EndpointGenerator(server.base_url, "m", concurrency=2) as gen:
        run = llm_run(TeacherInputs(QUERIES, CORPUS, k=10, conversations=CONVS, generator=gen))
    assert next(iter(run["q1"])) == "d3" and run["q1"]["d3"] == 8.0 and run["q1"]["d1"] == 2.0


def test_config_accepts_the_llm_teacher_and_a_source_weight(tmp_path):
    cfg = DistillConfig.model_validate({"output_dir": tmp_path, "corpus": tmp_path / "c.jsonl",
                                        "teachers": ["bm25", "llm"],
                                        "conversations": [{"path": "a.jsonl"},
                                                          {"path": "aug.jsonl", "weight": 0.5}]})
    assert cfg.conversations[1].weight == 0.5


def test_augmented_variants_take_their_source_qrels_and_never_hold_out(tmp_path):
    src, aug = tmp_path / "src.jsonl", tmp_path / "aug.jsonl"
    rows, variants = [], []
    for i in range(10):
        rows.append({"id": f"t{i}", "conversation_id": f"c{i}", "turns": [{"role": "user", "text": f"q {i}"}],
                     "rewrite": f"r {i}"})
        variants.append({"id": f"t{i}::aug-question-0", "source_id": f"t{i}", "conversation_id": f"c{i}",
                         "turns": [{"role": "user", "text": f"v {i}"}], "rewrite": f"r {i}"})
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    aug.write_text("".join(json.dumps(r) + "\n" for r in variants))
    qrels = {f"t{i}": {f"d{i}": 1} for i in range(10)}
    tasks = load_tasks([ConversationSource(path=src), ConversationSource(path=aug, weight=0.25)], qrels)
    v = [t for t in tasks if t.source_id][0]
    assert v.positives == ["d0"] and v.weight == 0.25 and v.teacher_query == "r 0"
    train, test = split_tasks(tasks, 0.3, seed=0)
    held = {t.conversation_id for t in test}
    assert len(test) == 3 and all(t.source_id is None for t in test)
    assert not [t for t in train if t.conversation_id in held]  # no variant of a held-out conversation
    # weighted sampling: the weight-0.25 variants are drawn less often than their sources
    rng, counts = random.Random(0), {"src": 0, "aug": 0}
    for _ in range(400):
        for t in sample_tasks(train, 2, rng):
            counts["aug" if t.source_id else "src"] += 1
    assert counts["aug"] < counts["src"]
    plain = [t for t in train if not t.source_id]
    assert sample_tasks(plain, 3, random.Random(1)) == random.Random(1).sample(plain, 3)
