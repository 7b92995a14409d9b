"""HTTPJudge: answer reading, retries and failures against local stub servers, and the real thing (llama.cpp's server).

The stubs are tiny http.server instances on 127.0.0.1 that answer from a script and record every request, so each
failure mode (down, slow, garbage, rate-limited, unauthorised) is reproduced exactly and quickly.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from alignkit.judges import HTTPJudge, Judge, JudgeError, judge_from_spec
from alignkit.judges.http import logprob_positions, option_probabilities, parse_choice, parse_rating

# Fast failure settings for the stubs: tests never wait on real backoff.
FAST = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01, "max_backoff": 0.05}
SECRET = "sk-test-7f3a9c-do-not-print"


# ---------------------------------------------------------------------------------------------
# Stub server
# ---------------------------------------------------------------------------------------------


class Reply:
    """One scripted answer: status, body (bytes, str or JSON-able), headers, and a delay before answering."""

    def __init__(self, body: Any = b"", status: int = 200, headers: dict | None = None, delay: float = 0.0):
        if isinstance(body, bytes):
            self.body = body
        elif isinstance(body, str):
            self.body = body.encode()
        else:
            self.body = json.dumps(body).encode()
        self.status, self.headers, self.delay = status, headers or {}, delay


class Stub:
    """A local server answering POSTs from ``script``: a list of Reply (the last one repeats) or a function of the
    request's JSON body. Records every request (path, headers, body) and the most requests ever in flight."""

    def __init__(self, script: list[Reply] | Callable[[dict], Reply]):
        self.script = script
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                with stub._lock:
                    index = len(stub.requests)
                    stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    if callable(stub.script):
                        reply = stub.script(body)
                    else:
                        reply = stub.script[min(index, len(stub.script) - 1)]
                    time.sleep(reply.delay)
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): that is what the slow tests provoke
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers: list[Stub] = []

    def make(script) -> Stub:
        servers.append(Stub(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def chat(content: str | None, logprobs: Any = None) -> dict:
    """An OpenAI chat completion response."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
    }


def logprobs(*positions: tuple[str, dict[str, float]]) -> dict:
    """Chat-shaped logprobs from (generated token, {alternative: probability}) pairs."""
    return {
        "content": [
            {
                "token": token,
                "logprob": math.log(alternatives.get(token, 1e-9)),
                "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alternatives.items()],
            }
            for token, alternatives in positions
        ]
    }


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


# ---------------------------------------------------------------------------------------------
# Reading answers
# ---------------------------------------------------------------------------------------------


def test_option_probabilities_sum_token_variants_at_the_first_option_token():
    positions = logprob_positions(
        {
            "logprobs": logprobs(
                ("The", {"The": 0.6, "(": 0.4}),  # words before the answer are stepped over
                (" answer", {" answer": 1.0}),
                (" (", {" (": 0.9, " A": 0.1}),
                ("A", {"A": 0.5, " A": 0.1, "(A": 0.1, "A)": 0.05, "B": 0.15, "**B**": 0.05, "C": 0.05}),
            )
        }
    )
    probabilities = option_probabilities(positions, ("A", "B"))
    assert probabilities == pytest.approx({"A": 0.75 / 0.95, "B": 0.2 / 0.95})


def test_option_probabilities_none_without_an_option_token_and_generated_token_joins_alternatives():
    assert option_probabilities(logprob_positions({"logprobs": logprobs(("Both", {"Both": 1.0}))}), "AB") is None
    # The server left the generated token out of top_logprobs: it still counts.
    choice = {"logprobs": {"content": [{"token": "B", "logprob": math.log(0.6), "top_logprobs": []}]}}
    assert option_probabilities(logprob_positions(choice), ("A", "B")) == {"A": 0.0, "B": 1.0}


def test_legacy_completion_logprobs_shape_is_read():
    choice = {
        "logprobs": {
            "tokens": [" (", "B"],
            "token_logprobs": [-0.1, math.log(0.6)],
            "top_logprobs": [{" (": -0.1}, {"B": math.log(0.6), "A": math.log(0.2)}],
        }
    }
    assert option_probabilities(logprob_positions(choice), ("A", "B")) == pytest.approx({"A": 0.25, "B": 0.75})
    assert logprob_positions({"logprobs": None}) is None
    assert logprob_positions({"logprobs": {"content": None}}) is None


@pytest.mark.parametrize(
    "choice, message",
    [
        ({"logprobs": [1, 2]}, "expected an object"),
        ({"logprobs": {"content": "A"}}, "expected a list"),
        ({"logprobs": {"content": [{"token": "A", "logprob": "high"}]}}, "logprob is 'high'"),
        ({"logprobs": {"content": [{"token": "A", "logprob": 0, "top_logprobs": [7]}]}}, r"top_logprobs\[0\]"),
    ],
)
def test_malformed_logprobs_are_named(choice, message):
    with pytest.raises(ValueError, match=message):
        logprob_positions(choice)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", "A"),
        ("(B)", "B"),
        ("**B**", "B"),
        ("B. Because it is accurate.", "B"),
        ("The answer is (A).", "A"),
        ("A better reply would be (B)", "B"),
        ("Answer: B", "B"),
        ("Response A is more helpful.", "A"),
        ("Both replies are fine.", None),
        ("", None),
        ("a", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("7", 7), ("Rating: 8/9", 8), ("I would give it 3 out of 9.", 3), ("12 then 4", 4), ("7.5", None), ("none", None)],
)
def test_parse_rating(text, expected):
    assert parse_rating(text, 1, 9) == expected


# ---------------------------------------------------------------------------------------------
# The judge against stubs
# ---------------------------------------------------------------------------------------------


def _order_aware(body: dict) -> Reply:
    """A server that prefers the reply 'good': P(option showing 'good') = 7/9, read from log-probs."""
    if "(A) good" in user_text(body):
        return Reply(chat("(A", logprobs(("(", {"(": 1.0}), ("A", {"A": 0.5, " A": 0.2, "B": 0.2, "C": 0.1}))))
    return Reply(chat("B", logprobs(("B", {"B": 0.6, "(B": 0.1, "A": 0.2}))))


def test_compare_reads_logprobs_in_both_orders_and_averages(stub):
    server = stub(_order_aware)
    judge = HTTPJudge(server.url, "judge-model", top_logprobs=5, max_tokens=4, **FAST)
    assert isinstance(judge, Judge)
    p = judge.compare("Say something nice.", "good", "bad")
    assert p == pytest.approx(7 / 9)
    assert judge.compare("Say something nice.", "bad", "good") == pytest.approx(2 / 9)
    assert judge.stats["logprob_answers"] == 4 and judge.stats["text_answers"] == 0
    # The questions: both orders, greedy, few tokens, log-probs asked for, at /v1/chat/completions.
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    orders = sorted(user_text(r["body"]).split("?\n")[-1] for r in server.requests[:2])  # sent concurrently
    assert orders == ["(A) bad\n(B) good\n\nAnswer with (A) or (B).", "(A) good\n(B) bad\n\nAnswer with (A) or (B)."]
    body = server.requests[0]["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0 and body["max_tokens"] == 4
    assert body["logprobs"] is True and body["top_logprobs"] == 5


def test_compare_uses_principle_and_reference(stub):
    server = stub([Reply(chat("A"))])
    judge = HTTPJudge(server.url, **FAST)
    judge.compare([{"role": "user", "content": "2+2?"}], "4", "5", principle="Which is correct?", reference="4")
    text = user_text(server.requests[0]["body"])
    assert "Which is correct?" in text and "User: 2+2?" in text and "reference answer, for the judge only: 4" in text


def test_without_logprobs_the_answer_text_is_parsed(stub):
    # The server ignores logprobs (as many hosted APIs do) and always names the reply shown first.
    server = stub([Reply(chat("(A)"))])
    judge = HTTPJudge(server.url, **FAST)
    assert judge.compare("q", "x", "y") == 0.5  # position bias alone cancels out
    server.script = lambda body: Reply(chat("Answer: B" if "(B) good" in user_text(body) else "A"))
    assert judge.compare("q", "bad", "good") == 0.0
    assert judge.compare("q", "good", "bad") == 1.0
    assert judge.stats["text_answers"] == 6 and judge.stats["logprob_answers"] == 0


def test_logprobs_switched_off_are_not_requested(stub):
    server = stub([Reply(chat("A"))])
    HTTPJudge(server.url, logprobs=False, **FAST).compare("q", "x", "y")
    assert "logprobs" not in server.requests[0]["body"] and "top_logprobs" not in server.requests[0]["body"]


def test_unparseable_answers_count_as_undecided_with_a_warning_or_raise(stub, caplog):
    server = stub([Reply(chat("Both are lovely."))])
    judge = HTTPJudge(server.url, **FAST)
    with caplog.at_level(logging.WARNING, logger="alignkit.judges.http"):
        assert judge.compare("q", "x", "y") == 0.5
        assert judge.score(["q"], ["x"]) == [5.0]  # the midpoint of 1..9
    assert judge.stats["unparsed_answers"] == 3
    assert "could not read (A) or (B)" in caplog.text and "Both are lovely" in caplog.text
    strict = HTTPJudge(server.url, on_unparseable="raise", **FAST)
    with pytest.raises(JudgeError, match="item 0: could not read a rating from 1 to 9"):
        strict.score(["q"], ["x"])


def test_score_is_the_expected_rating_from_logprobs_else_the_parsed_number(stub):
    digits = {"7": 0.5, " 8": 0.25, "**9": 0.125, "ten": 0.1, "0": 0.025}  # "0" is off the 1..9 scale
    server = stub([Reply(chat("7", logprobs(("7", digits)))), Reply(chat("I'd say 4 out of 9."))])
    judge = HTTPJudge(server.url, **FAST, max_concurrency=1)
    scores = judge.score(["q", "q"], ["first", "second"], references=["r1", "r2"])
    assert scores == pytest.approx([(7 * 0.5 + 8 * 0.25 + 9 * 0.125) / 0.875, 4.0])
    assert judge.stats["logprob_answers"] == 1 and judge.stats["text_answers"] == 1
    text = user_text(server.requests[0]["body"])
    assert "Reply:\nfirst" in text and "from 1 to 9" in text and "r1" in text
    server.script = [Reply(chat("2", logprobs(("2", {"2": 0.5, "4": 0.5, "7": 0.5}))))]
    low_scale = HTTPJudge(server.url, rating_scale=(0, 4), **FAST)
    assert low_scale.score(["q"], ["x"]) == [3.0]  # 7 is off the 0..4 scale
    assert "from 0 to 4" in user_text(server.requests[-1]["body"])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        judge.score(["q", "q"], ["x"])
    with pytest.raises(JudgeError, match="item 0: completion must be a str"):
        judge.score(["q"], [None])


def test_compare_many_keeps_order_and_respects_max_concurrency(stub):
    def slow_order_aware(body):
        reply = _order_aware(body)
        reply.delay = 0.15
        return reply

    server = stub(slow_order_aware)
    judge = HTTPJudge(server.url, max_concurrency=3, **FAST)
    items = [("q", "good", "bad"), ("q", "bad", "good"), {"prompt": "q", "a": "good", "b": "bad"}, ("q", "bad", "good")]
    started = time.monotonic()
    results = judge.compare_many(items)
    elapsed = time.monotonic() - started
    assert results == pytest.approx([7 / 9, 2 / 9, 7 / 9, 2 / 9])
    assert len(server.requests) == 8 and server.max_in_flight == 3
    assert elapsed < 8 * 0.15  # concurrent, not one after another
    with pytest.raises(ValueError, match="compare item 0 must be"):
        judge.compare_many(["just a string"])
    with pytest.raises(ValueError, match="compare item 0 needs keys prompt, a, b"):
        judge.compare_many([{"prompt": "q", "a": "x"}])


# ---------------------------------------------------------------------------------------------
# Failures: down, slow, rate-limited, unauthorised, garbage
# ---------------------------------------------------------------------------------------------


def test_server_down_fails_after_the_configured_retries_quickly(unused_port):
    url = f"http://127.0.0.1:{unused_port}/v1"  # nothing listens there
    judge = HTTPJudge(url, **FAST)
    started = time.monotonic()
    expected = r"failed after 3 attempts \(2 retries\); last error: connection failed"
    with pytest.raises(JudgeError, match=expected) as info:
        judge.score(["q"], ["x"])
    assert time.monotonic() - started < 3
    assert url + "/chat/completions" in str(info.value)
    assert judge.stats["requests"] == 3 and judge.stats["retries"] == 2


def test_slow_server_times_out_retries_then_fails(stub):
    server = stub([Reply(chat("A"), delay=1.0)])
    judge = HTTPJudge(server.url, timeout=0.2, max_retries=1, backoff=0.01, max_backoff=0.05)
    started = time.monotonic()
    with pytest.raises(JudgeError, match=r"failed after 2 attempts \(1 retries\); last error: timed out after 0.2 s"):
        judge.score(["q"], ["x"])
    assert time.monotonic() - started < 1.5
    assert len(server.requests) == 2 and judge.stats["retries"] == 1


def test_slow_first_request_succeeds_on_retry(stub):
    server = stub([Reply(chat("7"), delay=1.0), Reply(chat("7"))])
    judge = HTTPJudge(server.url, timeout=0.3, max_retries=2, backoff=0.01, max_backoff=0.05)
    assert judge.score(["q"], ["x"]) == [7.0]
    assert len(server.requests) == 2 and judge.stats["retries"] == 1


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limit_and_server_errors_are_retried_then_succeed(stub, status):
    server = stub([Reply({"error": "slow down"}, status=status, headers={"Retry-After": "0.2"}), Reply(chat("A"))])
    judge = HTTPJudge(server.url, max_concurrency=1, **FAST)
    started = time.monotonic()
    assert judge.compare("q", "x", "y") == 0.5
    assert len(server.requests) == 3 and judge.stats["retries"] == 1
    assert time.monotonic() - started >= 0.05  # Retry-After (capped at max_backoff = 0.05 s) was waited


def test_rate_limit_forever_fails_naming_the_status(stub):
    server = stub([Reply("Too Many Requests", status=429)])
    judge = HTTPJudge(server.url, **FAST)
    with pytest.raises(JudgeError, match=r"failed after 3 attempts \(2 retries\); last error: HTTP 429: Too Many"):
        judge.score(["q"], ["x"])
    assert len(server.requests) == 3


def test_api_key_is_sent_as_bearer_and_never_shown(stub, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_TEST_JUDGE_KEY", SECRET)
    server = stub([Reply(chat("5"))])
    judge = HTTPJudge(server.url, api_key_env="ALIGNKIT_TEST_JUDGE_KEY", **FAST)
    judge.score(["q"], ["x"])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(judge) and SECRET not in str(vars(judge))
    # Without api_key_env nothing is sent, even when OPENAI_API_KEY is set: a key goes only where it is named.
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    HTTPJudge(server.url, **FAST).score(["q"], ["x"])
    assert "Authorization" not in server.requests[1]["headers"]


def test_unauthorised_is_not_retried_and_the_key_is_not_in_the_error(stub, monkeypatch, caplog):
    monkeypatch.setenv("ALIGNKIT_TEST_JUDGE_KEY", SECRET)
    # A careless server echoes the key it rejected.
    server = stub([Reply({"error": {"message": f"Incorrect API key provided: {SECRET}"}}, status=401)])
    judge = HTTPJudge(server.url, api_key_env="ALIGNKIT_TEST_JUDGE_KEY", **FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeError) as info:
        judge.score(["q"], ["x"])
    message = str(info.value)
    assert "HTTP 401" in message and server.url + "/chat/completions" in message and "not retried" in message
    assert "Incorrect API key provided: [redacted]" in message
    assert SECRET not in message and SECRET not in caplog.text
    assert len(server.requests) == 1 and judge.stats["retries"] == 0


def test_other_client_errors_are_not_retried(stub):
    server = stub([Reply({"error": {"message": "the request exceeds the available context size"}}, status=400)])
    judge = HTTPJudge(server.url, **FAST)
    with pytest.raises(JudgeError, match="HTTP 400 .*exceeds the available context size"):
        judge.score(["q"], ["x"])
    assert len(server.requests) == 1


def test_missing_api_key_variable_is_named_at_construction(monkeypatch):
    monkeypatch.delenv("ALIGNKIT_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(ValueError, match="'ALIGNKIT_TEST_JUDGE_KEY', which is not set"):
        HTTPJudge("http://127.0.0.1:1/v1", api_key_env="ALIGNKIT_TEST_JUDGE_KEY")


@pytest.mark.parametrize(
    "reply, problem",
    [
        (Reply("this is not json"), "body that is not JSON"),
        (Reply("<html><body><h1>Welcome to nginx!</h1></body></html>", headers={"Content-Type": "text/html"}),
         "body that is not JSON.*Welcome to nginx"),
        (Reply(b"\xff\xfe\x00garbage"), "body that is not JSON"),
        (Reply({"object": "list", "data": []}), "the JSON has no 'choices'"),
        (Reply({"error": {"message": "model not loaded"}}), r"no 'choices' \(it holds an 'error'\).*model not loaded"),
        (Reply([1, 2, 3]), "the JSON is a list"),
        (Reply({"choices": []}), "'choices' is not a non-empty list"),
        (Reply({"choices": [{"text": "A"}]}), "'choices\\[0\\]' has no 'message'"),
        (Reply({"choices": [{"message": {"content": 7}}]}), "content' is not a string"),
        (Reply(chat("A", {"content": [{"token": "A"}]})), "malformed logprobs: logprobs.content\\[0\\].logprob"),
    ],
)  # fmt: skip
def test_garbage_responses_raise_judge_error_naming_url_and_problem(stub, reply, problem):
    server = stub([reply])
    judge = HTTPJudge(server.url, max_concurrency=1, **FAST)
    with pytest.raises(JudgeError, match=problem) as info:
        judge.score(["q"], ["x"])
    assert server.url + "/chat/completions" in str(info.value)
    assert len(server.requests) == 1  # a successful status with a wrong body answers the same way again


def test_bad_options_are_rejected():
    for options, message in [
        ({"base_url": "127.0.0.1:8080"}, "must start with http"),
        ({"base_url": "http://h/v1", "timeout": 0}, "timeout must be"),
        ({"base_url": "http://h/v1", "max_retries": -1}, "max_retries must be"),
        ({"base_url": "http://h/v1", "max_concurrency": 0}, "max_concurrency must be"),
        ({"base_url": "http://h/v1", "rating_scale": (1, 10)}, "two single digits"),
        ({"base_url": "http://h/v1", "on_unparseable": "ignore"}, "on_unparseable must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            HTTPJudge(**options)


# ---------------------------------------------------------------------------------------------
# Specs and imports
# ---------------------------------------------------------------------------------------------


def test_judge_from_spec_builds_http_judges():
    judge = judge_from_spec({"http": {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "timeout": 5}})
    assert isinstance(judge, HTTPJudge) and judge.model == "m" and judge.timeout == 5.0
    judge = judge_from_spec({"http": "http://127.0.0.1:8080/v1/", "max_retries": 0})
    assert judge.url == "http://127.0.0.1:8080/v1/chat/completions" and judge.max_retries == 0
    with pytest.raises(ValueError, match=r"'http' needs \['base_url'\]"):
        judge_from_spec({"http": {"model": "m"}})
    with pytest.raises(ValueError, match=r"unknown options \['api_key'\]"):
        judge_from_spec({"http": "http://h/v1", "api_key": SECRET})
    with pytest.raises(ValueError, match="needs a value"):
        judge_from_spec("http")


def test_judge_from_spec_builds_model_judges(tiny_dir):
    from alignkit.judges.model import LMJudge, RewardModelJudge

    assert isinstance(judge_from_spec({"reward_model": tiny_dir, "batch_size": 2}), RewardModelJudge)
    lm = judge_from_spec({"lm": {"model": tiny_dir, "question": "Which is kinder?"}})
    assert isinstance(lm, LMJudge) and lm.question == "Which is kinder?"


def test_http_judge_and_specs_import_without_torch():
    code = (
        "import sys; import alignkit.judges as j; "
        "j.judge_from_spec({'http': 'http://127.0.0.1:1/v1'}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# The real thing: llama.cpp's OpenAI-compatible server on the embedded model
# ---------------------------------------------------------------------------------------------

PROMPT = "What is the capital of France?"
GOOD = "The capital of France is Paris."
BAD = "I don't know, maybe Berlin."


@pytest.fixture(scope="module")
def real_judge(llama_server) -> HTTPJudge:
    # Few alternatives and tokens: llama-cpp-python's log-prob bookkeeping costs time per token and per alternative.
    return HTTPJudge(
        llama_server, "smollm2", timeout=60, max_retries=1, backoff=0.1, max_concurrency=2, top_logprobs=5, max_tokens=8
    )


def test_real_server_compare_reads_logprobs_and_is_order_symmetric(real_judge):
    before = real_judge.stats
    p = real_judge.compare(PROMPT, GOOD, BAD)
    q = real_judge.compare(PROMPT, BAD, GOOD)
    after = real_judge.stats
    assert 0.0 <= p <= 1.0 and 0.0 <= q <= 1.0
    assert after["logprob_answers"] - before["logprob_answers"] == 4
    assert after["text_answers"] == before["text_answers"] and after["unparsed_answers"] == before["unparsed_answers"]
    # Both orders averaged: compare(a, b) and compare(b, a) ask the same two questions, so they sum to 1.
    assert p + q == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < p < 1.0  # a real probability, not a parsed 0/1
    assert real_judge.compare(PROMPT, GOOD, GOOD) == pytest.approx(0.5, abs=1e-3)


def test_real_server_is_deterministic_and_concurrent_batches_match_single_calls(real_judge):
    items = [(PROMPT, GOOD, BAD), ("Say hello.", "Hello!", "Go away."), ("2+2?", "4", "5")]
    single = [real_judge.compare(*item) for item in items]
    assert real_judge.compare_many(items) == pytest.approx(single, abs=1e-3)
    # An answer does not depend on what the server was asked before it (see the fixture's empty-cache patch).
    real_judge.score(["My grandmother died last week."], ["I'm sorry for your loss."])
    assert real_judge.compare(*items[0]) == pytest.approx(single[0], abs=1e-3)


def test_real_server_score_is_an_expected_rating_on_the_scale(real_judge):
    before = real_judge.stats
    scores = real_judge.score([PROMPT, PROMPT, "Say hello."], [GOOD, BAD, "Hello!"])
    assert len(scores) == 3 and all(isinstance(s, float) and 1.0 <= s <= 9.0 for s in scores)
    after = real_judge.stats
    read, unread = (after[k] - before[k] for k in ("logprob_answers", "unparsed_answers"))
    # Each answer is read from the log-probs of its rating digit or, where the 135M model wrote no digit, counted
    # as undecided (the scale's midpoint, 5). Which items it rates depends on the CPU's kernels: all three on an
    # Intel Xeon with AMX; on an AMD EPYC without bf16 it answered item 1 "I'm sorry for your loss, but".
    assert read + unread == 3 and read >= 2 and after["text_answers"] == before["text_answers"]
    assert sum(s == 5.0 for s in scores) >= unread
    assert real_judge.score([PROMPT], [GOOD]) == pytest.approx(scores[:1], abs=1e-3)
