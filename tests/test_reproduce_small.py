"""The small scale: which columns each scale shows, the small recipes' shared budget, and the sweep's records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sapo.errors import RecipeError
from sapo.reproduce import sweep
from sapo.reproduce.run import EVAL_ARGS
from sapo.reproduce.table_specs import SCALES, load_columns, load_spec, plan_runs

REPO = Path(__file__).resolve().parents[1]
SMALL_RECIPES = sorted((REPO / "recipes/small").glob("*/*/config_small.yaml"))


def test_each_scale_shows_only_the_columns_it_measures():
    for name in ("table2", "table3"):
        spec = load_spec(name)
        keys = {scale: [c.key for c in spec.at_scale(scale).columns] for scale in SCALES}
        assert "verifiable" in keys["small"] and "verifiable" in keys["embedded"] and "verifiable" not in keys["paper"]
        # the only offline judge failed calibration: no judged column at small scale, and no judge is asked
        assert not {"mtbench", "alpacaeval_lc", "alpacaeval_wr", "alpacaeval_len"} & set(keys["small"])
        assert "mtbench" in keys["paper"] and "mtbench" in keys["embedded"]
        for plan in plan_runs(spec, "small", REPO):
            assert "mtbench" not in plan.suites and "alpacaeval" not in plan.suites and "verifiable" in plan.suites
    assert [c.key for c in load_spec("table3").at_scale("small").columns] == ["verifiable", "openllm_avg", "ifeval"]
    assert "--judge" not in EVAL_ARGS["small"]
    # embedded: the pipeline check scores a slice of the verifiable set (the <= 15 min budget), small all of it
    assert EVAL_ARGS["embedded"][-2:] == ["--limit", "verifiable=64"] and "--limit" not in EVAL_ARGS["small"]


def test_a_column_naming_an_unknown_scale_is_refused(tmp_path):
    (tmp_path / "columns.yaml").write_text("acc: {label: Acc, suite: openllm, path: openllm.metrics.acc, "
                                           "scales: [paper, huge]}\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"acc: scales \['paper', 'huge'\]"):
        load_columns(tmp_path)


def test_small_recipes_train_every_method_the_same_48_steps_of_2_examples():
    methods = {p.parent.name for p in SMALL_RECIPES}
    assert methods == {"sft", "dpo", "orpo", "spin", "sapo-dpo", "sapo-orpo"}
    for path in SMALL_RECIPES:
        recipe = yaml.safe_load(path.read_text())
        steps = recipe["max_steps"] * recipe.get("spin_iterations", 1)  # SPIN's max_steps is per iteration
        assert (steps, recipe["per_device_train_batch_size"]) == (48, 2), path
        assert recipe["output_dir"] == f"runs/small/smollm2-135m/{path.parent.name}", path
    rates = {p.parent.name: yaml.safe_load(p.read_text()).get("learning_rate") for p in SMALL_RECIPES}
    assert rates["dpo"] == rates["sapo-dpo"] and rates["orpo"] == rates["sapo-orpo"]  # one rate per loss


def test_the_sweep_is_data_and_its_trainer_log_is_read(tmp_path):
    body = sweep.load_sweep("small")
    assert (REPO / body["recipe"]).is_file() and body["vary"] == "learning_rate" and len(body["values"]) >= 3
    with pytest.raises(RecipeError, match="no sweep 'huge'; known: small"):
        sweep.load_sweep("huge")
    # The trainer's logged dicts, as `sapo train` prints them between progress bars (carriage returns).
    log = tmp_path / "train.log"
    log.write_text("  0%|  | 0/8\r 50%|  | 4/8\r{'loss': '0.6906', 'rewards/margins': '0.005138'}\n"
                   "noise {'loss' \n{'loss': '0.6539', 'rewards/margins': '0.08465', 'epoch': '0.04'}\n"
                   "{'train_runtime': '95.83', 'train_loss': '0.6681'}\n")  # fmt: skip
    assert sweep._last_logged(log, "loss") == 0.6539
    assert sweep._last_logged(log, "rewards/margins") == 0.08465
    assert sweep._last_logged(log, "grad_norm") is None


def test_the_sweep_table_prints_each_point_with_its_interval():
    body = {"sweep": "small", "recipe": "recipes/small/smollm2-135m/dpo/config_small.yaml", "vary": "learning_rate",
            "scored_on": "the first 96 verifiable items", "eval_args": ["--max-new-tokens", "48"],
            "points": [{"value": None, "accuracy": 0.2, "ci95": [0.1, 0.3], "train_loss": None, "reward_margin": None, "train_s": 0, "eval_s": 80}, {"value": 2e-6, "accuracy": 0.25, "ci95": [0.1667, 0.3438], "train_loss": 0.61,
                        "reward_margin": None, "train_s": 300, "eval_s": 90}]}  # fmt: skip
    text = sweep.sweep_markdown(body)
    assert "| 2e-06 | 0.250 | [0.167, 0.344] | 0.610 | n/a | 300 | 90 |" in text
    assert "| start model (untrained) | 0.200 | [0.100, 0.300] | n/a | n/a | 0 | 80 |" in text
    assert "the first 96 verifiable items (--max-new-tokens 48)" in text
    json.dumps(body)  # what sweep.json holds


def test_a_point_is_decided_by_the_fields_that_train_not_by_comments_or_logging():
    text = "learning_rate: 5.0e-6  # a comment\nmax_steps: 48\nreport_to: none\n"
    scoring = (96, ["--max-new-tokens", "48"])
    same = sweep.point_digest(text, {"learning_rate": 2e-6}, scoring)
    edited = "# new comment\n" + text.replace("none", "tensorboard")
    assert sweep.point_digest(edited, {"learning_rate": 2e-6}, scoring) == same
    assert sweep.point_digest(text, {"learning_rate": 1e-5}, scoring) != same
    assert sweep.point_digest(text.replace("48", "96"), {"learning_rate": 2e-6}, scoring) != same
    assert sweep.point_digest(text, {"learning_rate": 2e-6}, (267, ["--max-new-tokens", "48"])) != same  # rescored


def test_plan_refuses_rows_the_paper_runs_apart_but_a_scale_would_run_as_one(tmp_path):
    from sapo.errors import RecipeError as PlanError

    (tmp_path / "columns.yaml").write_text((REPO / "reproduce/tables/columns.yaml").read_text())
    (tmp_path / "table9.yaml").write_text(
        "title: t\ncaption: c\nkind: table\nmodels: [llama-3-8b]\ncolumns: [ifeval]\nrows:\n"
        "  - {key: a, label: A, recipe: sapo-orpo, paper: {overrides: {segment_max_new_tokens: 64}}}\n"
        "  - {key: b, label: B, recipe: sapo-orpo, paper: {overrides: {segment_max_new_tokens: 128}}}\n")  # fmt: skip
    spec = load_spec("table9", tmp_path)
    assert len({p.run_id for p in plan_runs(spec, "paper", REPO)}) == 2
    with pytest.raises(PlanError, match="rows a and b are one run .* at small scale but two at paper scale"):
        plan_runs(spec, "small", REPO)


def test_a_child_process_log_keeps_progress_redraws_and_a_failure_names_the_log(tmp_path, capsys):
    import sys

    from sapo.errors import SapoError
    from sapo.reproduce.children import Step, run_child

    bar = "import sys\nfor i in range(3):\n    sys.stderr.write(f'\\rstep {i}'); sys.stderr.flush()\nprint()\n"
    run_child(Step("bars", [sys.executable, "-c", bar]), tmp_path / "bars.log", tmp_path)
    assert (tmp_path / "bars.log").read_bytes() == b"\rstep 0\rstep 1\rstep 2\n"  # redrawn in place, as tqdm does
    assert "\rstep 2" in capsys.readouterr().out
    # print() without flush, then wait for the line to reach the log while the child still runs: only an
    # unbuffered child and a log flushed per line get it there before the child exits.
    log = tmp_path / "live.log"
    live = ("import pathlib, sys, time\nprint('first line')\nfor _ in range(100):\n"
            f"    if 'first line' in pathlib.Path({str(log)!r}).read_text(): sys.exit(0)\n"
            "    time.sleep(0.05)\nsys.exit(7)\n")  # fmt: skip
    run_child(Step("live", [sys.executable, "-c", live]), log, tmp_path)  # exit 7 would raise
    with pytest.raises(SapoError, match=r"boom failed \(exit 3\); log: .*boom.log"):
        run_child(Step("boom", [sys.executable, "-c", "raise SystemExit(3)"]), tmp_path / "boom.log", tmp_path)
