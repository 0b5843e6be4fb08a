"""The lm-eval benchmarks (Open LLM Leaderboard v1, IFEval) on the offline fixtures: they run end
to end, give the same numbers as lm-eval's own API, find NLTK's data without downloading it, and
the fixture files have each hub data set's exact format."""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HUB_TYPES, has_hub_types

from sapo.errors import DataError, RecipeError
from sapo.evaluate.items import read_items
from sapo.evaluate.lm_eval_data import FIXTURES_DIR, resolve_data
from sapo.evaluate.lm_eval_suite import (
    load_benchmark,
    run_ifeval,
    run_openllm,
    seed_args,
    write_task_configs,
)
from sapo.evaluate.nltk_data import PUNKT_TAB_FILES, ensure_punkt_tab
from sapo.evaluate.uncertainty import Z95, ratio

HUB_COLUMNS = {key: set(types) for key, types in HUB_TYPES.items()}
LIMIT = 2


def _refuse_download(*args, **kwargs):
    raise AssertionError(f"nltk.download was called: {args}")


@pytest.fixture(scope="module")
def openllm_run(tiny_model_dir, tmp_path_factory):
    return run_openllm(str(tiny_model_dir), output_dir=tmp_path_factory.mktemp("eval"), limit=LIMIT, data="fixtures")


@pytest.fixture(scope="module")
def ifeval_run(tiny_model_dir, tmp_path_factory):
    import nltk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nltk, "download", _refuse_download)
        # Every fixture prompt (no limit), so each instruction's kwargs go through lm-eval's checker.
        return run_ifeval(str(tiny_model_dir), output_dir=tmp_path_factory.mktemp("eval"), data="fixtures",
                          max_gen_toks=16)  # fmt: skip


