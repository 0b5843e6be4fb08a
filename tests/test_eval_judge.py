"""The judge client against a real HTTP server on 127.0.0.1: caching, retries, errors, secrets,
and the local model judge's OpenAI-shaped replies with logprobs."""

from __future__ import annotations

import json
import time

import openai
import pytest
import torch

from sapo.evaluate.judge import Judge, JudgeError, JudgeSettings, JudgmentCache, request_key
from sapo.evaluate.judge_server import JudgeServer, ServerError, model_responder

MESSAGES = [{"role": "system", "content": "You grade."}, {"role": "user", "content": "Grade this: 2+2=4"}]


def flaky(failures: list):
    """A responder that answers with the given HTTP errors first (a status, or (status, headers)), then
    'Rating: [[8]]'."""
    pending = [f if isinstance(f, tuple) else (f, {}) for f in failures]

    def respond(messages, params):
        if pending:
            status, headers = pending.pop(0)
            raise ServerError(status, "scripted failure", headers)
        return "Rating: [[8]]", None

    return respond


def settings(server, **kw) -> JudgeSettings:
    return JudgeSettings(model="scripted", base_url=server.base_url, **kw)


FAST = {"retry-after-ms": "1"}  # OpenAI's own header, in milliseconds: the client waits 1 ms, not its 0.5 s backoff


def test_429_with_retry_after_zero_is_retried_then_cached(tmp_path):
    # Retry-After: 0 is not a wait the openai client honours (it needs > 0): it backs off 0.5 s with jitter.
    with JudgeServer(flaky([(429, {"Retry-After": "0"})]), "scripted") as server:
        judge = Judge(settings(server), tmp_path / "cache.jsonl")
        reply = judge.chat(MESSAGES)
        assert reply.content == "Rating: [[8]]" and not reply.cached
        assert (judge.requests, judge.api_calls, server.requests) == (1, 2, 2)  # one request, two HTTP attempts
        again = Judge(settings(server), tmp_path / "cache.jsonl")  # a new process, same cache
        assert again.chat(MESSAGES).cached and server.requests == 2
        assert (again.requests, again.api_calls) == (0, 0)


def test_5xx_are_retried_and_retry_after_is_honoured(tmp_path):
    with JudgeServer(flaky([(500, FAST), (503, FAST)]), "scripted") as server:
        judge = Judge(settings(server), tmp_path / "a.jsonl")
        assert judge.chat(MESSAGES).content == "Rating: [[8]]"
        assert (judge.requests, judge.api_calls, server.requests) == (1, 3, 3)
    with JudgeServer(flaky([(429, {"Retry-After": "1"})]), "scripted") as server:
        began = time.perf_counter()
        Judge(settings(server), tmp_path / "b.jsonl").chat(MESSAGES)
        assert time.perf_counter() - began >= 1.0  # the server's wait, not the client's first backoff (<= 0.5 s)


def test_gives_up_after_max_retries_and_stops_on_client_errors(tmp_path):
    with JudgeServer(flaky([(429, FAST)] * 10), "scripted") as server:
        judge = Judge(settings(server, max_retries=2), tmp_path / "a.jsonl")
        with pytest.raises(JudgeError, match=r"judge scripted: gave up after 3 tries \(HTTP 429: scripted failure\)"):
            judge.chat(MESSAGES)
        assert (judge.requests, judge.api_calls, server.requests) == (1, 3, 3)
    for status in (400, 404):  # a malformed request, a wrong model name: not retried
        with JudgeServer(flaky([status]), "scripted") as server:
            judge = Judge(settings(server), tmp_path / f"{status}.jsonl")
            with pytest.raises(JudgeError, match=f"judge scripted: HTTP {status}: scripted failure"):
                judge.chat(MESSAGES)
            assert (judge.api_calls, server.requests) == (1, 1)
    assert not (tmp_path / "a.jsonl").exists()  # nothing cached from a failure


def test_timeouts_are_retried_with_the_settings_timeout(tmp_path):
    def slow(messages, params):
        time.sleep(0.5)
        return "late", None

    with JudgeServer(slow, "scripted") as server:
        judge = Judge(settings(server, timeout=0.1, max_retries=1), tmp_path / "cache.jsonl")
        with pytest.raises(JudgeError, match=r"gave up after 2 tries \(APITimeoutError"):
            judge.chat(MESSAGES)
        assert (judge.requests, judge.api_calls) == (1, 2)


