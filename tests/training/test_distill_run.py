"""Teacher runs round-trip, config errors are clear, a short run lowers the loss."""

import json
from pathlib import Path

import numpy as np
import pytest

from convsparse.evaluation.metrics import read_trec_run, write_trec_run
from convsparse.training.candidates import sample_candidates
from convsparse.training.config import DistillConfig
from convsparse.training.fusion import average_runs, normalise_run
from convsparse.training.teachers import bm25_run
from convsparse.training.trainer import distill

SAMPLE = Path(__file__).resolve().parents[2] / "convsparse" / "sample_data"


def test_trec_round_trip(tmp_path):
    corpus = {"a": "the cat sat on the mat", "b": "dogs bark loudly", "c": "a cat and a dog"}
    run = bm25_run({"q1": "cat mat", "q2": "cat"}, corpus, k=3)
    path = write_trec_run(run, tmp_path / "bm25.trec", tag="bm25")
    back = read_trec_run(path)
    assert back.keys() == run.keys()
    for q in run:
        assert back[q] == pytest.approx(run[q])
        assert list(back[q]) == sorted(run[q], key=lambda d: -run[q][d])
    first = path.read_text().splitlines()[0].split()
    assert first[:2] == ["q1", "Q0"] and first[3] == "1" and first[5] == "bm25"
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run({"bad id": {"a": 1.0}}, tmp_path / "x.trec")


def test_multi_teacher_average_and_candidates():
    r1 = {"q": {"a": 3.0, "b": 1.0}}
    r2 = {"q": {"b": 10.0, "c": 0.0}}
    z = normalise_run(r1)["q"]
    assert z["a"] == pytest.approx(1.0) and z["b"] == pytest.approx(-1.0)
    avg = average_runs([r1, r2])["q"]
    # a: (1 + floor(-1)) / 2 = 0; b: (-1 + 1) / 2 = 0; c: (floor(-1) + -1) / 2 = -1
    assert avg == pytest.approx({"a": 0.0, "b": 0.0, "c": -1.0})
    ranking = {f"d{i}": float(-i) for i in range(1, 30)}
    pos, negs = sample_candidates(ranking, ["d3"], n_negatives=5, rank_window=(10, 20))
    assert pos == "d3" and len(negs) == 5
    assert all(10 <= int(d[1:]) < 20 for d in negs)


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\ncorpus: c.jsonl\nconversations: []\nrank_window: [50, 10]\n"
                   "learning_rte: 0.1\n")
    with pytest.raises(ValueError) as e:
        DistillConfig.from_file(bad)
    msg = str(e.value)
    assert "conversations" in msg and "learning_rte" in msg and "bad.yaml" in msg
    with pytest.raises(ValueError, match="does not exist"):
        DistillConfig.from_file(tmp_path / "missing.yaml")
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"output_dir": "out", "corpus": "c.jsonl",
                              "conversations": [{"path": "x.jsonl"}], "teachers": ["bm25"],
                              "teacher_weights": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="one weight per teacher"):
        DistillConfig.from_file(ok)


def test_short_run_lowers_the_loss(tiny_model_dir, tmp_path):
    import torch

    torch.set_num_threads(1)
    cfg = DistillConfig(
        output_dir=tmp_path / "run", student=str(tiny_model_dir), corpus=SAMPLE / "corpus.jsonl",
        conversations=[{"path": SAMPLE / "conversations.jsonl"}], qrels=SAMPLE / "qrels.tsv",
        holdout_fraction=0.25, teachers=["bm25"], n_negatives=8, rank_window=(2, 60),
        steps=30, batch_size=16, learning_rate=1e-3, max_length=64, checkpoint_every=10,
        progress=False, device="cpu", seed=0, infonce_weight=0.1,
    )
    result = distill(cfg)
    losses = [r["loss"] for r in result.log if r["stage"] == "conversations"]
    assert len(losses) == 30
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    assert (result.model_dir / "config.json").exists()
    assert (tmp_path / "run" / "teacher_runs").is_dir()
    assert (tmp_path / "run" / "checkpoint" / "state.pt").exists()
    from convsparse.encoders.student import SpladeStudent

    student = SpladeStudent.from_pretrained(result.model_dir, device="cpu")
    assert len(student.encode_conversation("Tell me about Lisbon.")) > 0
    # resume: a finished run picks up at its last checkpoint and does no more steps
    again = distill(cfg)
    assert [r["loss"] for r in again.log if r["stage"] == "conversations"][:30] == losses


def test_cli_reports_config_errors(tmp_path):
    import typer
    from typer.testing import CliRunner

    from convsparse.cli.distill import register

    app = typer.Typer()
    register(app)

    @app.command()
    def _noop() -> None:  # a second command keeps `distill` a named subcommand
        pass

    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: out\n")
    result = CliRunner().invoke(app, ["distill", str(bad)])
    assert result.exit_code == 2
    assert "corpus" in result.output and "conversations" in result.output
