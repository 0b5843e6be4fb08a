"""Judge calibration on real judges over HTTP (127.0.0.1): a judge that knows the answers passes, a judge that
rates at random or rates everything alike fails, in MT-Bench's and AlpacaEval's own forms."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from sapo.errors import DataError
from sapo.evaluate.calibration import (
    CALIBRATION_DIR,
    CALIBRATION_SET,
    failed_text,
    load_pairs,
    sign_test_p,
    summarize_agreement,
)
from sapo.evaluate.judge import Judge, JudgeSettings
from sapo.evaluate.judge_server import JudgeServer

PAIRS = load_pairs(40)
RIGHT = {(p["instruction"], p["better"]) for p in PAIRS}  # one pair's wrong answer may be another's right one
ANSWER = ("[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]")


def _unit(text: str) -> float:
    """A number in [0, 1) fixed by the text and unrelated to its correctness: a 'random' judge that
    gives the same prompt the same answer however the requests interleave."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def question(messages) -> str:
    user = messages[1]["content"]
    return user.split("[Question]\n", 1)[1].split("\n\n[The Start", 1)[0] if "[Question]\n" in user else ""


def graded_answer(messages) -> str:
    """The answer a single-v1 prompt grades ("" for FastChat's other prompts: turn 2, reference-guided)."""
    user = messages[1]["content"]
    return user.split(ANSWER[0], 1)[1].split(ANSWER[1], 1)[0] if ANSWER[0] in user else ""


MTBENCH_JUDGES = {
    "knows": lambda m, p: (f"Rating: [[{9 if (question(m), graded_answer(m)) in RIGHT else 2}]]", None),
    "random": lambda m, p: (f"Rating: [[{int(_unit(m[1]['content']) * 10) + 1}]]", None),
    "constant": lambda m, p: ("Rating: [[5]]", None),
}


@pytest.mark.parametrize(("kind", "passes"), [("knows", True), ("random", False), ("constant", False)])
def test_mtbench_calibration_gate(tiny_model_dir, tmp_path, kind, passes):
    from sapo.cli import main

    with JudgeServer(MTBENCH_JUDGES[kind], "scripted") as server:
        argv = ["eval", str(tiny_model_dir), "--suite", "mtbench", "--data", "fixtures", "--output", str(tmp_path),
                "--judge-model", "scripted", "--judge-base-url", server.base_url, "--max-new-tokens", "4"]  # fmt: skip
        assert main(argv) == 0
        assert server.requests == 80 + 12  # both answers of 40 pairs, then 6 questions x 2 turns
    calibration = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["mtbench"]["calibration"]
    assert calibration["passed"] is passes and calibration["n"] == 40 and calibration["set"] == CALIBRATION_SET
    if kind == "knows":
        assert calibration["agreement"] == 1.0 and calibration["ci95"] == [1.0, 1.0]
    if kind == "constant":
        assert calibration["agreement"] == 0.5 and calibration["ties"] == 40
    if kind == "random":
        assert calibration["ci95"][0] <= 0.5 <= calibration["ci95"][1] and calibration["p_value"] >= 0.05


def alpaca_judge(knows: bool):
    """weighted_alpaca_eval_gpt4_turbo's reply shape: which of "m" / "M" is better, as top logprobs."""

    def respond(messages, params):
        user = messages[1]["content"]
        first = user.split('"model_identifier": "M"')[0]  # the output shown as "m"
        pair = next(p for p in PAIRS if p["instruction"] in user)
        p_m = (0.95 if pair["better"] in first else 0.05) if knows else _unit(user) * 0.98 + 0.01
        top = sorted([{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}],
                     key=lambda t: -t["logprob"])  # fmt: skip
        top = [{**t, "bytes": list(t["token"].encode())} for t in top]
        return top[0]["token"], [{**top[0], "top_logprobs": top}]

    return respond


@pytest.mark.parametrize(("knows", "passes"), [(True, True), (False, False)])
def test_alpacaeval_calibration_gate(tiny_model_dir, tmp_path, knows, passes):
    from sapo.evaluate.calibration import calibrate_alpacaeval

    with JudgeServer(alpaca_judge(knows), "scripted") as server:
        judge = Judge(JudgeSettings(model="scripted", base_url=server.base_url), tmp_path / "cache.jsonl")
        calibration = calibrate_alpacaeval(judge, tmp_path, 24)
        assert server.requests == 24
    assert calibration["passed"] is passes and calibration["n"] == 24
    if knows:  # alpaca_eval randomizes which side is shown first: the judge followed the answer, not the slot
        assert calibration["agreement"] == pytest.approx(0.95)


