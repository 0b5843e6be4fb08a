"""Crash during evaluation, on real processes: `sapo eval` of MT-Bench, AlpacaEval and the verifiable set, judged
by a scripted OpenAI-compatible server on 127.0.0.1, is SIGKILLed mid-judging and mid-scoring, then rerun. The
rerun must end with results equal to an uninterrupted run's, every item scored exactly once, every judgment
cached once, and the judge asked again only for what was in flight when the process died."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from faults import fault_trials, full_suite, never, run_killed_when, sapo_argv

from sapo.evaluate.judge_server import JudgeServer

REPO = Path(__file__).resolve().parents[1]
# nox -s faults adds the lm-eval benchmarks (IFEval, the Open LLM fixtures): each rerun scores them whole again.
SUITES = ("mtbench", "alpacaeval", "verifiable") + (("ifeval", "openllm") if full_suite() else ())
pytestmark = pytest.mark.faults


def scripted_judge(messages: list[dict], params: dict):
    """MT-Bench: a rating from the answer's length; AlpacaEval (one token, top logprobs): a preference from it."""
    text = messages[-1]["content"]
    if params.get("top_logprobs"):
        p = 0.2 + 0.6 * (len(text) % 7) / 6

        def token(t, lp):
            return {"token": t, "logprob": lp, "bytes": list(t.encode())}

        top = sorted([token("m", math.log(p)), token("M", math.log(1 - p))], key=lambda t: -t["logprob"])
        return top[0]["token"], [{**top[0], "top_logprobs": top}]
    return f"Rating: [[{1 + len(text) % 10}]]", None


def eval_argv(model_dir: Path, out: Path, base_url: str) -> list[str]:
    return sapo_argv("eval", str(model_dir), "--suite", ",".join(SUITES), "--data", "fixtures", "--limit", "6",
                     "--output", str(out), "--judge-model", "scripted", "--judge-base-url", base_url,
                     "--max-new-tokens", "6", "--batch-size", "2", "--calibration-pairs", "0")  # fmt: skip


def items_of(out: Path) -> dict[str, dict]:
    return {s: json.loads((out / s / "items.json").read_text())["metrics"] for s in SUITES}


def cache_keys(out: Path) -> list[str]:
    lines = (out / "judge_cache.jsonl").read_bytes().splitlines()
    return [json.loads(line)["key"] for line in lines if line.strip()]


def kill_points(server: JudgeServer, reference_requests: int, out: Path, rng: random.Random) -> dict:
    """Where to kill: after a random number of MT-Bench/AlpacaEval judgments; under nox -s faults also once
    AlpacaEval is recorded (the verifiable set being scored) and once the verifiable set is (lm-eval scoring)."""
    mid = rng.randint(1, reference_requests - 1)

    def recorded(benchmark: str):  # results.json is replaced atomically: it always parses
        results = out / "results.json"
        return lambda: results.is_file() and benchmark in json.loads(results.read_text())["benchmarks"]

    points = {"mid-judging": lambda: server.requests >= mid}
    if full_suite():
        points["while scoring the verifiable set"] = recorded("alpacaeval")
        points["while lm-eval scores IFEval"] = recorded("verifiable")
    return points


def compare_outputs(reference: Path, resumed: Path) -> tuple[bool, int, int]:
    """(results and per-item scores equal, items lost, items or judgments duplicated)."""
    want, got = items_of(reference), items_of(resumed)
    lost = sum(len(set(want[s][m]) - set(got[s].get(m, {}))) for s in SUITES for m in want[s])
    duplicated = sum(got[s][m][i][1] > want[s][m][i][1] for s in SUITES for m in want[s]
                     for i in want[s][m] if i in got[s].get(m, {}))  # fmt: skip
    keys = cache_keys(resumed)
    duplicated += len(keys) - len(set(keys))
    results = [json.loads((out / "results.json").read_text())["benchmarks"] for out in (reference, resumed)]
    same = all(results[0][s]["metrics"] == results[1][s]["metrics"] for s in SUITES) and want == got
    return same, lost, duplicated


def test_killed_eval_reruns_to_the_uninterrupted_result(tiny_model_dir, tmp_path, fault_table):
    with JudgeServer(scripted_judge, "scripted") as server:
        reference = tmp_path / "reference"
        done = run_killed_when(eval_argv(tiny_model_dir, reference, server.base_url), never, cwd=REPO)
        assert done.returncode == 0, done.output[-3000:]
        asked_by_reference = server.requests
        for trial in range(fault_trials()):
            resumed = tmp_path / f"resumed-{trial}"
            points = kill_points(server, asked_by_reference, resumed, random.Random(trial))
            server.requests = 0
            for label, point in points.items():
                outcome = run_killed_when(eval_argv(tiny_model_dir, resumed, server.base_url), point, cwd=REPO)
                assert outcome.killed, f"finished before the kill point {label}: " + outcome.output[-2000:]
            final = run_killed_when(eval_argv(tiny_model_dir, resumed, server.base_url), never, cwd=REPO)
            assert final.returncode == 0, final.output[-3000:]
            asked_again = server.requests - asked_by_reference
            same, lost, duplicated = compare_outputs(reference, resumed)
            for label in points:
                fault_table.add(f"SIGKILL `sapo eval` ({', '.join(SUITES)}) {label}", survived=same, lost=lost,
                                duplicated=duplicated, note="a kill re-asks the judge at most the requests in "
                                "flight (4 judging threads); lm-eval benchmarks are scored whole again")  # fmt: skip
            assert same and not lost and not duplicated, (trial, lost, duplicated)
            assert 0 <= asked_again <= 4 * len(points)  # at most what each kill cut short: 4 judging threads
