"""MT-Bench through `sapo eval` with a scripted judge on 127.0.0.1: FastChat's prompts and parse,
FastChat's file formats (its show_result reads ours), flaky judges, and reruns that judge nothing twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import Killed, kill_at_publish, kill_before_meta

from sapo.errors import DataError
from sapo.evaluate.items import read_items
from sapo.evaluate.judge_server import JudgeServer, ServerError
from sapo.evaluate.mtbench import (
    CATEGORY_TEMPERATURE,
    FIXTURES_DIR,
    NEED_REF_CATS,
    build_judge_prompt,
    load_mtbench_data,
    parse_rating,
    summarize,
)
from sapo.evaluate.uncertainty import ratio


def scripted_rating(messages) -> int:
    """The rule the scripted judge follows: a rating from the prompt text, 1-10 (known to the tests)."""
    return len(messages[-1]["content"]) % 10 + 1


def scripted(fail_first: int = 0, status: int = 500, stop_after: int | None = None):
    calls = {"n": 0}

    def respond(messages, params):
        calls["n"] += 1
        if calls["n"] <= fail_first:
            raise ServerError(status, "scripted outage")
        if stop_after is not None and calls["n"] > stop_after:
            raise ServerError(400, "scripted fatal error")  # not retried: the run stops here
        if "9003" in json.dumps(messages) or "taller" in messages[-1]["content"]:
            return "I cannot decide on a number.", None  # an unparseable judgment
        return f"The answer is fine. Rating: [[{scripted_rating(messages)}]]", None

    return respond


def run_eval(model_dir, output, server, *extra) -> int:
    from sapo.cli import main

    argv = ["eval", str(model_dir), "--suite", "mtbench", "--data", "fixtures", "--output", str(output),
            "--judge-model", "scripted", "--judge-base-url", server.base_url, "--max-new-tokens", "6",
            "--calibration-pairs", "0", *extra]  # calibration: tests/test_calibration.py  # fmt: skip
    return main(argv)


def expected_metrics(judgments):
    valid = [j for j in judgments if "taller" not in j["user_prompt"]]
    by_turn = {t: [scripted_rating([{"content": j["user_prompt"]}]) for j in valid if j["turn"] == t] for t in (1, 2)}
    every = by_turn[1] + by_turn[2]
    return sum(by_turn[1]) / len(by_turn[1]), sum(by_turn[2]) / len(by_turn[2]), sum(every) / len(every)


def test_mtbench_end_to_end_with_a_flaky_judge(tiny_model_dir, tmp_path):
    with JudgeServer(scripted(fail_first=3), "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path, server) == 0
        assert server.requests == 12 + 3  # 6 questions x 2 turns, plus the three failures retried
    results = json.loads((tmp_path / "results.json").read_text())
    entry = results["benchmarks"]["mtbench"]
    judgments = [json.loads(x) for x in (tmp_path / "mtbench/model_judgment/scripted_single.jsonl").read_text()
                 .splitlines()]  # fmt: skip
    assert len(judgments) == 12 and {j["turn"] for j in judgments} == {1, 2}
    turn1, turn2, average = expected_metrics(judgments)
    metrics = entry["metrics"]
    assert metrics["unparsed"] == 2 and metrics["judged"] == 12  # the reasoning question, both turns
    assert metrics["turn_1"] == pytest.approx(turn1) and metrics["turn_2"] == pytest.approx(turn2)
    assert metrics["average"] == pytest.approx(average)
    # Error bars: a bootstrap over questions, from per-item scores that reproduce each mean.
    items = read_items(entry["items"], "mtbench", tmp_path)["metrics"]
    for name in ("turn_1", "turn_2", "average"):
        assert ratio(items[name]) == pytest.approx(metrics[name])
        interval = entry["uncertainty"][name]
        assert interval["value"] == pytest.approx(metrics[name]) and "questions" in interval["method"]
        assert interval["ci95"][0] <= metrics[name] <= interval["ci95"][1] and interval["stderr"] > 0
    assert len(items["average"]) == 6  # one item per question
    assert entry["data"] == "fixtures" and results["judge"]["model"] == "scripted"
    assert results["model"]["weights_sha256"] and results["model"]["chat_template_sha256"]
    assert results["packages"]["fschat"] == "0.2.36"


def test_fastchat_show_result_reads_our_files(tiny_model_dir, tmp_path):
    with JudgeServer(scripted(), "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path, server) == 0
    judgment_file = tmp_path / "mtbench/model_judgment/scripted_single.jsonl"
    shown = subprocess.run([sys.executable, "-m", "fastchat.llm_judge.show_result", "--mode", "single",
                            "--input-file", str(judgment_file)], capture_output=True, text=True, check=True)  # fmt: skip
    average = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["mtbench"]["metrics"]["average"]
    block = shown.stdout.split("########## Average ##########")[1]
    assert float(re.findall(r"\d+\.\d+", block)[-1]) == pytest.approx(average, abs=1e-4)
    assert "tiny" in block and str(tiny_model_dir) not in shown.stdout  # the model's short id, no machine's path
    answers = (tmp_path / "mtbench/model_answer").glob("*.jsonl")
    rows = [json.loads(x) for x in next(answers).read_text().splitlines()]
    assert all(len(r["choices"][0]["turns"]) == 2 and r["model_id"] == "tiny" for r in rows)


def test_a_killed_run_resumes_without_judging_twice(tiny_model_dir, tmp_path):
    with JudgeServer(scripted(stop_after=5), "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path, server, "--batch-size", "2") == 2  # the judge broke down
    cached = len((tmp_path / "judge_cache.jsonl").read_text().splitlines())
    assert cached == 5  # every judgment that arrived was kept
    with JudgeServer(scripted(), "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path, server) == 0
        assert server.requests == 12 - cached  # only the missing ones
    with JudgeServer(scripted(), "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path, server) == 0
        assert server.requests == 0


def test_answers_survive_a_kill_a_cut_file_and_a_stale_meta(tiny_model_dir, tmp_path, monkeypatch):
    """The answers file is replaced whole (a kill mid-write leaves the previous file); a file cut short anyway
    (a copy, a full disk) is answered again instead of crashing the rerun; answers written just before a kill
    are never reused under the settings of the run before."""
    import sapo.evaluate.mtbench as mtbench
    from sapo.evaluate.generation import load_for_eval
    from sapo.evaluate.judge import Judge, JudgeSettings

    loaded = load_for_eval(str(tiny_model_dir))
    answered = []
    real_generate = mtbench.generate_answers
    monkeypatch.setattr(mtbench, "generate_answers", lambda loaded, questions, **kw: answered.append(len(questions))
                        or real_generate(loaded, questions, **kw))  # fmt: skip
    answers = tmp_path / "mtbench" / "model_answer" / "tiny.jsonl"
    with JudgeServer(scripted(), "scripted") as server:

        def run(max_new_tokens: int = 6) -> dict:
            judge = Judge(JudgeSettings(model="scripted", base_url=server.base_url), tmp_path / "cache.jsonl")
            return mtbench.run_mtbench(loaded, judge, tmp_path, data="fixtures", limit=2,
                                       max_new_tokens=max_new_tokens, fingerprint="tiny")  # fmt: skip

        run()
        first = answers.read_bytes()

        with monkeypatch.context() as patch:  # another budget, killed while its answers file is published
            kill_at_publish(patch)
            with pytest.raises(Killed):
                run(max_new_tokens=3)
        assert answers.read_bytes() == first  # the previous file, whole
        assert [p.name for p in answers.parent.iterdir() if p.name.endswith(".tmp")] == []

        answers.write_bytes(first[: len(first) // 2])  # cut short by something else
        answered.clear()
        assert run()["metrics"]["judged"] == 4 and answered == [2]
        answered.clear()
        run()
        assert answered == []  # whole and made the same way: reused

        with monkeypatch.context() as patch:  # another budget, killed between its answers and their meta
            kill_before_meta(patch, mtbench)
            with pytest.raises(Killed):
                run(max_new_tokens=3)
        answered.clear()
        run()  # the first budget again
        assert answered == [2]  # the 3-token answers were not taken for 6-token ones

        answered.clear()
        loaded.weight_major = True  # --cpu-fast-decoding: answers made the default way are not its answers
        assert loaded.decoding == {"cpu_fast_decoding": True}
        run()
        assert answered == [2]
        answered.clear()
        run()
        assert answered == []  # its own answers: reused
        loaded.weight_major = False  # and back: the weight-first answers are not the default's either
        run()
        assert answered == [2]


def test_judge_repeats_report_the_judges_own_spread(tiny_model_dir, tmp_path):
    """A judge that drifts between calls (as GPT-4 does at temperature 0): each repeat is asked once, cached, and
    results.json gives each repeat's mean, their mean and sample standard deviation; repeat 0 is the reported one."""
    import statistics

    calls = {"n": 0}

    def drifting(messages, params):  # one point higher with each round of the 12 judgments (repeats run in turn)
        calls["n"] += 1
        return f"Rating: [[{scripted_rating(messages) + (calls['n'] - 1) // 12}]]", None

    with JudgeServer(drifting, "scripted") as server:
        assert run_eval(tiny_model_dir, tmp_path / "r", server, "--judge-repeats", "3") == 0
        assert server.requests == 12 * 3
    entry = json.loads((tmp_path / "r/results.json").read_text())["benchmarks"]["mtbench"]
    folder = tmp_path / "r/mtbench/model_judgment"
    files = [folder / "scripted_single.jsonl", folder / "scripted_single.repeat-1.jsonl",
             folder / "scripted_single.repeat-2.jsonl"]  # fmt: skip
    by_hand = [statistics.mean(json.loads(x)["score"] for x in f.read_text().splitlines()) for f in files]
    spread = entry["judge_repeats"]
    assert spread["repeats"] == 3 and spread["metrics"]["average"]["by_repeat"] == pytest.approx(by_hand)
    assert spread["metrics"]["average"]["by_repeat"][0] == pytest.approx(entry["metrics"]["average"])
    assert by_hand[1] == pytest.approx(by_hand[0] + 1) and by_hand[2] == pytest.approx(by_hand[0] + 2)
    assert spread["metrics"]["average"]["sd"] == pytest.approx(1.0)  # sample sd of (a, a + 1, a + 2)
    assert spread["metrics"]["average"]["range"] == [min(by_hand), max(by_hand)]
    with JudgeServer(drifting, "scripted") as server:  # a rerun asks nothing: every repeat is cached
        assert run_eval(tiny_model_dir, tmp_path / "r", server, "--judge-repeats", "3") == 0
        assert server.requests == 0


