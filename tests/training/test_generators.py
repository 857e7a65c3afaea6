"""The LLM generators (issue 10): the OpenAI-compatible endpoint against a scripted local
server (answers, 429s, 5xx, timeouts, malformed bodies, the concurrency limit), the local path
with a tiny randomly initialised GPT-2 built here (no download), and the `rewrite` / `augment`
pipelines (cache, resume, per-turn failure reports)."""

from __future__ import annotations

import json
import re

import pytest

from convsparse.backoff import Backoff
from convsparse.benchmark_collections import load_conversations
from convsparse.training.generators import GenerationError
from convsparse.training.generators.augment import augment_conversations
from convsparse.training.generators.endpoint import EndpointGenerator
from convsparse.training.generators.fake_endpoint import FakeChatServer, Script
from convsparse.training.generators.rewrite import rewrite_conversations


def _question(content: str) -> str:
    m = re.search(r"Current question: (.*)", content)
    return m.group(1).strip() if m else content


def scripted(content: str) -> Script:
    q = _question(content)
    if "RATELIMIT" in q:
        return Script(answer=f"Rewrite: {q} standalone", status=429, fail_times=2)
    if "FLAKY" in q:
        return Script(answer=f"{q} standalone", status=503, fail_times=1)
    if "DOWN" in q:
        return Script(status=500)  # always
    if "SLOW" in q:
        return Script(answer="late", delay_s=1.5)
    if "BROKEN" in q:
        return Script(body="{not json")
    if "NOCHOICE" in q:
        return Script(body=json.dumps({"choices": []}))
    return Script(answer=f'"{q} standalone"\nextra line')


def write_convs(path, questions):
    with path.open("w") as f:
        for i, q in enumerate(questions):
            turns = [{"role": "user", "text": "first question"},
                     {"role": "assistant", "text": "an answer"}, {"role": "user", "text": q}]
            f.write(json.dumps({"id": f"t{i}", "conversation_id": "c", "turns": turns,
                                "rewrite": f"human {i}", "domain": "x"}) + "\n")
    return path


def endpoint(server, *, max_retries=3, **kw):
    kw = {"concurrency": 4, "timeout_s": 0.5, **kw}
    return EndpointGenerator(server.base_url, "tiny", backoff=Backoff(max_retries, 0.01, 0.02), **kw)


def test_endpoint_answers_retries_and_reports_each_failure():
    with FakeChatServer(scripted) as server, endpoint(server) as gen:
        prompts = [[{"role": "user", "content": f"Current question: {q}"}]
                   for q in ["good", "RATELIMIT", "FLAKY", "DOWN", "SLOW", "BROKEN", "NOCHOICE"]]
        out = gen.generate(prompts)
    assert out[0] == '"good standalone"\nextra line'
    assert out[1] == "Rewrite: RATELIMIT standalone"  # two 429s, then the answer
    assert out[2].startswith("FLAKY")  # one 503, then the answer
    assert isinstance(out[3], GenerationError) and "HTTP 500" in out[3].reason and out[3].attempts == 4
    assert isinstance(out[4], GenerationError) and "timed out" in out[4].reason
    assert isinstance(out[5], GenerationError) and "malformed" in out[5].reason and out[5].attempts == 1
    assert isinstance(out[6], GenerationError) and "malformed" in out[6].reason
    assert server.seen["Current question: RATELIMIT"] == 3
    assert server.seen["Current question: DOWN"] == 4
    assert server.seen["Current question: BROKEN"] == 1  # a malformed body is not retried


def test_endpoint_sends_the_api_key_and_does_not_retry_a_401():
    with FakeChatServer(scripted, api_key="sekret") as server:
        with endpoint(server, api_key="sekret") as gen:
            assert gen.generate([[{"role": "user", "content": "hi"}]]) == ['"hi standalone"\nextra line']
        with endpoint(server, api_key="wrong") as gen:
            (err,) = gen.generate([[{"role": "user", "content": "hi"}]])
        assert isinstance(err, GenerationError) and "HTTP 401" in err.reason and err.attempts == 1


def test_endpoint_keeps_to_its_concurrency_limit():
    # the server holds each request until 3 are in flight (at most 2 s): a client that sends
    # fewer at once never gets there; one that sends more would exceed 3
    with FakeChatServer(scripted, hold_until_concurrent=3) as server, \
            endpoint(server, concurrency=3, timeout_s=5) as gen:
        out = gen.generate([[{"role": "user", "content": f"q{i}"}] for i in range(12)])
    assert all(isinstance(o, str) for o in out)
    assert server.max_in_flight == 3


