"""The LLM judge: any OpenAI-compatible endpoint, with every judgment cached on disk.

MT-Bench grades with a judge model and AlpacaEval compares with one; both reach it here.
Where the judge lives (base URL), which model it is and which environment variable holds
its key come from flags or the environment; the key itself is read at call time and never
logged, cached or written to results.

Every reply is appended to a JSONL cache as it arrives, keyed by judge model + messages +
decoding parameters, so a killed run loses nothing and a rerun asks only what is missing.
429s, 5xx, timeouts, dropped connections and 200s that are no chat completion (a proxy's HTML page, a body
without ``choices``) are retried by the openai client itself (exponential backoff from 0.5 s with jitter, or the
server's ``Retry-After``), up to ``max_retries``; other errors stop the run.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sapo.errors import JudgeError
from sapo.files import append_shared_rows, read_complete_rows

# Environment variables read when no flag is given.
ENV_BASE_URL = "SAPO_JUDGE_BASE_URL"  # falls back to OPENAI_BASE_URL
ENV_MODEL = "SAPO_JUDGE_MODEL"
ENV_KEY_NAME = "SAPO_JUDGE_API_KEY_ENV"  # the *name* of the variable that holds the key
DEFAULT_KEY_ENV = "OPENAI_API_KEY"

HOW_TO_CONFIGURE = (
    "no judge configured. Give an OpenAI-compatible endpoint with --judge-model MODEL (and --judge-base-url URL "
    f"for a non-OpenAI server; the key is read from ${DEFAULT_KEY_ENV} or the variable named by --judge-api-key-env), "
    f"or set {ENV_MODEL} / {ENV_BASE_URL}; or use --judge local to serve a local model on 127.0.0.1 "
    "(scores are then labelled local-judge and are not comparable with GPT-4 judgments)."
)


@dataclass
class JudgeSettings:
    """Where the judge is and how to call it. Holds the *name* of the key's variable, never the key."""

    model: str
    base_url: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    label: str | None = None  # how results name the judge, e.g. "local-judge:SmolLM2-135M-Instruct"
    timeout: float = 120.0  # seconds per HTTP attempt
    max_retries: int = 6  # HTTP attempts after the first, for one request (the openai client's own retries)
    extra: dict = field(default_factory=dict)  # recorded with results (e.g. the local judge's model path)

    @classmethod
    def from_env(cls, model: str | None = None, base_url: str | None = None, api_key_env: str | None = None,
                 **options):  # fmt: skip
        """Settings from flags, then the environment; None when no judge model is given anywhere.
        ``options``: other fields (timeout, max_retries)."""
        model = model or os.environ.get(ENV_MODEL)
        if not model:
            return None
        base_url = base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        return cls(model=model, base_url=base_url, api_key_env=api_key_env or os.environ.get(ENV_KEY_NAME)
                   or DEFAULT_KEY_ENV, **options)  # fmt: skip

    @property
    def name(self) -> str:
        return self.label or self.model

    def describe(self) -> dict:
        """What results record about the judge: no key, no credentials in the URL."""
        return {"name": self.name, "model": self.model, "base_url": public_url(self.base_url), **self.extra}

    def identity(self) -> dict:
        """What makes two judges the same for the cache: the model name and the local judge's settings (its
        reply cap, the model it serves). Not the URL: a server restarted on another port is the same judge."""
        return {"model": self.model, **self.extra}