def test_judged_benchmark_without_judge_says_how_to_configure(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from sapo.cli import main

    monkeypatch.delenv("SAPO_JUDGE_MODEL", raising=False)
    assert main(["eval", str(tiny_model_dir), "--suite", "mtbench", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--judge-model" in err and "--judge local" in err


def test_prompts_and_ratings_match_fastchat(monkeypatch):
    """Our judge prompt and rating for each question and turn equal FastChat's run_judge_single's."""
    monkeypatch.setitem(sys.modules, "anthropic", types.ModuleType("anthropic"))  # imported, unused, not installed
    from fastchat.llm_judge import common

    data = load_mtbench_data("real")
    assert len(data.questions) == 80 and {q["category"] for q in data.questions} >= {"math", "coding", "writing"}
    seen = {}
    monkeypatch.setattr(common, "chat_completion_openai",
                        lambda model, conv, temperature, max_tokens: seen.update(conv=conv) or "Good. [[6.5]]")  # fmt: skip
    for question in [data.questions[0], next(q for q in data.questions if q["category"] == "math")]:
        answer = {"choices": [{"turns": ["first answer", "second answer"]}]}
        for turn in (1, 2):
            name, system, user = build_judge_prompt(data, question, answer, turn)
            judge = common.Judge("gpt-4", data.judge_prompts[name], ref_based="math" in name, multi_turn=turn == 2)
            ref = data.references.get(question["question_id"]) if "math" in name else None
            rating, fastchat_user, _ = common.run_judge_single(question, answer, judge, ref, multi_turn=turn == 2)
            assert user == fastchat_user and system == seen["conv"].system_message
            assert parse_rating("Good. [[6.5]]") == rating == 6.5


@pytest.mark.parametrize(("text", "score"), [("[[7]]", 7.0), ("Rating: [[3.5]].", 3.5), ("[9] overall", 9.0),
                                             ("no number here", -1.0), ("[[x]]", -1.0)])  # fmt: skip
def test_rating_parse(text, score):
    assert parse_rating(text) == score


def test_unparsed_ratings_are_never_averaged():
    rows = [{"score": 8.0, "turn": 1}, {"score": -1.0, "turn": 1}, {"score": 4.0, "turn": 2}]
    assert summarize(rows) == {"turn_1": 8.0, "turn_2": 4.0, "average": 6.0, "judged": 3, "unparsed": 1}


def test_fixture_questions_have_fastchat_shape():
    """The shipped data/mt_bench/ copy, read raw: FastChat's question and reference-answer rows, then as loaded."""
    read = lambda path: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # noqa: E731
    assert sorted(str(p.relative_to(FIXTURES_DIR)) for p in FIXTURES_DIR.rglob("*") if p.is_file()) == [
        "question.jsonl", "reference_answer/gpt-4.jsonl"]  # fmt: skip
    questions, references = read(FIXTURES_DIR / "question.jsonl"), read(FIXTURES_DIR / "reference_answer/gpt-4.jsonl")
    for q in questions:
        assert set(q) == {"question_id", "category", "turns"} and len(q["turns"]) == 2
        assert isinstance(q["question_id"], int) and q["category"] in CATEGORY_TEMPERATURE, q
        assert all(isinstance(turn, str) and turn for turn in q["turns"]), q
    categories = {q["question_id"]: q["category"] for q in questions}
    assert len(categories) == len(questions) and {"writing", "math"} <= set(categories.values())  # both prompt kinds
    for ref in references:
        assert set(ref) == {"question_id", "answer_id", "model_id", "choices"} and ref["model_id"] == "gpt-4"
        assert categories[ref["question_id"]] in NEED_REF_CATS, ref  # every answer belongs to a question judged by it
        (choice,) = ref["choices"]
        assert choice["index"] == 0 and len(choice["turns"]) == 2 and all(isinstance(t, str) for t in choice["turns"])
    data = load_mtbench_data("fixtures")
    assert (data.source, data.questions) == ("fixtures", questions)
    assert list(data.references.values()) == references  # one per question, in the file's order
    for q in data.questions:
        if q["category"] in ("math", "reasoning", "coding"):
            assert len(data.references[q["question_id"]]["choices"][0]["turns"]) == 2


def test_user_data_folder_in_fastchat_layout(tmp_path):
    from sapo.evaluate.packaged import wheel_data_dir

    folder = tmp_path / "data" / "mt_bench"
    folder.mkdir(parents=True)
    questions = (FIXTURES_DIR / "question.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "question.jsonl").write_text("".join(questions[:2]))
    (tmp_path / "data" / "judge_prompts.jsonl").write_text((wheel_data_dir() / "judge_prompts.jsonl").read_text())
    data = load_mtbench_data(str(tmp_path / "data"))
    assert len(data.questions) == 2 and data.source == str(tmp_path / "data")
    with pytest.raises(DataError, match="layout"):
        load_mtbench_data(str(Path(tmp_path / "nowhere")))