def _direct_lm_eval(run: dict, model_dir) -> dict:
    """lm-eval's own API on the task YAMLs a run wrote, with the settings it reports."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    settings = run["run"]
    return lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": settings["dtype"]},
        tasks=[run["lm_eval_group"]],
        task_manager=TaskManager(include_path=run["tasks_dir"], include_defaults=False),
        limit=settings["limit"],
        batch_size=settings["batch_size"],
        device=settings["device"],
        apply_chat_template=settings["apply_chat_template"],
        fewshot_as_multiturn=settings["apply_chat_template"],
        gen_kwargs=settings["gen_kwargs"],
        **seed_args(settings["seed"]),
    )


# ---------------------------------------------------------------- (a) end to end on the fixtures


def test_openllm_runs_every_task_offline(openllm_run):
    assert openllm_run["data"] == "fixtures" and "FIXTURE" in openllm_run["note"]
    metrics = openllm_run["metrics"]
    six = ["arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "gsm8k"]
    assert set(metrics) == {*six, "gsm8k_flexible_extract"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert openllm_run["average"] == pytest.approx(sum(metrics[k] for k in six) / 6)
    shots = {k: s["num_fewshot"] for k, s in openllm_run["settings"].items()}
    assert shots == {"arc_challenge": 25, "hellaswag": 10, "truthfulqa_mc2": 0, "mmlu": 5, "winogrande": 5, "gsm8k": 5}
    assert openllm_run["settings"]["gsm8k"]["filter"] == "strict-match"
    assert openllm_run["settings"]["arc_challenge"]["metric"] == "acc_norm"


def test_openllm_error_bars_are_lm_evals_and_items_reproduce_its_scores(openllm_run):
    results_file = Path(openllm_run["files"][0])
    scores = json.loads(results_file.read_text())["results"]
    uncertainty = openllm_run["uncertainty"]
    arc = uncertainty["arc_challenge"]
    assert arc["stderr"] == scores["openllm_fixtures_arc_challenge"]["acc_norm_stderr,none"]
    assert arc["ci95"] == pytest.approx([arc["value"] - Z95 * arc["stderr"], arc["value"] + Z95 * arc["stderr"]])
    six = ["arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "gsm8k"]
    expected = math.sqrt(sum(uncertainty[k]["stderr"] ** 2 for k in six)) / 6
    assert uncertainty["average"]["stderr"] == pytest.approx(expected)
    body = read_items(openllm_run["items"], "openllm", Path(openllm_run["tasks_dir"]).parents[1])
    for name, value in openllm_run["metrics"].items():
        assert ratio(body["metrics"][name]) == pytest.approx(value), name
    assert len(body["metrics"]["mmlu"]) == 2 * LIMIT  # both fixture subjects, pooled
    assert body["mean_of"] == {"average": six}


def test_openllm_writes_lm_eval_own_outputs(openllm_run):
    results_file, *sample_files = map(Path, openllm_run["files"])
    results = json.loads(results_file.read_text())
    assert results["n-shot"]["openllm_fixtures_arc_challenge"] == 25
    assert results["config"]["limit"] == LIMIT and results["chat_template"] is None
    # one samples file per leaf task (two MMLU subjects in the fixtures), a line per doc and filter
    assert len(sample_files) == 7
    for path in sample_files:
        samples = [json.loads(line) for line in path.read_text().splitlines()]
        assert {s["doc_id"] for s in samples} == set(range(LIMIT))
        assert {"doc", "arguments", "resps", "filtered_resps", "filter"} <= samples[0].keys()
    gsm8k = next(p for p in sample_files if "gsm8k" in p.name).read_text()
    assert '"filter": "strict-match"' in gsm8k and '"filter": "flexible-extract"' in gsm8k
    arc = next(p for p in sample_files if "arc_challenge" in p.name).read_text().splitlines()[0]
    prompt = json.loads(arc)["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.count("Question:") == 26  # 25 shots and the question itself, no chat template
    assert "--tasks openllm_fixtures" in openllm_run["lm_eval_command"]


def test_ifeval_reports_all_four_numbers(ifeval_run):
    assert ifeval_run["data"] == "fixtures" and ifeval_run["average"] is None
    assert set(ifeval_run["metrics"]) == {
        "prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc",
    }  # fmt: skip
    assert all(0.0 <= v <= 1.0 for v in ifeval_run["metrics"].values())
    items = read_items(ifeval_run["items"], "ifeval", Path(ifeval_run["tasks_dir"]).parents[1])["metrics"]
    for name, value in ifeval_run["metrics"].items():  # bootstrap over prompts; lm-eval's stderr kept beside
        assert ratio(items[name]) == pytest.approx(value)
        assert "bootstrap" in ifeval_run["uncertainty"][name]["method"]
    assert ifeval_run["uncertainty"]["prompt_level_strict_acc"]["lm_eval_stderr"] is not None
    assert ifeval_run["uncertainty"]["inst_level_strict_acc"]["lm_eval_stderr"] is None  # lm-eval: "N/A"
    samples = [json.loads(line) for line in Path(ifeval_run["files"][1]).read_text().splitlines()]
    assert len(samples) == 10
    first = samples[0]["arguments"]["gen_args_0"]
    assert first["arg_0"].startswith("<|im_start|>")  # the model's chat template was applied
    assert first["arg_1"]["max_gen_toks"] == 16


# ---------------------------------------------------------------- (b) same numbers as lm-eval's own API


def _json_round_trip(results: dict) -> dict:
    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(results, default=handle_non_serializable))


@pytest.mark.parametrize("benchmark", ["openllm", "ifeval"])
def test_numbers_equal_lm_eval_own_api(benchmark, openllm_run, ifeval_run, tiny_model_dir):
    run = {"openllm": openllm_run, "ifeval": ifeval_run}[benchmark]
    direct = _direct_lm_eval(run, tiny_model_dir)
    ours = json.loads(Path(run["files"][0]).read_text())
    assert ours["results"] == _json_round_trip(direct["results"])
    for key, spec in load_benchmark(benchmark)["tasks"].items():
        for name, lm_eval_key in spec["report"].items():
            assert run["metrics"][name] == direct["results"][run["settings"][key]["lm_eval_task"]][lm_eval_key]


def test_recorded_ifeval_command_reruns_offline_to_the_same_numbers(ifeval_run, tmp_path):
    """results.json's lm_eval_command, run as written by a shell on an offline machine with no NLTK data of its
    own (fresh HOME, no NLTK_DATA), gives lm-eval's CLI our IFEval numbers exactly."""
    import shlex

    assert ifeval_run["lm_eval_env"] == {"NLTK_DATA": ifeval_run["lm_eval_command"].split()[0].split("=", 1)[1]}
    argv = shlex.split(ifeval_run["lm_eval_command"])
    out = argv.index("--output_path") + 1
    argv[out] = str(tmp_path / "rerun")  # beside ours, not over it
    lm_eval_bin = str(Path(sys.executable).parent / "lm_eval")
    command = " ".join(shlex.quote(lm_eval_bin if a == "lm_eval" else a) for a in argv)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rerun = json.loads(next((tmp_path / "rerun").rglob("results_*.json")).read_text())
    ours = json.loads(Path(ifeval_run["files"][0]).read_text())
    assert rerun["results"] == ours["results"]


