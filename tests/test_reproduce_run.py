"""`sapo reproduce` orchestration: finished runs are reused (a second run only renders), stale ones
are not, evaluation asks only for missing benchmarks, and the paper scale prints its commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sapo.evaluate.results import write_results
from sapo.reproduce import run as reproduce_run
from sapo.reproduce.table_specs import load_spec, plan_runs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path):
    """A scratch root with the project's recipes, so runs and results land in tmp_path."""
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return tmp_path


def finish(plan, root: Path, weights: float, suites=("verifiable", "ifeval", "mtbench", "alpacaeval")) -> None:
    """Lay out what a finished training run and its evaluation leave behind."""
    run_dir = root / reproduce_run.RUNS_ROOT / plan.run_id
    run_dir.mkdir(parents=True)
    save_file({"w": torch.full((2,), weights)}, run_dir / "model.safetensors")
    stamp = {"recipe_sha256": reproduce_run.recipe_hash(root, plan)}
    (run_dir / reproduce_run.RUN_STAMP).write_text(json.dumps(stamp))
    from sapo.evaluate.results import weights_fingerprint

    metrics = {"verifiable": {"accuracy": 0.125}, "ifeval": {"prompt_level_strict_acc": 0.25}, "mtbench": {"average": 5.5},
               "alpacaeval": {"win_rate": 40.0, "avg_length": 120}}  # fmt: skip
    write_results(root / reproduce_run.RESULTS_ROOT / plan.run_id,
                  model={"name": plan.run_id, "weights_sha256": weights_fingerprint(run_dir)}, run={}, judge=None,
                  benchmarks={s: {"data": "fixtures", "metrics": metrics[s]} for s in suites})  # fmt: skip
    reproduce_run.record_eval(plan, root, list(suites))


def test_a_second_run_only_renders(checkout, monkeypatch):
    plans = plan_runs(load_spec("table2"), "embedded", checkout)
    for i, plan in enumerate(plans):
        finish(plan, checkout, weights=float(i))
    # No child step (train, eval) runs; matplotlib may still spawn fc-list to build its font cache on a fresh machine.
    monkeypatch.setattr(reproduce_run, "run_child", lambda step, *a: pytest.fail(f"launched {step.what}"))
    assert reproduce_run.reproduce("table2", "embedded", root=checkout) == 0
    markdown = (checkout / "results/embedded/table2.md").read_text()
    assert "NOT comparable" in markdown and "25.00" in markdown and "5.50" in markdown and "12.5" in markdown
    assert {p.suffix for p in (checkout / "results/embedded").iterdir()} == {".md", ".tex", ".csv"}


def test_changed_recipe_or_weights_are_not_reused(checkout):
    plan = plan_runs(load_spec("table2"), "embedded", checkout)[1]
    finish(plan, checkout, weights=1.0, suites=("mtbench",))
    model_dir = checkout / reproduce_run.RUNS_ROOT / plan.run_id
    assert reproduce_run.trained(plan, checkout)
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == ["verifiable", "ifeval", "alpacaeval"]
    save_file({"w": torch.full((2,), 9.0)}, model_dir / "model.safetensors")  # retrained elsewhere: new weights
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == ["verifiable", "ifeval", "mtbench", "alpacaeval"]
    recipe = checkout / plan.recipe
    recipe.write_text(recipe.read_text() + "\nlearning_rate: 1.0e-7\n")
    assert not reproduce_run.trained(plan, checkout)


def test_benchmarks_scored_with_other_eval_flags_are_not_reused(checkout, monkeypatch):
    plan = plan_runs(load_spec("table2"), "embedded", checkout)[1]
    finish(plan, checkout, weights=1.0)
    model_dir = checkout / reproduce_run.RUNS_ROOT / plan.run_id
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == []
    # The scale's flags change (here the verifiable limit): every benchmark scored under the old ones is stale.
    monkeypatch.setitem(
        reproduce_run.EVAL_ARGS, "embedded", [*reproduce_run.EVAL_ARGS["embedded"][:-1], "verifiable=8"]
    )
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == ["verifiable", "ifeval", "mtbench", "alpacaeval"]
    reproduce_run.record_eval(plan, checkout, ["mtbench"])  # re-scored in part: the rest stays stale
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == ["verifiable", "ifeval", "alpacaeval"]
    # Results from before the stamp existed (no reproduce_eval.json) are not trusted either.
    (checkout / reproduce_run.RESULTS_ROOT / plan.run_id / "reproduce_eval.json").unlink()
    assert len(reproduce_run.missing_suites(plan, checkout, model_dir)) == 4


def test_reproduce_data_replaces_the_scales_and_rescores_what_another_source_scored(checkout):
    plan = plan_runs(load_spec("table2"), "embedded", checkout)[1]
    finish(plan, checkout, weights=1.0)
    model_dir = checkout / reproduce_run.RUNS_ROOT / plan.run_id
    args = reproduce_run.eval_step(plan, checkout, ["ifeval"], "packaged").argv
    assert args[args.index("--data") + 1] == "packaged" and args.count("--data") == 1
    assert reproduce_run.missing_suites(plan, checkout, model_dir, "packaged") == list(plan.suites)
    reproduce_run.record_eval(plan, checkout, ["ifeval"], "packaged")
    assert reproduce_run.missing_suites(plan, checkout, model_dir, "packaged") == [
        "verifiable",
        "mtbench",
        "alpacaeval",
    ]
    assert reproduce_run.missing_suites(plan, checkout, model_dir) == ["ifeval"]  # back on the scale's fixtures


