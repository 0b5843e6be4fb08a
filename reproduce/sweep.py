"""``sapo reproduce sweep --scale NAME``: the short measured sweep that checks a scale's learning rate.

The sweep is data (``reproduce/sweeps/<name>.yaml``): one recipe, one field to vary and its values. Each
point trains the recipe with that value (``sapo train``, a child process, as a table's row is trained), scores
the first ``limit`` items of the held-out verifiable set, and lands in ``results/<name>/sweep.json`` and
``sweep.md``: the value, accuracy with its 95% interval, the last logged training loss and reward margin,
and the seconds each stage took. A finished point (same recipe fields and value) is reused; the first point
is the recipe's start model, untrained: the floor every rate is read against.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

from sapo.errors import RecipeError
from sapo.files import atomic_write_json, atomic_write_text
from sapo.log import get_logger
from sapo.reproduce.children import RESULTS_ROOT, RUNS_ROOT, Step, drop_checkpoints, override_flags, run_child

logger = get_logger(__name__)
SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
KEYS = {"recipe", "vary", "values", "overrides", "limit", "eval_args"}


def load_sweep(name: str) -> dict:
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        raise RecipeError(f"no sweep {name!r}; known: {', '.join(known)}")
    sweep = yaml.safe_load(path.read_text())
    if set(sweep) != KEYS:
        raise RecipeError(f"{path}: expected keys {sorted(KEYS)}, got {sorted(sweep)}")
    return sweep


def _last_logged(log: Path, key: str) -> float | None:
    """The last value of ``key`` in the trainer's logged dicts (``{'loss': '0.69', ...}`` lines)."""
    value = None
    for line in log.read_text(errors="replace").replace("\r", "\n").splitlines():
        line = line.strip()
        if line.startswith("{'") and f"'{key}'" in line:
            try:
                value = float(yaml.safe_load(line)[key])
            except (ValueError, yaml.YAMLError):
                continue
    return value


# Recipe fields that change what is logged or saved, never the trained weights: editing them keeps a point.
NOT_TRAINING = ("report_to", "logging_steps", "save_steps", "save_strategy", "output_dir")


def point_digest(recipe_text: str, overrides: dict, scoring: tuple = ()) -> str:
    """What decides a point: the recipe's parsed fields (comments aside) with the point's overrides, and how it
    is scored (the sweep's ``limit`` and ``eval_args``)."""
    fields = {k: v for k, v in {**yaml.safe_load(recipe_text), **overrides}.items() if k not in NOT_TRAINING}
    return hashlib.sha256(json.dumps([fields, list(scoring)], sort_keys=True, default=str).encode()).hexdigest()


def _evaluate(model: str, out: Path, sweep: dict, root: Path) -> dict:
    """Score ``model`` on the sweep's items; return its ``benchmarks.verifiable`` entry."""
    run_child(Step(f"evaluate {model}", [sys.executable, "-m", "sapo.cli", "eval", model, "--suite", "verifiable",
                                         "--limit", str(sweep["limit"]), "--output", str(out),
                                         *sweep["eval_args"]]), out / "eval.log", root)  # fmt: skip
    return json.loads((out / "results.json").read_text())["benchmarks"]["verifiable"]


def _finished(stamp: Path, digest: str) -> dict | None:
    if stamp.is_file() and json.loads(stamp.read_text())["recipe_sha256"] == digest:
        return json.loads(stamp.read_text())
    return None


def run_sweep(name: str, root: Path) -> dict:
    """Train and score every point (and the untrained start model, value None); write results/<name>/sweep.*."""
    sweep = load_sweep(name)
    recipe = Path(sweep["recipe"])
    text = (root / recipe).read_text()
    points = []
    for value in [None, *sweep["values"]]:  # None: the recipe's start model as it is, the sweep's floor
        overrides = {**sweep["overrides"], sweep["vary"]: value}
        tag = "start" if value is None else f"{sweep['vary']}={value}"
        run_id = f"sweep/{name}/{recipe.parent.name}+{tag}"
        digest = point_digest(text, overrides, (sweep["limit"], sweep["eval_args"]))
        run_dir, out = root / RUNS_ROOT / run_id, root / RESULTS_ROOT / run_id
        done = _finished(out / "point.json", digest)
        if done:
            logger.info(f"== {tag}: reusing the finished point")
            points.append(done)
            continue
        began = time.perf_counter()
        if value is None:
            model = str(yaml.safe_load(text)["model_name_or_path"])
        else:
            flags = override_flags(overrides)
            run_child(Step(f"train {run_id}", [sys.executable, "-m", "sapo.cli", "train", str(recipe),
                                               "--output_dir", str(RUNS_ROOT / run_id), *flags]),
                      out / "train.log", root)  # fmt: skip
            drop_checkpoints(run_dir)
            model = str(RUNS_ROOT / run_id)
        trained = time.perf_counter()
        entry = _evaluate(model, out, sweep, root)
        log = out / "train.log"
        point = {"value": value, "recipe_sha256": digest, "accuracy": entry["metrics"]["accuracy"],
                 "ci95": entry["uncertainty"]["accuracy"]["ci95"], "items": entry["items_scored"],
                 "train_loss": _last_logged(log, "loss") if log.is_file() else None,
                 "reward_margin": _last_logged(log, "rewards/margins") if log.is_file() else None,
                 "train_s": round(trained - began), "eval_s": round(time.perf_counter() - trained),
                 "results": str(out.relative_to(root) / "results.json")}  # fmt: skip
        atomic_write_json(out / "point.json", point)
        points.append(point)
    body = {"sweep": name, "recipe": str(recipe), "vary": sweep["vary"], "overrides": sweep["overrides"],
            "scored_on": f"the first {sweep['limit']} verifiable items", "eval_args": sweep["eval_args"],
            "points": points}  # fmt: skip
    folder = root / "results" / name
    atomic_write_json(folder / "sweep.json", body)
    atomic_write_text(folder / "sweep.md", sweep_markdown(body))
    print(sweep_markdown(body))
    return body


def sweep_markdown(body: dict) -> str:
    lines = [f"## Sweep `{body['sweep']}`: {body['vary']} of {body['recipe']}", "",
             f"Scored on {body['scored_on']} ({' '.join(body['eval_args'])}); accuracy with its 95% bootstrap "
             "interval over items; loss and reward margin: the last values the trainer logged.", "",
             f"| {body['vary']} | accuracy | 95% interval | last loss | last reward margin | train s | eval s |",
             "| --: | --: | :-- | --: | --: | --: | --: |"]  # fmt: skip
    for p in body["points"]:
        low, high = p["ci95"]

        def num(x, digits=3):
            return "n/a" if x is None else f"{x:.{digits}f}"

        value = "start model (untrained)" if p["value"] is None else f"{p['value']:g}"
        lines.append(f"| {value} | {p['accuracy']:.3f} | [{low:.3f}, {high:.3f}] | {num(p['train_loss'])} | "
                     f"{num(p['reward_margin'])} | {p['train_s']} | {p['eval_s']} |")  # fmt: skip
    return "\n".join(lines) + "\n"
