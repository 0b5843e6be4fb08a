"""The judge client against a real HTTP server on 127.0.0.1: caching, retries, errors, secrets,
and the local model judge's OpenAI-shaped replies with logprobs."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from sapo.evaluate.judge import Judge, JudgeError, JudgeSettings, JudgmentCache, request_key
from sapo.evaluate.judge_server import JudgeServer, ServerError, model_responder

MESSAGES = [{"role": "system", "content": "You grade."}, {"role": "user", "content": "Grade this: 2+2=4"}]


def flaky(failures: list[int]):
    """A responder that answers with the given HTTP statuses first, then 'Rating: [[8]]'."""
    pending = list(failures)

    def respond(messages, params):
        if pending:
            raise ServerError(pending.pop(0), "scripted failure")
        return "Rating: [[8]]", None

    return respond


def settings(server, **kw) -> JudgeSettings:
    return JudgeSettings(model="scripted", base_url=server.base_url, backoff_seconds=0.01, **kw)


def test_retries_429_and_5xx_then_caches(tmp_path):
    with JudgeServer(flaky([429, 500, 503]), "scripted") as server:
        judge = Judge(settings(server), tmp_path / "cache.jsonl")
        reply = judge.chat(MESSAGES)
        assert reply.content == "Rating: [[8]]" and not reply.cached
        assert judge.api_calls == 4 and server.requests == 4
        again = Judge(settings(server), tmp_path / "cache.jsonl").chat(MESSAGES)  # a new process, same cache
        assert again.cached and again.content == reply.content and server.requests == 4


def test_gives_up_after_max_retries_and_stops_on_client_errors(tmp_path):
    with JudgeServer(flaky([429] * 10), "scripted") as server:
        with pytest.raises(JudgeError, match="gave up after 3 tries"):
            Judge(settings(server, max_retries=2), tmp_path / "a.jsonl").chat(MESSAGES)
    with JudgeServer(flaky([404]), "scripted") as server:
        with pytest.raises(JudgeError, match="HTTP 404"):
            Judge(settings(server), tmp_path / "b.jsonl").chat(MESSAGES)
        assert server.requests == 1  # a wrong model name is not retried


def test_cache_key_covers_model_messages_and_params(tmp_path):
    base = request_key("m", MESSAGES, {"temperature": 0})
    assert base != request_key("other", MESSAGES, {"temperature": 0})
    assert base != request_key("m", MESSAGES[:1], {"temperature": 0})
    assert base != request_key("m", MESSAGES, {"temperature": 0.7})
    path = tmp_path / "cache.jsonl"
    JudgmentCache(path).put({"key": "k1", "content": "a"})
    with path.open("a") as handle:
        handle.write('{"key": "k2", "cont')  # killed mid-write
    cache = JudgmentCache(path)
    assert len(cache) == 1 and cache.get("k1")["content"] == "a"
    cache.put({"key": "k3", "content": "c"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1", "k3"]


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
