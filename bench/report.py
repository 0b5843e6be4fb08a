"""Goals, the results file of a machine class, and the README rendered from every machine's file.

``results/bench/<machine>.json`` keeps each entry with the commit and date it was measured at: a run of
some entries (``sapo bench --only``) updates those and keeps the rest. ``results/bench/README.md`` is
rendered from all machine files, then ``results/bench/NOTES.md`` (the profiles behind unmet goals,
written by hand) is appended.
"""

from __future__ import annotations

import json
import math
import operator
import subprocess
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import yaml

from sapo.files import atomic_write_json, atomic_write_text

OPERATORS = {"<=": operator.le, ">=": operator.ge}
UNITS = {"x": "{:.2f}x", "s": "{:.0f} s", "share": "{:.0%}"}


def load_goals() -> dict[str, dict]:
    goals = yaml.safe_load(resources.files("sapo.bench").joinpath("goals.yaml").read_text())
    for key, goal in goals.items():
        if "goal" in goal:
            op, number = goal["goal"].split()
            if op not in OPERATORS:
                raise ValueError(f"bench/goals.yaml: {key}: goal {goal['goal']!r}: expected '<= N' or '>= N'")
            goal["goal_op"], goal["goal_value"] = op, float(number)
        goal.setdefault("unit", "x")
    return goals


def judge(goal: dict, value: float) -> bool | None:
    """Whether ``value`` meets the entry's goal; None for an entry without one."""
    if "goal_op" not in goal:
        return None
    return bool(OPERATORS[goal["goal_op"]](value, goal["goal_value"]))


def commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() + ("+changes" if dirty else "")


def record(found: dict[str, dict], goals: dict[str, dict], model: str, packages: dict,
           measured_commit: str | None) -> dict[str, dict]:  # fmt: skip
    """Each measured entry with its label, goal, verdict, and what and when it was measured (``packages``: the
    versions the run read, ``measure.machine()["packages"]``; ``measured_commit``: ``commit()`` read when the run
    began, before its own files (the growth plot) changed the tree or a commit landed during it)."""
    # Each entry keeps what it was measured with: a later run of other entries may change packages or model.
    stamp = {"commit": measured_commit, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "model": model,
             "packages": packages}  # fmt: skip
    rows = {}
    for key, entry in found.items():
        goal = goals[key]
        if not math.isfinite(entry["value"]) or entry["value"] <= 0:  # a failed measurement, never "met"
            raise ValueError(f"bench: {key}: measured {entry['value']!r}, which no working measurement gives")
        rows[key] = {
            "label": goal["label"],
            "unit": goal["unit"],
            "goal": goal.get("goal"),
            "met": judge(goal, entry["value"]),
            **stamp,
            **entry,
        }  # fmt: skip  (an entry may name its model)
    return rows


def update_results(path: Path, machine: dict, rows: dict[str, dict], extra: dict | None = None) -> dict:
    """Merge ``rows`` into the machine's file (entries measured now replace their old values)."""
    body = json.loads(path.read_text()) if path.is_file() else {"schema": "sapo-bench/1", "entries": {}}
    body["machine"] = machine
    body["entries"] = {**body["entries"], **rows}
    extra = dict(extra or {})
    for key in ("group_seconds", "group_commits"):  # a run of some groups keeps the others', as it keeps entries
        if key in extra:
            extra[key] = {**body.get(key, {}), **extra[key]}
    body.update(extra)
    atomic_write_json(path, body)
    return body


def format_value(entry: dict) -> str:
    return UNITS[entry["unit"]].format(entry["value"])


def format_table(entries: dict[str, dict], markdown: bool = False) -> str:
    rows = [("entry", "value", "goal", "met", "detail")]
    for entry in entries.values():
        met = {True: "yes", False: "NO", None: ""}[entry["met"]]
        rows.append((entry["label"], format_value(entry), entry["goal"] or "", met, entry.get("detail", "")))
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "| :-- | --: | --: | :-: | :-- |"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def render_readme(folder: Path) -> Path:
    """results/bench/README.md from every machine file in ``folder``, then NOTES.md."""
    lines = ["# Benchmarks (`nox -s bench`, `sapo bench`)", "",
             "Rendered from the machine files beside this one by `sapo bench`; do not edit (edit NOTES.md).",
             "Costs are ours / the baseline, speedups (EMA, batching) the baseline / ours; both sides run in one "
             "process taking turns, best turn kept (`bench/measure.py`), except: the machine's limits (matmul, "
             "memory bandwidth) are measured in the same run right after; peak memory runs in child processes, "
             "against a sum of parts; reproduce_table2 is seconds. Goals and why: `bench/goals.yaml`. Each entry "
             "records its commit, date, model and package versions in the JSON.", ""]  # fmt: skip
    order = {key: i for i, key in enumerate(load_goals())}  # goals.yaml's order, whatever order runs added them
    for path in sorted(folder.glob("*.json")):
        body = json.loads(path.read_text())
        body["entries"] = dict(sorted(body["entries"].items(), key=lambda kv: order.get(kv[0], len(order))))
        m = body["machine"]
        hardware = m.get("gpu") and f"{m['gpu_count']} x {m['gpu']}, " or ""
        packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
        lines += [f"## {path.stem}", "",
                  f"{hardware}{m['cpu']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads), "
                  f"{m['memory_gib']} GiB; Python {m['python']}; {packages}.", "",
                  format_table(body["entries"], markdown=True), ""]  # fmt: skip
        stamps = sorted({(e["commit"], e["measured_at"][:10]) for e in body["entries"].values()})
        lines += ["Measured at " + "; ".join(f"{c} ({d})" for c, d in stamps) + ".", ""]
        if body.get("growth_png"):
            lines += [f"How cost grows: ![growth]({body['growth_png']})", ""]
        if body.get("growth_memory_png"):
            lines += [f"How peak memory grows: ![memory]({body['growth_memory_png']})", ""]
    notes = folder / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