def test_agreement_summary_sign_test_and_failed_text():
    summary = summarize_agreement({f"p{i}": float(i % 2) for i in range(40)}, "test form")
    assert summary["agreement"] == 0.5 and not summary["passed"]
    assert (summary["right"], summary["wrong"]) == (20, 20)
    assert failed_text(summary) == "judge failed calibration (50% on 40)"
    # Exact one-sided binomial tails, by hand: 4 of 4 right is p = 1/16; 5 of 5 is 1/32; 8 of 10 is 56/1024.
    assert sign_test_p(4, 0) == 1 / 16 and sign_test_p(5, 0) == 1 / 32
    assert sign_test_p(8, 2) == pytest.approx((45 + 10 + 1) / 1024)
    assert not summarize_agreement({f"p{i}": 1.0 for i in range(4)}, "four")["passed"]  # too few to tell
    assert summarize_agreement({f"p{i}": 1.0 for i in range(5)}, "five")["passed"]
    ties = summarize_agreement({f"p{i}": 0.5 for i in range(40)}, "all ties")  # decides nothing: fails
    assert ties["p_value"] == 1.0 and not ties["passed"]


def test_random_judges_pass_about_five_percent_of_the_time():
    """The gate's false-pass rate, over 400 coin-flipping judges of 40 pairs: near the test's 5% (the exact
    test is conservative: P(X >= 26 of 40) = 4.0%)."""
    rng = np.random.default_rng(0)
    passes = sum(summarize_agreement({f"p{i}": float(v) for i, v in enumerate(rng.random(40) < 0.5)}, "coin")["passed"]
                 for _ in range(400))  # fmt: skip
    assert 4 <= passes <= 32  # 16 expected; the bounds are beyond 3 binomial standard deviations


def test_too_few_calibration_pairs_are_refused_before_any_work(tiny_model_dir, tmp_path, capsys):
    from sapo.cli import main

    for pairs, message in (("3", "--calibration-pairs 3: at least 10"), ("41", "41 calibration pairs asked")):
        argv = ["eval", str(tiny_model_dir), "--suite", "mtbench", "--data", "fixtures", "--output", str(tmp_path),
                "--judge-model", "x", "--judge-base-url", "http://127.0.0.1:9/v1", "--calibration-pairs", pairs]  # fmt: skip
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "mtbench").exists()


def test_pairs_are_held_out_and_reproducible(tmp_path):
    from sapo.train.embedded_data import CALIBRATION_FILE, read_embedded_release, write_calibration_pairs

    shipped = CALIBRATION_DIR / CALIBRATION_FILE
    assert write_calibration_pairs(tmp_path / "pairs.jsonl").read_bytes() == shipped.read_bytes()
    trained = {m["content"] for row in read_embedded_release() for m in row["messages"] if m["role"] == "user"}
    assert not {p["instruction"] for p in PAIRS} & trained
    assert all(p["better"] != p["worse"] for p in PAIRS) and len({p["source"] for p in PAIRS}) == 18
    with pytest.raises(DataError, match="41 calibration pairs asked, the set has 40"):
        load_pairs(41)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**PAIRS[0], "worse": ""}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: row 1: missing or empty field\(s\) worse"):
        load_pairs(1, bad)


def test_a_shared_judge_cache_asks_each_calibration_pair_once(tiny_model_dir, tmp_path):
    from sapo.cli import main

    cache = tmp_path / "shared_cache.jsonl"
    with JudgeServer(MTBENCH_JUDGES["knows"], "scripted") as server:
        for run, budget, asked in (("a", "4", 80 + 12), ("b", "5", 12)):  # b: other answers, same calibration
            before = server.requests
            argv = ["eval", str(tiny_model_dir), "--suite", "mtbench", "--data", "fixtures", "--output",
                    str(tmp_path / run), "--judge-model", "scripted", "--judge-base-url", server.base_url,
                    "--max-new-tokens", budget, "--judge-cache", str(cache)]  # fmt: skip
            assert main(argv) == 0
            assert server.requests - before == asked
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["benchmarks"]["mtbench"]["calibration"]["passed"] is True
    assert not (tmp_path / "b" / "judge_cache.jsonl").exists()