def public_url(url: str | None) -> str:
    """``url`` without credentials: no user:password@ and no query string (``?api-key=...``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url or "https://api.openai.com/v1")
    return urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname
                       else parts.netloc, parts.path, "", ""))  # fmt: skip


class RedactURLs(logging.Filter):
    """Drop user:password@ and query strings (``?api-key=...``) from every URL in a log record. httpx logs each
    request's full URL at INFO, and a caller that sets the root logger to INFO (lm-eval does) would print the
    judge URL's credentials on the terminal."""

    _URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(?:[^/@\s\"']*@)?([^\s\"'?]*)(?:\?[^\s\"']*)?")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self._URL.sub(lambda m: m.group(1) + m.group(2), message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


# The openai client's stack, whichever httpx it has. A logger's filter sees only records logged to that very logger,
# so each module logger is named.
_HTTP_LOGGERS = ("httpx", "httpx2", "httpcore.connection", "httpcore.http11", "openai", "openai._base_client")


def redact_http_logs() -> None:
    """Put ``RedactURLs`` on the HTTP client's loggers, once."""
    for name in _HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        if not any(isinstance(f, RedactURLs) for f in http_logger.filters):
            http_logger.addFilter(RedactURLs())


@dataclass
class JudgeReply:
    content: str
    logprobs: list | None  # OpenAI's choices[0].logprobs.content as plain dicts, when asked for
    cached: bool


def request_key(judge: dict | str, messages: list[dict], params: dict) -> str:
    """Cache key of one request: the judge (``JudgeSettings.identity()`` or a model name) + messages + parameters."""
    blob = json.dumps({"model": judge, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgmentCache:
    """Append-only JSONL of judge replies; safe to share between threads of one process, and between processes
    (``--judge-cache`` shared by several runs): rows are only ever appended, whole, and made durable before
    ``put`` returns, so a kill loses at most the row being written. A line cut short by a kill is skipped by
    readers and left in place: rewriting the file to drop it could lose rows another process is appending."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries = {
            entry["key"]: entry
            for entry in read_complete_rows(self.path)
            if isinstance(entry, dict) and "key" in entry
        }

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, entry: dict) -> None:
        with self._lock:
            self._entries[entry["key"]] = entry
            append_shared_rows(self.path, [entry])  # after a killed writer's cut line, on a line of its own

    def __len__(self) -> int:
        return len(self._entries)


class Judge:
    """Chat completions from the configured judge, through the cache.

    Counts: ``requests``, the requests asked of the judge (cache misses); ``api_calls``, the HTTP attempts
    sent for them, retries included (what the judge's operator sees, and bills)."""

    def __init__(self, settings: JudgeSettings, cache_path: Path):
        self.settings = settings
        self.cache = JudgmentCache(cache_path)
        self.requests = 0
        self.api_calls = 0
        self._count_lock = threading.Lock()  # benchmarks call from several threads
        self._tries = threading.local()  # HTTP attempts of the request this thread is sending
        self._client = None

    def _openai(self):
        if self._client is None:
            from urllib.parse import parse_qsl, urlsplit, urlunsplit

            redact_http_logs()
            import openai

            key = os.environ.get(self.settings.api_key_env) or "no-key"  # local servers need none
            base_url, query = self.settings.base_url, None
            if base_url and urlsplit(base_url).query:  # the client would glue the path after it: send it apart
                parts = urlsplit(base_url)
                base_url, query = urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query))
            # The openai client retries (honouring Retry-After, with jitter); the hooks count each HTTP attempt and
            # make a malformed 200 one of the errors it retries.
            http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._count_attempt],
                                                                 "response": [_check_reply]})  # fmt: skip
            self._client = openai.OpenAI(base_url=base_url, api_key=key, default_query=query,
                                         timeout=self.settings.timeout, max_retries=self.settings.max_retries,
                                         http_client=http_client)  # fmt: skip
        return self._client

    def _count_attempt(self, request) -> None:
        self._tries.count = getattr(self._tries, "count", 0) + 1
        with self._count_lock:
            self.api_calls += 1

    def chat(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 2048,
             top_logprobs: int | None = None, repeat: int = 0) -> JudgeReply:  # fmt: skip
        """One reply, from the cache when this request was asked before. ``repeat`` r > 0 asks the same request
        again as its own cache entry (``--judge-repeats``: a judge at temperature 0 still varies between calls);
        it is part of the cache key only, never sent."""
        params = {"temperature": temperature, "max_tokens": max_tokens, "top_logprobs": top_logprobs}
        key = request_key(self.settings.identity(), messages, {**params, "repeat": repeat} if repeat else params)
        hit = self.cache.get(key)
        if hit is not None:
            return JudgeReply(hit["content"], hit.get("logprobs"), cached=True)
        with self._count_lock:
            self.requests += 1
        response = self._send(messages, params)
        choice = response.choices[0]
        logprobs = None
        if top_logprobs and choice.logprobs is not None and choice.logprobs.content is not None:
            logprobs = [item.model_dump() for item in choice.logprobs.content]
        content = choice.message.content or ""
        self.cache.put({"key": key, "model": self.settings.model, "messages": messages, "params": params,
                        "content": content, "logprobs": logprobs, "tstamp": time.time()})  # fmt: skip
        return JudgeReply(content, logprobs, cached=False)

    def _send(self, messages: list[dict], params: dict):
        import openai

        kwargs = {"model": self.settings.model, "messages": messages, "temperature": params["temperature"],
                  "max_tokens": params["max_tokens"]}  # fmt: skip
        if params["top_logprobs"]:
            kwargs.update(logprobs=True, top_logprobs=params["top_logprobs"])
        self._tries.count = 0
        try:
            return self._openai().chat.completions.create(**kwargs)
        except openai.APIStatusError as err:  # 4xx: a wrong model name, a bad key...; or 429/5xx to the last try
            why = f"HTTP {err.status_code}: {_server_message(err)}"
            if _retried(err.status_code):
                raise self._gave_up(why) from err
            raise JudgeError(f"judge {self.settings.name}: {why}") from err
        except openai.APIConnectionError as err:  # timeouts and malformed replies (_check_reply) included
            cause = str(err.__cause__)
            raise self._gave_up(cause if cause.startswith(MALFORMED) else f"{type(err).__name__}: {err}") from err

    def _gave_up(self, why: str) -> JudgeError:
        tries = self._tries.count
        return JudgeError(f"judge {self.settings.name}: gave up after {tries} {'try' if tries == 1 else 'tries'} "
                          f"({why})")  # fmt: skip


MALFORMED = "malformed reply"


def _check_reply(response) -> None:
    """A 2xx reply to a chat completion request that is no chat completion (not JSON, or JSON without
    ``choices[0].message``): raised as the HTTP library's ``DecodingError``, which the openai client retries like
    a dropped connection, up to ``max_retries``. Left alone, the client hands back a non-JSON body as a string, a
    body without ``choices`` as a completion whose ``choices`` is None, and ``Judge.chat`` failed on either with an
    AttributeError or TypeError."""
    if not (response.is_success and response.request.url.path.endswith("/chat/completions")):
        return
    body = response.read()
    try:
        data = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        problem = "a body that is not JSON"
    else:
        choices = data.get("choices") if isinstance(data, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(first, dict) and isinstance(first.get("message"), dict):
            return
        problem = "JSON without choices[0].message"
    # httpx2 under openai 3, httpx before: the error must be the library's own for the client to retry it.
    library = importlib.import_module(type(response).__module__.partition(".")[0])
    raise library.DecodingError(f"{MALFORMED}: HTTP {response.status_code} with {problem}: "
                                f"{body[:200].decode('utf-8', 'replace')!r}", request=response.request)  # fmt: skip


def _retried(status: int) -> bool:
    """The statuses the openai client retries (``_should_retry``, unless the server says otherwise)."""
    return status in (408, 409, 429) or status >= 500


def _server_message(err) -> str:
    """The server's own words (OpenAI's ``{"error": {"message"}}``), else what the client made of the reply."""
    body = err.body.get("error", err.body) if isinstance(err.body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else err.message
