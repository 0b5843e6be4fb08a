"""Judge outages on the wire: a real ``Judge`` judges the MT-Bench fixtures through ``judge_answers`` (4 threads)
against a scripted judge behind a misbehaving HTTP server on 127.0.0.1. The server is our own, on ``http.server``
with raw socket tricks, because JudgeServer always answers well-formed HTTP: it cannot reset a connection, cut a
body short, stall past the client's timeout or answer 200 with something that is not a chat completion.

Each fault is injected once at chosen request numbers (the 2nd, 5th and 9th request, say); the retry then
succeeds. The run must end with the judgments of a fault-free run, each judged once in the cache, in at most one
extra HTTP attempt per fault. A persistent outage must stop the run with a clear JudgeError, keep what was judged
before it, and a rerun must ask only for the rest."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from faults import fault_trials

from sapo.evaluate.judge import Judge, JudgeError, JudgeSettings
from sapo.evaluate.judge_server import completion_body, error_body
from sapo.evaluate.mtbench import judge_answers, load_mtbench_data, summarize

pytestmark = pytest.mark.faults

UNPARSEABLE = "I cannot decide on a number."
# Seconds the server sits on a request for the timeout fault; the client gives up after TIMEOUT. Wide enough that a
# good reply on a loaded 2-core machine (the server shares this process's GIL) never times out.
STALL = 4.0
TIMEOUT = 2.5

# What the server can do instead of answering well (MisbehavingJudge.inject). All but "no rating" are retried.
KINDS = ["429 with Retry-After", "429 without Retry-After", "500", "503", "timeout", "connection reset",
         "truncated body", "non-JSON 200 body", "200 without choices", "no rating"]  # fmt: skip


def rating(user_prompt: str) -> int:
    """The scripted judge's rule: a rating from the prompt text, 1-10."""
    return len(user_prompt) % 10 + 1


