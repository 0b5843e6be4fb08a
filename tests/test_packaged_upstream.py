"""`sapo eval --data packaged` against lm-eval's own CLI on the same files, on the embedded model (issue 25).

The upstream side runs lm-eval's own task files, copied with only the data location changed (and the task renamed,
so it does not clash with the built-in one): IFEval's four accuracies and ARC-Challenge 25-shot acc and acc_norm must
be equal, on a --limit subset. The command our results record (`lm_eval_command`) must reproduce our run as written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sapo.evaluate import packaged
from sapo.evaluate.lm_eval_suite import run_ifeval, run_openllm
from sapo.evaluate.nltk_data import ensure_punkt_tab

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("own_sapo_cache")]  # the embedded model, both tools: ~7 min
LIMIT = 3
MAX_GEN_TOKS = 48  # IFEval's 1280 would take minutes a prompt here; the same budget on both sides
IFEVAL = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


def _lm_eval_tasks() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _upstream_task(folder: Path, source: Path, name: str, replacements: dict[str, str]) -> None:
    """lm-eval's own task file ``source`` (and its sibling Python modules) copied into ``folder``, with only the lines
    in ``replacements`` (the data location, the task's name) changed."""
    folder.mkdir(parents=True)
    for module in source.parent.glob("*.py"):
        shutil.copy(module, folder / module.name)
    text = source.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert text.count(old) == 1, (source, old)
        text = text.replace(old, new)
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def _lm_eval_cli(model: Path, include: Path, task: str, out: Path, *extra: str) -> dict:
    """``lm_eval`` as a user types it, offline (its results JSON's ``results`` block for ``task``)."""
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
               "--include_path", str(include), "--tasks", task, "--limit", str(LIMIT), "--batch_size", "3",
               "--device", "cpu", "--seed", "0", "--output_path", str(out), *extra]  # fmt: skip
    env = {**os.environ, "NLTK_DATA": str(ensure_punkt_tab()), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = out.rglob("results_*.json")
    return json.loads(results.read_text(encoding="utf-8"))["results"][task]


def test_ifeval_equals_lm_evals_own_cli_and_the_recorded_command(embedded_model_dir, packaged_wheels, tmp_path):
    ours = run_ifeval(str(embedded_model_dir), output_dir=tmp_path / "ours", limit=LIMIT, batch_size=3,
                      data="packaged", seed=0, max_gen_toks=MAX_GEN_TOKS)  # fmt: skip
    assert ours["data"] == "packaged" and ours["data_source"]["splits"][0]["rows"] == 541
    data = packaged.prepare("ifeval") / "lm_eval" / "ifeval" / "train.jsonl"
    _upstream_task(tmp_path / "tasks", _lm_eval_tasks() / "ifeval" / "ifeval.yaml", "ifeval_upstream",
                   {"task: ifeval\n": "task: ifeval_upstream\n",
                    "dataset_path: google/IFEval\n": f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {data}\n"})  # fmt: skip
    theirs = _lm_eval_cli(embedded_model_dir, tmp_path / "tasks", "ifeval_upstream", tmp_path / "theirs",
                          "--apply_chat_template", "--gen_kwargs", f"max_gen_toks={MAX_GEN_TOKS}")  # fmt: skip
    assert {m: ours["metrics"][m] for m in IFEVAL} == {m: theirs[f"{m},none"] for m in IFEVAL}
    # The command results.json records, run as written, gives the same numbers again (a second results file).
    done = subprocess.run(["bash", "-c", ours["lm_eval_command"]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = set(Path(ours["files"][0]).parent.glob("results_*.json")) - {Path(ours["files"][0])}
    again = json.loads(results.read_text(encoding="utf-8"))["results"][ours["lm_eval_group"] + "_ifeval"]
    assert {m: ours["metrics"][m] for m in IFEVAL} == {m: again[f"{m},none"] for m in IFEVAL}


def test_arc_challenge_25_shot_equals_lm_evals_own_cli(embedded_model_dir, packaged_wheels, tmp_path):
    ours = run_openllm(str(embedded_model_dir), output_dir=tmp_path / "ours", limit=LIMIT, batch_size=3,
                       data="packaged", seed=0)  # fmt: skip
    assert ours["average"] is None and set(ours["absent"]) == {"truthfulqa_mc2", "gsm8k"}
    scores = json.loads(Path(ours["files"][0]).read_text(encoding="utf-8"))["results"][
        "openllm_packaged_arc_challenge"
    ]
    folder = packaged.prepare("openllm") / "lm_eval" / "arc_challenge"
    files = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {folder / 'train.jsonl'}\n    test: {folder / 'test.jsonl'}\n"  # fmt: skip
    _upstream_task(tmp_path / "tasks", _lm_eval_tasks() / "arc" / "arc_easy.yaml", "arc_challenge_upstream",
                   {"task: arc_easy\n": "task: arc_challenge_upstream\n", "dataset_path: allenai/ai2_arc\n": files,
                    "dataset_name: ARC-Easy\n": "", "validation_split: validation\n": "",
                    "tag:\n  - ai2_arc\n": ""})  # fmt: skip
    theirs = _lm_eval_cli(embedded_model_dir, tmp_path / "tasks", "arc_challenge_upstream", tmp_path / "theirs",
                          "--num_fewshot", "25")  # fmt: skip
    assert ours["metrics"]["arc_challenge"] == scores["acc_norm,none"]
    assert (scores["acc,none"], scores["acc_norm,none"]) == (theirs["acc,none"], theirs["acc_norm,none"])
    for metric in ("acc", "acc_norm"):  # the per-document choices too, not only the means
        assert scores[f"{metric}_stderr,none"] == theirs[f"{metric}_stderr,none"]


def _contexts(samples: Path) -> dict[int, list]:
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines()]
    return {row["doc_id"]: [arg["arg_0"] for arg in row["arguments"].values()] for row in rows}


def test_few_shot_contexts_equal_lm_evals_own_draw(tiny_model_dir, packaged_wheels, tmp_path):
    """HellaSwag 10-shot and Winogrande 5-shot: every document's prompt (its drawn exemplars included) equals what
    lm-eval's own task file builds from the same rows; lm-eval draws one shot more than asked for these two (their
    test split is None, like their shot split), so a config that names the shot split would draw other ones."""
    ours = run_openllm(str(tiny_model_dir), output_dir=tmp_path / "ours", limit=LIMIT, data="packaged", seed=0)
    folder = packaged.prepare("openllm") / "lm_eval"
    for task, shots, source in (
        ("hellaswag", 10, "hellaswag/hellaswag.yaml"),
        ("winogrande", 5, "winogrande/default.yaml"),
    ):
        files = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    train: {folder / task / 'train.jsonl'}\n    validation: {folder / task / 'validation.jsonl'}\n"  # fmt: skip
        original = (_lm_eval_tasks() / source).read_text(encoding="utf-8")
        path_line = next(line for line in original.splitlines() if line.startswith("dataset_path:")) + "\n"
        name_line = next(line for line in original.splitlines() if line.startswith("dataset_name:")) + "\n"
        _upstream_task(tmp_path / f"tasks_{task}", _lm_eval_tasks() / source, f"{task}_upstream",
                       {f"task: {task}\n": f"task: {task}_upstream\n", path_line: files, name_line: ""})  # fmt: skip
        _lm_eval_cli(tiny_model_dir, tmp_path / f"tasks_{task}", f"{task}_upstream", tmp_path / f"theirs_{task}",
                     "--num_fewshot", str(shots), "--log_samples")  # fmt: skip
        (theirs,) = (tmp_path / f"theirs_{task}").rglob("samples_*.jsonl")
        (mine,) = [Path(f) for f in ours["files"] if f"openllm_packaged_{task}_" in f]
        assert _contexts(mine) == _contexts(theirs), task
