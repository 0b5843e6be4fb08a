"""`sapo compare`: paired differences of two results files, and refusals that name their reason."""

from __future__ import annotations

import json
import re

import pytest

from sapo.cli import main
from sapo.evaluate.compare import compare_runs, format_comparison
from sapo.evaluate.items import write_items
from sapo.evaluate.judge_server import JudgeServer
from sapo.evaluate.results import write_results
from sapo.evaluate.uncertainty import bootstrap_interval

PACKAGES = {"torch": "2.13.0", "transformers": "4.0", "fschat": "0.2.36"}


def fake_run(folder, scores: dict[str, float], *, judge="gpt-4", data="mt_bench", packages=None, template="t1",
             calibration_passed=True, benchmark="mtbench", run=None):  # fmt: skip
    """A results.json with one MT-Bench entry whose per-question averages are ``scores``."""
    items = {"average": {qid: (value, 1.0) for qid, value in scores.items()}}
    entry = {"data": data, "settings": {"max_new_tokens": 1024}, "judge": {"name": judge, "base_url": str(folder)},
             "calibration": {"passed": calibration_passed},
             "metrics": {"average": sum(scores.values()) / len(scores)},
             "uncertainty": {"average": bootstrap_interval(items["average"]).as_dict()},
             "items": write_items(folder / benchmark, benchmark, items), **({"run": run} if run else {})}  # fmt: skip
    model = {"name": folder.name, "weights_sha256": folder.name, "chat_template_sha256": template}
    path = write_results(folder, model=model, run={}, judge=None, benchmarks={benchmark: entry})
    body = json.loads(path.read_text())
    body["packages"] = {**PACKAGES, **(packages or {})}  # what write_results records, pinned for the test
    path.write_text(json.dumps(body))
    return path


HARD = {f"q{i}": float(i % 7 + 1) for i in range(40)}  # questions differ far more than the runs below


def test_a_planted_difference_is_significant_and_a_copy_is_not(tmp_path):
    base = fake_run(tmp_path / "base", HARD)
    better = fake_run(tmp_path / "better", {k: v + 0.5 for k, v in HARD.items()})
    copy = fake_run(tmp_path / "copy", dict(HARD))
    found = compare_runs(better, base)["benchmarks"]["mtbench"]
    assert found["refused"] is None
    assert (
        found["metrics"]["average"]["difference"] == pytest.approx(0.5) and found["metrics"]["average"]["significant"]
    )
    assert " *" in format_comparison(compare_runs(better, base))
    null = compare_runs(copy, base)["benchmarks"]["mtbench"]["metrics"]["average"]
    assert null["difference"] == 0 and not null["significant"] and null["p_value"] == 1.0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"judge": "gpt-4o"}, "different judges"),
        ({"data": "fixtures"}, "different data"),
        ({"packages": {"fschat": "0.2.35"}}, "different fschat versions"),
        ({"packages": {"torch": "2.12.0"}}, "different torch versions"),
        ({"template": "t2"}, "different chat templates"),
        ({"calibration_passed": False}, "the judge failed calibration in run B"),
        ({"run": {"cpu_fast_decoding": True}}, "different benchmark settings (cpu_fast_decoding)"),
    ],
)
def test_incomparable_runs_are_refused_with_the_reason(tmp_path, change, reason, capsys):
    a = fake_run(tmp_path / "a", HARD)
    b = fake_run(tmp_path / "b", HARD, **change)
    assert reason in compare_runs(a, b)["benchmarks"]["mtbench"]["refused"]
    assert main(["compare", str(a), str(b)]) == 2  # nothing could be compared
    assert reason in capsys.readouterr().out


def test_a_file_from_before_cpu_fast_decoding_compares_with_one_that_has_it_off(tmp_path):
    old = fake_run(tmp_path / "old", HARD)  # no run.cpu_fast_decoding: written before the option existed
    new = fake_run(tmp_path / "new", HARD, run={"cpu_fast_decoding": False})
    assert compare_runs(old, new)["benchmarks"]["mtbench"]["refused"] is None