def prompt_id(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


class MisbehavingJudge:
    """A scripted MT-Bench judge on 127.0.0.1 that answers request number n (1-based, in arrival order) with
    ``fault`` when n is in ``schedule``, and every request after ``down_after`` with ``outage`` (a 503 unless
    told), until those are changed. Counts every request that arrived (``attempts``), the faults it
    injected, and how often each prompt got a good reply (``answered``: a prompt answered twice was judged
    twice)."""

    def __init__(self, fault: str | None = None, schedule: set[int] = frozenset(), down_after: int | None = None,
                 outage: str = "503"):  # fmt: skip
        self.fault, self.schedule, self.down_after, self.outage = fault, set(schedule), down_after, outage
        self.attempts = 0
        self.faults = 0
        self.answered: Counter[str] = Counter()
        self.unrated: set[str] = set()  # user prompts answered without a rating
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a reset hits a pooled connection
            timeout = 5  # an idle kept-alive connection's thread ends after this

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except (OSError, ValueError):  # a connection we dropped, or one the client dropped on timeout
                    pass

            def do_POST(self):
                params = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge._lock:
                    judge.attempts += 1
                    n = judge.attempts
                    down = judge.down_after is not None and n > judge.down_after
                    fault = judge.outage if down else judge.fault if n in judge.schedule else None
                    judge.faults += fault is not None
                    first = fault is not None and judge.faults == 1
                if fault is None or fault == "no rating":
                    user = params["messages"][-1]["content"]
                    text = UNPARSEABLE if fault else f"The answer is fine. Rating: [[{rating(user)}]]"
                    with judge._lock:
                        judge.answered[prompt_id(params["messages"])] += 1
                        if fault:
                            judge.unrated.add(user)
                    return self.reply(200, json.dumps(completion_body("scripted", text, None)).encode())
                self.inject(fault, first)

            def reply(self, status: int, body: bytes, headers: dict | None = None, length: int | None = None,
                      content_type: str = "application/json") -> None:  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def inject(self, fault: str, first: bool) -> None:
                error = lambda status: json.dumps(error_body(status, f"scripted {fault}")).encode()  # noqa: E731
                if fault == "429 with Retry-After":  # one real 1 s wait, the others in milliseconds (fast)
                    self.reply(429, error(429), {"Retry-After": "1"} if first else {"retry-after-ms": "20"})
                elif fault in ("429 without Retry-After", "500", "503"):
                    status = int(fault.split()[0])
                    self.reply(status, error(status), {"retry-after-ms": "10"} if judge.down_after else None)
                elif fault == "timeout":  # say nothing past the client's timeout, then hang up
                    judge._stopping.wait(STALL)
                    self.close_connection = True
                elif fault == "connection reset":  # SO_LINGER 0: close() sends RST, not FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                elif fault == "truncated body":  # promise the whole body, send half, hang up
                    body = json.dumps(completion_body("scripted", "Rating: [[10]]", None)).encode()
                    self.reply(200, body[: len(body) // 2], length=len(body))
                    self.close_connection = True
                elif fault == "non-JSON 200 body":  # a proxy's HTML page, then text that claims to be JSON
                    if first or judge.down_after:
                        self.reply(200, b"<html><body>502 Bad Gateway</body></html>", content_type="text/html")
                    else:
                        self.reply(200, b"upstream overloaded, try later")
                elif fault == "200 without choices":  # a completion without choices, then an error sent as 200
                    body = {k: v for k, v in completion_body("scripted", "x", None).items() if k != "choices"}
                    if not first:
                        body = error_body(200, "the model is overloaded")
                    self.reply(200, json.dumps(body).encode())
                else:
                    raise AssertionError(fault)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------------- the run and what it must give


@pytest.fixture(scope="module")
def mtbench():
    """The fixture questions with fixed answers (no model): 6 questions x 2 turns = 12 judgments."""
    data = load_mtbench_data("fixtures")
    answers = [{"question_id": q["question_id"], "answer_id": f"a{q['question_id']}", "model_id": "fixed",
                "choices": [{"index": 0, "turns": [f"First answer to {q['question_id']}.",
                                                   f"Second answer to {q['question_id']}."]}], "tstamp": 0.0}
               for q in data.questions]  # fmt: skip
    return data, answers


def judge_run(server, cache: Path, mtbench, **settings) -> tuple[Judge, list[dict]]:
    data, answers = mtbench
    judge = Judge(JudgeSettings(model="scripted", base_url=server.base_url, **{"timeout": 10.0, **settings}), cache)
    return judge, judge_answers(judge, data, answers, parallel=4)


def plain(rows: list[dict]) -> list[tuple]:
    """A judgment without its time stamp."""
    return [(r["question_id"], r["turn"], r["judge"][1], r["user_prompt"], r["judgment"], r["score"]) for r in rows]


@pytest.fixture(scope="module")
def fault_free(mtbench, tmp_path_factory):
    with MisbehavingJudge() as server:
        judge, rows = judge_run(server, tmp_path_factory.mktemp("fault_free") / "cache.jsonl", mtbench)
    assert (judge.requests, judge.api_calls, server.attempts) == (12, 12, 12)
    assert len(set(server.answered)) == 12 and all(r["score"] != -1 for r in rows)
    return rows


def cache_counts(path: Path, expected: int) -> tuple[Counter, int, int]:
    """(keys in the cache file, judgments lost, judgments duplicated) against ``expected`` distinct judgments."""
    keys = Counter(json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines())
    return keys, max(0, expected - len(keys)), sum(keys.values()) - len(keys)


def schedule(trial: int, last: int) -> set[int]:
    """Which requests fault: the 2nd, 5th and 9th in the first trial, three others drawn from 1..last after."""
    return {2, 5, 9} if trial == 0 else set(random.Random(trial).sample(range(1, last + 1), 3))


@pytest.mark.parametrize("trial", range(fault_trials()))
@pytest.mark.parametrize("kind", KINDS)
def test_a_fault_now_and_then_is_retried_to_the_fault_free_judgments(kind, trial, mtbench, fault_free, tmp_path,
                                                                      fault_table):  # fmt: skip
    retried = kind != "no rating"
    # 12 judgments + 3 faults = 15 requests when faults are retried, so request 14 is always reached; 12 when not.
    when = schedule(trial, 14 if retried else 12)
    cache = tmp_path / "cache.jsonl"
    began = time.perf_counter()
    with MisbehavingJudge(kind, when) as server:
        try:
            judge, rows = judge_run(server, cache, mtbench, **({"timeout": TIMEOUT} if kind == "timeout" else {}))
        except Exception as err:
            fault_table.add(f"judge outage: {kind}", survived=False, lost=12, note=f"{type(err).__name__}: {err}")
            raise
    took = time.perf_counter() - began
    expected = [(*r[:4], UNPARSEABLE, -1.0) if r[3] in server.unrated else r for r in plain(fault_free)]
    keys, lost, duplicated = cache_counts(cache, 12)
    same = plain(rows) == expected
    bounded = judge.api_calls <= judge.requests + server.faults
    fault_table.add(f"judge outage: {kind}", survived=same and bounded and judge.requests == 12, lost=lost,
                    duplicated=duplicated, note=f"{server.faults} requests fault once: {judge.api_calls} HTTP "
                    f"attempts for {judge.requests} judgments")  # fmt: skip
    assert server.faults == 3 and same
    assert (lost, duplicated, len(keys)) == (0, 0, 12)
    assert judge.requests == 12 and bounded, (judge.api_calls, server.faults)
    assert judge.api_calls == server.attempts  # every attempt the client counted reached the server
    if retried:  # each prompt judged once on the server's side too, though some were sent more than once
        assert sorted(server.answered.values()) == [1] * 12 and not server.unrated
    else:  # recorded as -1, counted as unparsed, never averaged, never asked again
        assert judge.api_calls == 12 and len(server.unrated) == 3
        assert summarize(rows)["unparsed"] == 3 and summarize(rows)["judged"] == 12
        valid = [r["score"] for r in rows if r["score"] != -1]
        assert summarize(rows)["average"] == pytest.approx(sum(valid) / 9)
    if kind == "429 with Retry-After":
        assert took >= 1.0  # the server's 1 s, not the client's own backoff (<= 0.5 s)


@pytest.mark.parametrize("trial", range(fault_trials()))
@pytest.mark.parametrize(("outage", "what"), [("503", "HTTP 503: scripted 503"), ("non-JSON 200 body", "not JSON"),
                                              ("200 without choices", "JSON without choices")])  # fmt: skip
def test_a_persistent_outage_stops_clearly_and_a_rerun_asks_only_for_the_rest(outage, what, trial, mtbench,
                                                                             fault_free, tmp_path, fault_table):  # fmt: skip
    """Every request after the k-th fails (k = 5 in the first trial): the run stops with a JudgeError that says
    why, the k judgments made before stay in the cache, and once the judge is back a rerun asks for the rest only."""
    cache, k = tmp_path / "cache.jsonl", 5 if trial == 0 else random.Random(trial).randint(1, 11)
    with MisbehavingJudge(down_after=k, outage=outage) as server:
        with pytest.raises(JudgeError, match=rf"judge scripted: gave up after 3 tries \(.*{what}") as stopped:
            judge_run(server, cache, mtbench, max_retries=2)
        keys, _, duplicated = cache_counts(cache, k)
        kept = len(keys) == k and duplicated == 0
        server.down_after = None  # the judge is back
        again, rows = judge_run(server, cache, mtbench)
        keys, lost, duplicated = cache_counts(cache, 12)
    asked_twice = sum(n - 1 for n in server.answered.values())
    survived = kept and plain(rows) == plain(fault_free) and again.requests == 12 - k and asked_twice == 0
    fault_table.add(f"judge outage: persistent {outage}", survived=survived, lost=lost,
                    duplicated=duplicated + asked_twice, note=f"every request after the k-th fails; stopped with: "
                    f"{stopped.value}; the rerun asked for the 12 - k missing only")  # fmt: skip
    assert kept, keys
    assert plain(rows) == plain(fault_free)
    assert (again.requests, again.api_calls, asked_twice, lost, duplicated) == (12 - k, 12 - k, 0, 0, 0)