# ---------------------------------------------------------------- (c) NLTK data found offline


def test_punkt_tab_is_written_locally_and_never_downloaded(tmp_path, monkeypatch):
    import nltk
    import punkt

    monkeypatch.setattr(nltk.data, "path", [])  # nothing NLTK could have found before
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk, "download", _refuse_download)
    with pytest.raises(LookupError):
        nltk.data.find("tokenizers/punkt_tab/english/")

    root = ensure_punkt_tab(tmp_path / "nltk_data")
    english = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in english.iterdir()) == sorted(PUNKT_TAB_FILES)
    assert str(root) == nltk.data.path[0] and str(root) in str(nltk.data.find("tokenizers/punkt_tab/english/"))

    # lm-eval's ifeval checker checks for punkt_tab (and would download it) when it is imported.
    for name in [m for m in sys.modules if m.startswith("lm_eval.tasks.ifeval")]:
        monkeypatch.delitem(sys.modules, name)
    util = importlib.import_module("lm_eval.tasks.ifeval.instructions_util")
    text = "Dr. Smith came home at 5 p.m. on Jan. 3. He was tired! Did Mr. Jones call? No."
    assert util.count_sentences(text) == 4
    assert nltk.sent_tokenize(text) == punkt.sent_tokenize(text)  # NLTK reads the model as its writer meant
    assert ensure_punkt_tab(tmp_path / "nltk_data") == root  # second call reuses the files


# ---------------------------------------------------------------- (d) fixtures in each task's exact format


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory):
    """Every fixture task built by lm-eval itself from YAMLs pointing at the fixture files."""
    from lm_eval.tasks import TaskManager

    ensure_punkt_tab()  # building the ifeval task imports its checker
    root = tmp_path_factory.mktemp("fixture_tasks")
    _, folder = resolve_data("fixtures", "openllm")
    tasks = {}
    for benchmark in ("openllm", "ifeval"):
        spec = load_benchmark(benchmark)
        group, names = write_task_configs(spec, "fixtures", folder, root / benchmark)
        loaded = TaskManager(include_path=str(root / benchmark), include_defaults=False).load([group])
        for key, name in names.items():
            tasks[key] = [
                (task, spec["tasks"][key]) for task_name, task in loaded["tasks"].items() if task_name.startswith(name)
            ]
    return tasks


def _multiple_choice_ok(task, docs) -> None:
    for doc in docs:
        choices = task.doc_to_choice(doc)
        # Winogrande-style tasks pick the context (doc_to_text) and share one continuation.
        gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
        assert isinstance(gold, int) and 0 <= gold < len(choices), doc


@pytest.mark.parametrize("key", list(HUB_COLUMNS))
def test_fixture_files_have_the_hub_format(fixture_tasks, key):
    for task, spec in fixture_tasks[key]:
        for split in filter(None, (spec["eval_split"], spec.get("fewshot_split"))):
            assert set(task.dataset[split].column_names) == HUB_COLUMNS[key], (key, split)
        assert len(task.eval_docs) >= 2
        if spec["num_fewshot"]:
            assert len(task.fewshot_docs()) >= spec["num_fewshot"]  # lm-eval samples without replacement
        if task.OUTPUT_TYPE == "multiple_choice":
            _multiple_choice_ok(task, list(task.eval_docs) + list(task.fewshot_docs() or []))