def test_open_llm_ignores_the_chat_template_and_results_folders_can_move(tmp_path):
    """Open LLM v1 prompts without the chat template: a base model and its SFT compare. The items file is found
    beside results.json wherever the folders are moved."""
    a = fake_run(tmp_path / "a", HARD, benchmark="openllm")
    fake_run(tmp_path / "b", HARD, benchmark="openllm", template="t2", judge="another")  # no judge scores it
    moved = tmp_path / "elsewhere"
    (tmp_path / "b").rename(moved)
    body = compare_runs(a, moved)["benchmarks"]["openllm"]
    assert body["refused"] is None and body["metrics"]["average"]["difference"] == 0


def test_different_items_are_refused_unless_shared_items_is_asked(tmp_path):
    a = fake_run(tmp_path / "a", HARD)
    fewer = fake_run(tmp_path / "b", {k: v for k, v in HARD.items() if k != "q0"})
    assert "1 only in A, 0 only in B" in compare_runs(a, fewer)["benchmarks"]["mtbench"]["refused"]
    shared = compare_runs(a, fewer, shared_only=True)["benchmarks"]["mtbench"]
    assert shared["refused"] is None and shared["metrics"]["average"]["n"] == 39
    elsewhere = fake_run(tmp_path / "c", {f"other{i}": 1.0 for i in range(5)})
    assert "no item in common" in compare_runs(a, elsewhere)["benchmarks"]["mtbench"]["refused"]


def test_a_missing_results_file_names_the_path(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nowhere"), str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_two_real_mtbench_runs_compare_on_their_shared_questions(tiny_model_dir, tmp_path, capsys):
    """Real `sapo eval` output (tiny model, fixture questions, a judge on 127.0.0.1): the same model with two
    sampling seeds is compared question by question; a changed answer budget is refused."""

    def judge(messages, params):  # a rating from the judged text, so different answers get different ratings
        return f"Rating: [[{len(messages[-1]['content']) % 10 + 1}]]", None

    def evaluate(output, *extra):
        argv = ["eval", str(tiny_model_dir), "--suite", "mtbench", "--data", "fixtures", "--output", str(output),
                "--judge-model", "scripted", "--judge-base-url", server.base_url, "--calibration-pairs", "0",
                *extra]  # this judge would fail calibration (tests/test_calibration.py), and compare would refuse  # fmt: skip
        assert main(argv) == 0

    with JudgeServer(judge, "scripted") as server:
        evaluate(tmp_path / "seed0", "--max-new-tokens", "6", "--seed", "0")
        summary = capsys.readouterr().out  # `sapo eval` prints each score with its 95% half-width
        assert re.search(r"average=[\d.]+ ± [\d.]+", summary), summary
        evaluate(tmp_path / "seed1", "--max-new-tokens", "6", "--seed", "1")
        evaluate(tmp_path / "longer", "--max-new-tokens", "7", "--seed", "0")
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "seed0"), str(tmp_path / "seed1"), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    metrics = body["benchmarks"]["mtbench"]["metrics"]
    assert set(metrics) == {"turn_1", "turn_2", "average"}
    average = metrics["average"]
    assert average["n"] == 6 and average["ci95"][0] <= average["difference"] <= average["ci95"][1]
    results = [json.loads((tmp_path / s / "results.json").read_text()) for s in ("seed0", "seed1")]
    expected = [r["benchmarks"]["mtbench"]["metrics"]["average"] for r in results]
    assert (average["a"], average["b"]) == pytest.approx(expected)
    refused = compare_runs(tmp_path / "seed0", tmp_path / "longer")["benchmarks"]["mtbench"]["refused"]
    assert refused == "different benchmark settings (max_new_tokens)"
