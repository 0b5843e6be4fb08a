"""Crash during `sapo reproduce`, on real processes (nox -s faults only: minutes). Table 3 at small scale on a
scratch checkout whose recipes train the tiny model for 3 steps: `sapo reproduce` is SIGKILLed inside a training
and inside an evaluation, then rerun. Its children die with it (no orphan keeps the folder locked), and the
rerun ends with every run trained once to the same weights as an uninterrupted reproduce, every benchmark item
scored once, and the same table."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from faults import full_suite_only, never, run_killed_when
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.faults, full_suite_only()]
TINY = {"max_steps": 3, "save_steps": 1, "max_examples": 12, "segment_max_new_tokens": 4, "buffer_size": 6,
        "logging_steps": 1, "report_to": "none"}  # fmt: skip


def scratch_checkout(root: Path, model_dir: Path) -> Path:
    """The project's recipes with every small recipe on the tiny model, a few steps long."""
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "results" / "paper", root / "results" / "paper")  # what makes a folder a checkout
    for recipe in (root / "recipes" / "small").rglob("*.yaml"):
        values = yaml.safe_load(recipe.read_text())
        values.update({**TINY, "model_name_or_path": str(model_dir)})
        recipe.write_text(yaml.safe_dump(values))
    return root


def reproduce_argv(root: Path) -> list[str]:
    """`sapo reproduce table3 --scale small` on ``root``, each benchmark cut to its first 8 items (the scale's
    267 verifiable items on the tiny model would make this minutes longer and test nothing more)."""
    code = ("from pathlib import Path; import sapo.reproduce.run as run; run.EVAL_ARGS['small'] += ['--limit', '8']; "
            f"run.reproduce('table3', 'small', root=Path({str(root)!r}))")  # fmt: skip
    return [sys.executable, "-c", code]


def run_outputs(root: Path) -> dict:
    """Final weights and per-item scores of every run."""
    found = {}
    for weights in sorted((root / "runs").rglob("model.safetensors")):
        if "checkpoint-" not in str(weights):
            found[str(weights.relative_to(root))] = load_file(weights)
    for items in sorted((root / "results" / "runs").rglob("items.json")):
        found[str(items.relative_to(root))] = json.loads(items.read_text())["metrics"]
    return found


def test_killed_reproduce_reruns_to_the_uninterrupted_table(tiny_model_dir, tmp_path, fault_table):
    import torch

    reference = scratch_checkout(tmp_path / "reference", tiny_model_dir)
    done = run_killed_when(reproduce_argv(reference), never, cwd=reference, timeout=1200)
    assert done.returncode == 0, done.output[-3000:]
    killed = scratch_checkout(tmp_path / "killed", tiny_model_dir)
    runs = killed / "runs" / "small" / "smollm2-135m"
    points = {
        "inside a training": lambda: any(runs.glob("*/checkpoint-2")),
        "inside an evaluation": lambda: any((killed / "results" / "runs").rglob("verifiable/answers.jsonl")),
    }
    for label, point in points.items():
        outcome = run_killed_when(reproduce_argv(killed), point, cwd=killed, timeout=1200)
        assert outcome.killed, label + ": " + outcome.output[-2000:]
    final = run_killed_when(reproduce_argv(killed), never, cwd=killed, timeout=1200)
    want, got = run_outputs(reference), run_outputs(killed)
    lost = len(set(want) - set(got))
    same = final.returncode == 0 and set(want) == set(got)
    for name, value in want.items():
        if isinstance(value, dict) and name.endswith("model.safetensors"):
            same &= all(torch.equal(t, got[name][k]) for k, t in value.items())
        elif name in got:
            same &= value == got[name]
    table_same = (reference / "results/small/table3.csv").read_text() == (
        killed / "results/small/table3.csv"
    ).read_text()
    for label in points:
        fault_table.add(f"SIGKILL `sapo reproduce` {label}", survived=same and table_same, lost=lost)
    assert final.returncode == 0, final.output[-3000:]
    assert same and table_same and not lost