def test_fixture_rows_mean_what_the_tasks_read(fixture_tasks):
    (arc, _), (hellaswag, _) = fixture_tasks["arc_challenge"][0], fixture_tasks["hellaswag"][0]
    assert all(d["answerKey"] in d["choices"]["label"] for d in arc.eval_docs)
    assert {len(d["choices"]) for d in hellaswag.eval_docs} == {4} and all(
        "[" not in d["query"] for d in hellaswag.eval_docs
    )
    truthfulqa = fixture_tasks["truthfulqa_mc2"][0][0]
    assert all(d["mc2_targets"]["labels"][0] == 1 and 0 in d["mc2_targets"]["labels"] for d in truthfulqa.eval_docs)
    assert {task.config.description for task, _ in fixture_tasks["mmlu"]} == {
        f"The following are multiple choice questions (with answers) about {topic}.\n\n"
        for topic in ("astronomy", "high school computer science")
    }
    for doc in fixture_tasks["winogrande"][0][0].eval_docs:
        assert doc["sentence"].count("_") == 1 and doc["answer"] in ("1", "2")
    gsm8k = fixture_tasks["gsm8k"][0][0]
    strict = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval's strict-match filter
    for doc in list(gsm8k.eval_docs) + list(gsm8k.fewshot_docs()):
        assert strict.search(doc["answer"]), doc


def test_ifeval_fixture_kwargs_are_complete_for_the_checker(fixture_tasks):
    from lm_eval.tasks.ifeval import instructions_registry

    for doc in fixture_tasks["ifeval"][0][0].eval_docs:
        for instruction_id, kwargs in zip(doc["instruction_id_list"], doc["kwargs"], strict=True):
            checker = instructions_registry.INSTRUCTION_DICT[instruction_id]
            given = {k: v for k, v in kwargs.items() if v}  # as lm-eval's process_results passes them
            descriptions = set()
            for seed in (0, 1, 2):  # a checker draws any missing kwarg at random: all must be given
                random.seed(seed)
                descriptions.add(checker(instruction_id).build_description(**given))
            assert len(descriptions) == 1, (instruction_id, kwargs)


def test_every_fixture_file_is_a_split_in_the_hub_types():
    """The raw shipped files, before `datasets` can coerce anything: exactly the splits the tasks read, every line
    a row with the hub data set's fields and types."""
    specs = {**load_benchmark("openllm")["tasks"], **load_benchmark("ifeval")["tasks"]}
    expected = set()
    for key, spec in specs.items():
        folders = sorted((FIXTURES_DIR / key).iterdir()) if spec.get("per_subject") else [FIXTURES_DIR / key]
        expected |= {folder / f"{split}.jsonl" for folder in folders
                     for split in filter(None, (spec["eval_split"], spec.get("fewshot_split")))}  # fmt: skip
    assert {path for path in FIXTURES_DIR.rglob("*") if path.is_file()} == expected
    assert len([p for p in expected if p.parts[-3] == "mmlu"]) == 4  # two subjects, dev and test
    for path in sorted(expected):
        key = path.relative_to(FIXTURES_DIR).parts[0]
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # no blank lines either
        assert rows, path
        for i, row in enumerate(rows):
            assert has_hub_types(row, HUB_TYPES[key]), (path, i, row)
            if key == "arc_challenge":
                assert len(row["choices"]["text"]) == len(row["choices"]["label"]), (path, i)
            if key == "truthfulqa_mc2":
                assert all(len(t["choices"]) == len(t["labels"]) for t in (row["mc1_targets"], row["mc2_targets"]))
            if key == "mmlu":
                assert row["subject"] == path.parent.name, (path, i)
            if key == "ifeval":
                assert len(row["kwargs"]) == len(row["instruction_id_list"]), (path, i)
    arc_ids = [json.loads(line)["id"] for p in expected if p.parts[-2] == "arc_challenge" for line in p.open()]
    assert len(set(arc_ids)) == len(arc_ids)