def test_rewrite_caches_resumes_and_reports_failed_turns(tmp_path):
    src = write_convs(tmp_path / "convs.jsonl", ["what about it?", "DOWN now", "and BROKEN?", "last one"])
    out = tmp_path / "rewritten.jsonl"
    with FakeChatServer(scripted) as server:
        with endpoint(server, max_retries=1) as gen:
            report = rewrite_conversations(src, out, gen, progress=False, chunk_size=2)
        assert (report.total, report.generated, report.cached, len(report.failures)) == (4, 2, 0, 2)
        assert {f["id"] for f in report.failures} == {"t1", "t2"}
        failures = [json.loads(x) for x in report.failures_path.read_text().splitlines()]
        assert [f["id"] for f in failures] == ["t1", "t2"] and "HTTP 500" in failures[0]["reason"]
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3"]  # no turn lost
        assert rows[0]["rewrite"] == "what about it? standalone" and rows[0]["domain"] == "x"
        assert rows[0]["reference_rewrite"] == "human 0" and "rewrite" not in rows[1]
        tasks = load_conversations(out)  # what the distillation teachers read
        assert tasks[0].rewrite == "what about it? standalone" and tasks[1].rewrite is None

        before = server.requests
        with endpoint(server, max_retries=0) as gen:  # a re-run: cached turns cost nothing
            again = rewrite_conversations(src, out, gen, progress=False)
        assert again.cached == 2 and again.generated == 0 and len(again.failures) == 2
        assert server.requests - before == 2  # only the two failed turns were asked again


def test_an_interrupted_rewrite_resumes_from_the_cache(tmp_path):
    src = write_convs(tmp_path / "convs.jsonl", [f"question {i}" for i in range(6)])
    out = tmp_path / "out.jsonl"

    class Interrupted(Exception):
        pass

    with FakeChatServer(scripted) as server:
        with endpoint(server) as gen:
            real, calls = gen.generate, []

            def dying(prompts):
                calls.append(len(prompts))
                if len(calls) == 2:
                    raise Interrupted  # killed after the first chunk
                return real(prompts)

            gen.generate = dying
            with pytest.raises(Interrupted):
                rewrite_conversations(src, out, gen, progress=False, chunk_size=2)
        assert not out.exists() and server.requests == 2
        with endpoint(server) as gen:
            report = rewrite_conversations(src, out, gen, progress=False, chunk_size=2)
        assert (report.cached, report.generated) == (2, 4) and server.requests == 6
        assert [t.rewrite for t in load_conversations(out)] == [f"question {i} standalone" for i in range(6)]
        # another prompt template is another cache key
        with endpoint(server) as gen:
            other = rewrite_conversations(src, out, gen, progress=False,
                                          template="Q: {question}\nH: {history}")
        assert other.generated == 6 and other.cached == 0


def test_only_missing_keeps_existing_rewrites(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"id": "a", "turns": [{"role": "user", "text": "x"}], "rewrite": "kept"}) + "\n"
                   + json.dumps({"id": "b", "turns": [{"role": "user", "text": "y"}]}) + "\n")
    with FakeChatServer(scripted) as server, endpoint(server) as gen:
        rep = rewrite_conversations(src, tmp_path / "o.jsonl", gen, progress=False, only_missing=True)
    assert rep.total == 2 and rep.generated == 1
    assert [t.rewrite for t in load_conversations(tmp_path / "o.jsonl")] == ["kept", "y standalone"]


def test_augment_keeps_each_variant_with_its_source(tmp_path):
    src = write_convs(tmp_path / "convs.jsonl", ["alpha?", "beta?"])
    out = tmp_path / "aug.jsonl"

    def reply(content):
        if "different, equally helpful assistant reply" in content:
            return Script(answer="another reply\nsecond line")
        return Script(answer=f"paraphrase {content.count('Variant')} of {_question(content)}")

    with FakeChatServer(reply) as server, endpoint(server) as gen:
        rep = augment_conversations(src, out, gen, n=2, kinds=("question", "response"), progress=False)
    assert rep.total == 8 and rep.generated == 8 and not rep.failures
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows[:5]] == ["t0", "t0::aug-question-0", "t0::aug-question-1",
                                           "t0::aug-response-0", "t0::aug-response-1"]
    v = rows[1]
    assert v["source_id"] == "t0" and v["conversation_id"] == "c" and v["rewrite"] == "human 0"
    assert v["turns"][:2] == rows[0]["turns"][:2] and v["turns"][2]["text"].startswith("paraphrase")
    assert rows[3]["turns"][1] == {"role": "assistant", "text": "another reply\nsecond line"}
    assert v["augmentation"]["kind"] == "question" and v["augmentation"]["index"] == 0