def test_ablation_rows_train_with_their_overrides_in_their_own_folder(checkout):
    plans = {p.row: p for p in plan_runs(load_spec("table3"), "embedded", checkout)}
    step = reproduce_run.train_step(plans["on-policy"], checkout, ["sapo"])
    assert step.argv[:2] == ["sapo", "train"] and step.argv[2].endswith(
        "embedded/smollm2-135m/sapo-orpo/config_cpu.yaml"
    )
    assert "--generator" in step.argv and step.argv[step.argv.index("--generator") + 1] == "policy"
    assert step.argv[step.argv.index("--use_buffer") + 1] == "false"
    out = step.argv[step.argv.index("--output_dir") + 1]
    assert out != str(checkout / "runs/embedded/smollm2-135m/sapo-orpo")  # never overwrites the plain run
    assert plans["sapo"].run_id == "embedded/smollm2-135m/sapo-orpo"  # shared with Table 2's SAPO-ORPO row


def test_paper_scale_without_gpus_prints_the_commands(checkout, monkeypatch, capsys):
    monkeypatch.setattr(reproduce_run, "paper_scale_blockers", lambda: ["no CUDA GPU"])
    assert reproduce_run.reproduce("table2", "paper", root=checkout) == 2
    out = capsys.readouterr().out
    assert "no CUDA GPU" in out and "accelerate launch --config_file" in out and "zero3.yaml" in out
    # The LLaMA-3-8B chain: the SFT run is written where the DPO recipe starts.
    # Paths are relative to the checkout, where the commands are run: no machine's folders in them.
    sft_out = "runs/paper/llama-3-8b/sft"
    assert f"--output_dir {sft_out}\n" in out and f"{checkout}/runs" not in out and f"cd {checkout}" in out
    import yaml

    dpo = yaml.safe_load((checkout / "recipes/paper/llama-3-8b/dpo/config_full.yaml").read_text())
    assert dpo["model_name_or_path"] == sft_out
    assert "sapo eval wandb/mistral-7b-zephyr-sft" in out  # Mistral's SFT row is scored as published


def test_finished_runs_lose_their_intermediate_checkpoints(tmp_path):
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "iteration-0" / "checkpoint-3").mkdir(parents=True)
    (tmp_path / "model.safetensors").write_text("weights")
    reproduce_run.drop_checkpoints(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["iteration-0",
                                                                                      "model.safetensors"]  # fmt: skip


def test_force_on_a_fresh_checkout_trains_instead_of_failing(checkout, monkeypatch):
    """--force used to rmtree a run folder that did not exist yet (FileNotFoundError before any training)."""
    launched = []

    def fake_child(step, log, root):  # the child would train; here it leaves what a finished run leaves
        launched.append(step.what)
        if step.what.startswith("train"):
            out = root / step.argv[step.argv.index("--output_dir") + 1]
            out.mkdir(parents=True, exist_ok=True)
            save_file({"w": torch.zeros(2)}, out / "model.safetensors")

    monkeypatch.setattr(reproduce_run, "run_child", fake_child)
    monkeypatch.setattr(reproduce_run, "render", lambda *a, **k: None)
    assert not (checkout / reproduce_run.RUNS_ROOT).exists()
    assert reproduce_run.reproduce("table2", "embedded", root=checkout, force=True) == 0
    trained_rows = {p.run_id for p in plan_runs(load_spec("table2"), "embedded", checkout) if p.recipe is not None}
    assert sum(what.startswith("train") for what in launched) == len(trained_rows) > 0


def test_a_killed_reproduce_takes_its_child_with_it(tmp_path):
    """SIGKILL of `sapo reproduce` must not leave its training running: the rerun would find the folder locked."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    parent = parent_script(pid_file)
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return  # gone with its parent
        if _is_zombie(child):
            return
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived `sapo reproduce`")


def parent_script(pid_file: Path) -> str:
    tmp = f"{pid_file}.tmp"  # written whole, then renamed: the test never reads a half-written pid
    child = f"import os, time; open({tmp!r}, 'w').write(str(os.getpid())); os.replace({tmp!r}, {str(pid_file)!r}); time.sleep(120)"
    return (
        "import sys\nfrom pathlib import Path\nfrom sapo.reproduce.children import Step, run_child\n"
        f"run_child(Step('sleep', [sys.executable, '-c', {child!r}]), Path('log.txt'), Path('.'))\n"
    )


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_an_eval_that_fails_records_nothing_and_one_that_finishes_records_its_flags(checkout, monkeypatch):
    from sapo.errors import SapoError

    plan = plan_runs(load_spec("table2"), "embedded", checkout)[0]
    stamp = checkout / reproduce_run.RESULTS_ROOT / plan.run_id / "reproduce_eval.json"
    monkeypatch.setattr(reproduce_run, "plan_runs", lambda *a: [plan])  # the first row only
    monkeypatch.setattr(reproduce_run, "trained", lambda *a: True)

    def fail(step, *a):
        raise SapoError(f"{step.what} failed (exit 1)")

    monkeypatch.setattr(reproduce_run, "run_child", fail)
    with pytest.raises(SapoError, match="evaluate"):
        reproduce_run.reproduce("table2", "embedded", root=checkout)
    assert not stamp.exists()  # nothing was scored: nothing may pass as scored with these flags
    monkeypatch.setattr(reproduce_run, "run_child", lambda step, *a: None)
    monkeypatch.setattr(reproduce_run, "render", lambda *a: None)
    assert reproduce_run.reproduce("table2", "embedded", root=checkout) == 0
    assert json.loads(stamp.read_text()) == {s: reproduce_run.eval_args(plan) for s in plan.suites}