# ---------------------------------------------------------------- data sources and bad input


def test_auto_falls_back_to_fixtures_offline_and_says_so(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="sapo"):
        label, folder = resolve_data("auto", "openllm")
    assert label == "fixtures" and folder == FIXTURES_DIR.resolve() and (folder / "gsm8k" / "test.jsonl").is_file()
    assert "FIXTURE" in caplog.text
    assert not any(tmp_path.iterdir())  # the shipped files are read in place, nothing is written


def test_local_folder_is_read_in_place_and_missing_files_are_named(tmp_path):
    folder = shutil.copytree(FIXTURES_DIR, tmp_path / "copy")  # a copy: the test deletes files from it
    label, resolved = resolve_data(str(folder), "openllm")
    assert (label, resolved) == ("local", folder.resolve())
    group, names = write_task_configs(load_benchmark("openllm"), label, resolved, tmp_path / "tasks")
    assert (group, names["gsm8k"]) == ("openllm_local", "openllm_local_gsm8k")
    assert str(folder / "gsm8k" / "train.jsonl") in (tmp_path / "tasks" / "openllm_local_gsm8k.yaml").read_text()
    (folder / "gsm8k" / "train.jsonl").unlink()
    with pytest.raises(DataError, match=re.escape(str(folder / "gsm8k" / "train"))):
        write_task_configs(load_benchmark("openllm"), label, resolved, tmp_path / "tasks")
    shutil.rmtree(folder / "mmlu")
    with pytest.raises(DataError, match="mmlu"):
        write_task_configs(load_benchmark("openllm"), label, resolved, tmp_path / "tasks")


def test_hub_configs_are_lm_eval_builtins_with_leaderboard_shots(tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    _, names = write_task_configs(load_benchmark("openllm"), "hub", None, tmp_path)
    arc = load_yaml(tmp_path / f"{names['arc_challenge']}.yaml", resolve_func=False)
    assert (arc["dataset_path"], arc["dataset_name"], arc["num_fewshot"]) == ("allenai/ai2_arc", "ARC-Challenge", 25)
    subjects = sorted(tmp_path.glob("openllm_hub_mmlu_*.yaml"))
    assert len(subjects) == 57
    builtin_dir = Path(importlib.import_module("lm_eval.tasks").__file__).parent / "mmlu" / "default"
    for path in subjects:
        ours = load_yaml(path, resolve_func=False)
        builtin = load_yaml(
            builtin_dir / f"mmlu_{path.stem.removeprefix('openllm_hub_mmlu_')}.yaml", resolve_func=False
        )
        differ = {k for k in ours.keys() | builtin.keys() if ours.get(k) != builtin.get(k)}
        assert differ <= {"task", "tag", "num_fewshot"} and ours["num_fewshot"] == 5, path.name


def test_bad_input_is_named(tmp_path, tiny_model_dir):
    with pytest.raises(RecipeError, match="dtype='fp8'"):
        run_openllm(str(tiny_model_dir), output_dir=tmp_path, dtype="fp8")
    with pytest.raises(DataError, match="no-such-folder"):
        run_openllm(str(tiny_model_dir), output_dir=tmp_path, data=str(tmp_path / "no-such-folder"))


# ---------------------------------------------------------------- a real model, once


def test_embedded_model_answers_ifeval_prompts(embedded_model_dir, tmp_path):
    run = run_ifeval(str(embedded_model_dir), output_dir=tmp_path, data="fixtures", limit=2, max_gen_toks=32)
    responses = [json.loads(line)["resps"][0][0] for line in Path(run["files"][1]).read_text().splitlines()]
    assert len(responses) == 2 and all(re.search(r"[a-z]{3}", r) for r in responses)
    assert all(0.0 <= v <= 1.0 for v in run["metrics"].values())