def test_judge_server_answers_every_failure_in_openai_error_shape(tmp_path):
    """A bad request, an unknown route or method, a fault in generation: each gets a JSON error the openai
    client can read, never a dropped connection (which the client retries as a network fault)."""
    import http.client

    def responder(messages, params):
        if messages[-1]["content"] == "boom":
            raise RuntimeError("generation failed")
        return "ok", None

    good = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    cases = [  # (method, path, body, status, words in the message)
        ("POST", "/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, "not an object"),
        ("POST", "/v1/chat/completions", b"", 400, "no body"),
        ("POST", "/v1/chat/completions", b'{"model": "m"}', 400, "'messages'"),
        ("POST", "/v1/chat/completions", json.dumps({**good, "messages": [{"role": "user"}]}).encode(), 400,
         "messages[0]"),
        ("POST", "/v1/chat/completions", json.dumps({**good, "max_tokens": 0}).encode(), 400, "'max_tokens'"),
        ("POST", "/v1/chat/completions", json.dumps({**good, "top_logprobs": 50}).encode(), 400, "'top_logprobs'"),
        ("POST", "/v1/chat/completions", b"\xff\xfe", 400, "not valid JSON"),
        ("POST", "/v1/completions", json.dumps(good).encode(), 404, "no route"),
        ("GET", "/v1/nothing", None, 404, "no route"),
        ("PUT", "/v1/chat/completions", b"{}", 501, "Unsupported method"),
        ("POST", "/v1/chat/completions", json.dumps({**good, "messages": [{"role": "user", "content": "boom"}]})
         .encode(), 500, "RuntimeError: generation failed"),
    ]  # fmt: skip
    with JudgeServer(responder, "m") as server:
        host, port = server._httpd.server_address[:2]
        for method, path, body, status, words in cases:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            error = json.loads(response.read())["error"]
            assert (response.status, response.getheader("Content-Type")) == (status, "application/json"), path
            assert words in error["message"] and error["type"] and error["code"] == status, (path, error)
            connection.close()
        # A base URL with a query string (Azure's ?api-version=): the judge sends it as a query, the server
        # routes on the path alone.
        judge = Judge(JudgeSettings(model="m", base_url=server.base_url + "?api-version=1"), tmp_path / "c.jsonl")
        assert judge.chat(MESSAGES).content == "ok"


def test_a_fault_in_generation_reaches_the_client_as_its_message(tmp_path):
    """Through the judge client: a 500 with the cause (retried as any 5xx), and a request the server refuses
    (400: not retried), each ending in a JudgeError that says what was wrong."""

    def responder(messages, params):
        raise RuntimeError("CUDA out of memory")

    with JudgeServer(responder, "scripted") as server:
        judge = Judge(settings(server, max_retries=1), tmp_path / "cache.jsonl")
        with pytest.raises(JudgeError, match=r"gave up after 2 tries \(HTTP 500: RuntimeError: CUDA out of memory"):
            judge.chat(MESSAGES)
        assert server.requests == 2
        with pytest.raises(JudgeError, match=r"HTTP 400: 'max_tokens'"):
            judge.chat(MESSAGES, max_tokens=0)
        assert server.requests == 2 and judge.api_calls == 3  # refused before the model: no generation


def test_cache_key_covers_model_messages_and_params(tmp_path):
    base = request_key("m", MESSAGES, {"temperature": 0})
    assert base != request_key("other", MESSAGES, {"temperature": 0})
    assert base != request_key("m", MESSAGES[:1], {"temperature": 0})
    assert base != request_key("m", MESSAGES, {"temperature": 0.7})


@pytest.mark.parametrize(
    "cut", ['{"key": "k2", "cont', '{"key": "k2", "content": "' + "\u00e9"], ids=["mid-json", "mid-utf8"]
)
def test_cache_reads_past_a_killed_line_and_appends_on_a_line_of_its_own(tmp_path, cut):
    """A row cut by a kill (mid-JSON, or inside a two-byte UTF-8 character) is skipped; the next row starts on a
    new line; nothing already in the file is rewritten (another run may be appending to a shared cache)."""
    path = tmp_path / "cache.jsonl"
    JudgmentCache(path).put({"key": "k1", "content": "\u00e9t\u00e9"})
    data = cut.encode()
    with path.open("ab") as handle:
        handle.write(data[:-1] if cut.endswith("\u00e9") else data)  # "é" is 2 bytes: keep the first only
    before = path.read_bytes()
    cache = JudgmentCache(path)
    assert len(cache) == 1 and cache.get("k1")["content"] == "\u00e9t\u00e9"
    cache.put({"key": "k3", "content": "c"})
    assert path.read_bytes().startswith(before)  # appended after, the cut line left in place
    assert json.loads(path.read_bytes().split(b"\n")[-2]) == {"key": "k3", "content": "c"}
    reloaded = JudgmentCache(path)
    assert len(reloaded) == 2 and reloaded.get("k3")["content"] == "c"


def test_cache_is_safe_with_many_threads(tmp_path):
    """MT-Bench and AlpacaEval judge from several threads: every put lands whole, on its own line."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "cache.jsonl"
    cache = JudgmentCache(path)
    long = "\u00e9" * 5000  # rows longer than a write buffer, so unlocked writes would interleave

    def put(i):
        cache.put({"key": f"k{i}", "content": f"{i}{long}"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(200)))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200 and sorted(json.loads(x)["key"] for x in lines) == sorted(f"k{i}" for i in range(200))
    assert len(JudgmentCache(path)) == 200


def test_api_key_is_sent_but_never_written(tmp_path, monkeypatch):
    secret = "sk-test-do-not-store-123"
    monkeypatch.setenv("MY_JUDGE_KEY", secret)
    with JudgeServer(flaky([]), "scripted") as server:
        judge_settings = JudgeSettings.from_env("scripted", server.base_url, "MY_JUDGE_KEY")
        judge = Judge(judge_settings, tmp_path / "cache.jsonl")
        judge.chat(MESSAGES)
        assert server.last_authorization == f"Bearer {secret}"
    assert secret not in json.dumps(judge_settings.describe())
    assert all(secret not in p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_settings_from_environment(monkeypatch):
    monkeypatch.delenv("SAPO_JUDGE_MODEL", raising=False)
    assert JudgeSettings.from_env() is None
    monkeypatch.setenv("SAPO_JUDGE_MODEL", "gpt-4-0613")
    monkeypatch.setenv("SAPO_JUDGE_BASE_URL", "https://user:pw@judge.example:8443/v1?api-key=secret")
    found = JudgeSettings.from_env()
    assert (found.model, found.api_key_env) == ("gpt-4-0613", "OPENAI_API_KEY")
    assert found.describe()["base_url"] == "https://judge.example:8443/v1"  # credentials in a URL are not recorded
    local = JudgeSettings(model="local-judge:embedded", base_url="http://127.0.0.1:4321/v1", extra={"local": True})
    moved = JudgeSettings(model="local-judge:embedded", base_url="http://127.0.0.1:5555/v1", extra={"local": True})
    assert local.identity() == moved.identity()  # a local judge's port changes every run; its cache must not
    capped = JudgeSettings(model="local-judge:embedded", extra={"local": True, "max_tokens_cap": 8})
    assert capped.identity() != local.identity()  # a different reply cap is a different judge


def test_local_model_judge_speaks_openai_with_logprobs(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with JudgeServer(model_responder(str(tiny_model_dir), max_tokens_cap=5), "local") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        assert [m.id for m in client.models.list().data] == ["local"]
        reply = client.chat.completions.create(model="local", messages=MESSAGES, max_tokens=50, logprobs=True,
                                               top_logprobs=3, temperature=0)  # fmt: skip
    choice = reply.choices[0]
    tokens = choice.logprobs.content
    assert 1 <= len(tokens) <= 5  # the cap wins over max_tokens=50
    for token in tokens:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.top_logprobs[0].logprob >= token.logprob  # greedy: the chosen token is the most likely
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob, abs=1e-5)
    # The text is the model's own greedy continuation of the chat-templated prompt.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = tokenizer(tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False, return_tensors="pt").input_ids  # fmt: skip
    greedy = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert choice.message.content == tokenizer.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True)
    assert "".join(t.token for t in tokens) == choice.message.content


def test_local_judge_continues_a_prefilled_reply(tiny_model_dir):
    """A conversation ending with an assistant message is continued, not answered anew (MT-Bench's
    local-judge prefill 'Rating: [[')."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prefilled = [*MESSAGES, {"role": "assistant", "content": "Rating: [["}]
    with JudgeServer(model_responder(str(tiny_model_dir), max_tokens_cap=4), "local") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        reply = client.chat.completions.create(model="local", messages=prefilled, max_tokens=4, temperature=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.apply_chat_template(prefilled, tokenize=False, continue_final_message=True)
    assert text.endswith("Rating: [[")  # no end-of-turn after the prefill, no new assistant header
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    greedy = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert reply.choices[0].message.content == tokenizer.decode(greedy[0, ids.shape[1] :], skip_special_tokens=True)
