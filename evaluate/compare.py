"""``sapo compare A B``: is run A better than run B, on the items both scored, or is it noise?

For every benchmark both results files hold, and every metric with per-item scores, the
difference A - B with a paired-bootstrap 95% interval and a two-sided paired permutation p
(``uncertainty.py``).
Pairing matters: on 80 MT-Bench questions the spread between questions dwarfs the spread
between two checkpoints, and only a paired test sees past it.

Two runs are compared only when their numbers mean the same thing. A benchmark is refused,
with the reason, when the data, the items, the judge (or its calibration failed), the
benchmark's settings (answer budget, dtype, template override, annotator), the chat template
(for the benchmarks that render with it) or the versions of the packages that score it differ (an lm-eval upgrade alone moves
GSM8K: SPIN#12). A metric that is not a mean over items (AlpacaEval's LC win rate, a GLM fitted
per model) is shown with each run's own interval and no test.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from sapo.errors import DataError
from sapo.evaluate.items import item_parts, read_items
from sapo.evaluate.results import results_path
from sapo.evaluate.uncertainty import RESAMPLES, paired_difference

# Packages whose version changes a benchmark's number (beside torch and transformers, which change all).
SCORING_PACKAGES = {"openllm": ("lm_eval",), "ifeval": ("lm_eval",), "mtbench": ("fschat",),
                    "alpacaeval": ("alpaca_eval",)}  # fmt: skip
COMMON_PACKAGES = ("torch", "transformers")
JUDGED = ("mtbench", "alpacaeval")  # the benchmarks a judge scores: only for them does the judge matter
TEMPLATED = ("ifeval", "mtbench", "alpacaeval", "verifiable")  # rendered with the chat template (Open LLM v1 is not)
RUN_KEYS = ("dtype", "max_new_tokens", "chat_template")  # run settings that change answers (the seed may differ)
DECODED_HERE = ("mtbench", "alpacaeval", "verifiable")  # answered by our decoding loop: --cpu-fast-decoding applies


@dataclass
class BenchmarkComparison:
    benchmark: str
    refused: str | None = None  # why the two runs cannot be compared on this benchmark
    metrics: dict = field(default_factory=dict)  # metric -> Difference.as_dict() | {"a": .., "b": .., "note": ..}


def load(path: str | Path) -> tuple[dict, Path]:
    """A results.json body, from the file or the folder holding it."""
    path = results_path(path)
    if not path.is_file():
        raise DataError(f"{path}: no results.json here (write one with `sapo eval`)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err})") from err


def _judge(entry: dict, body: dict) -> dict:
    """What identifies the judge (its model and the local judge's settings; not the URL, which moves). A judged
    entry names its own judge; the body's is the judge of the file's latest write, a fallback for old files."""
    judge = dict(entry.get("judge") or body.get("judge") or {})
    judge.pop("base_url", None)
    return judge


def _source(entry: dict) -> tuple | None:
    """What identifies where a benchmark's rows came from: the kind, each pinned split's sha256 and its converted
    file's (packaged), or the file's sha256 (AlpacaEval); None for results written before ``data_source``. Fixture
    and local folders are told apart by the ``data`` label only: their path differs between checkouts."""
    source = entry.get("data_source")
    if source is None:
        return None
    splits = tuple(sorted((s.get("task"), s.get("split"), s.get("sha256"), s.get("file_sha256"))
                          for s in source.get("splits", [])))  # fmt: skip
    return source.get("kind"), splits or source.get("sha256") or "", tuple(sorted(source.get("absent") or {}))


def _comparable_sources(entry_a: dict, entry_b: dict) -> tuple[tuple | None, tuple | None]:
    """Both sources, with the converted files' sha256 left out unless both runs recorded them (results written
    before they were recorded still compare on the pinned members)."""
    a, b = _source(entry_a), _source(entry_b)
    if a is None or b is None or not (isinstance(a[1], tuple) and isinstance(b[1], tuple)):
        return a, b
    if any(split[3] is None for split in (*a[1], *b[1])):
        a, b = ((kind, tuple((*split[:3], None) for split in splits), absent) for kind, splits, absent in (a, b))
    return a, b


def _source_difference(a: tuple, b: tuple) -> str:
    """What differs between two data sources, briefly: the kinds, or the first split whose files differ."""
    if a[0] != b[0] or not (isinstance(a[1], tuple) and isinstance(b[1], tuple)):
        return " vs ".join(
            kind if isinstance(detail, tuple) else f"{kind} {detail}".strip() for kind, detail, _ in (a, b)
        )
    for (task, split, sha, converted), other in zip(a[1], b[1], strict=False):
        if (task, split, sha, converted) != other:
            return (f"{a[0]}: {task} {split} sha256 {str(sha)[:12]}/{str(converted)[:12]} vs {other[0]} {other[1]} "
                    f"{str(other[2])[:12]}/{str(other[3])[:12]} (pinned member/converted file)")  # fmt: skip
    return f"{a[0]}: {len(a[1])} vs {len(b[1])} pinned files, absent {list(a[2])} vs {list(b[2])}"


def _differs(a: dict, b: dict, keys) -> list[str]:
    return [k for k in keys if a.get(k) != b.get(k)]


def refusal(name: str, a: tuple[dict, dict], b: tuple[dict, dict]) -> str | None:
    """Why benchmark ``name`` of run A and run B must not be compared, or None. ``a`` = (entry, body): a
    benchmark's entry records its own run settings and package versions (``sapo eval`` writes them per
    benchmark, so an entry kept from an earlier run keeps its own); older files fall back to the body's."""
    (entry_a, body_a), (entry_b, body_b) = a, b
    if entry_a.get("data") != entry_b.get("data"):
        return f"different data ({entry_a.get('data')!r} vs {entry_b.get('data')!r})"
    source_a, source_b = _comparable_sources(entry_a, entry_b)
    if None not in (source_a, source_b) and source_a != source_b:
        return f"different data sources ({_source_difference(source_a, source_b)})"
    settings_a, settings_b = entry_a.get("settings", {}), entry_b.get("settings", {})
    keys = _differs(settings_a, settings_b, sorted({*settings_a, *settings_b}))
    keys += _differs(entry_a.get("run", {}), entry_b.get("run", {}), RUN_KEYS)
    fast = [bool((entry.get("run") or {}).get("cpu_fast_decoding")) for entry in (entry_a, entry_b)]  # absent: off
    keys += ["cpu_fast_decoding"] if name in DECODED_HERE and fast[0] != fast[1] else []
    keys += _differs(entry_a, entry_b, ("annotator",))
    keys += (
        ["lc variant"] if (entry_a.get("lc") or {}).get("variant") != (entry_b.get("lc") or {}).get("variant") else []
    )
    if keys:
        return f"different benchmark settings ({', '.join(dict.fromkeys(keys))})"
    if name in JUDGED and _judge(entry_a, body_a) != _judge(entry_b, body_b):
        return f"different judges ({_judge(entry_a, body_a).get('name')!r} vs {_judge(entry_b, body_b).get('name')!r})"
    failed = [run for run, entry in (("A", entry_a), ("B", entry_b))
              if (entry.get("calibration") or {}).get("passed") is False]  # fmt: skip
    if failed:
        return f"the judge failed calibration in run {' and '.join(failed)}: its scores are not evidence"
    template_a = entry_a.get("chat_template_sha256", body_a.get("model", {}).get("chat_template_sha256"))
    template_b = entry_b.get("chat_template_sha256", body_b.get("model", {}).get("chat_template_sha256"))
    if name in TEMPLATED and template_a != template_b:
        return "different chat templates (the prompts differ, so the items do)"
    packages_a, packages_b = (
        entry_a.get("packages") or body_a.get("packages", {}),
        entry_b.get("packages") or body_b.get("packages", {}),
    )
    for package in (*COMMON_PACKAGES, *SCORING_PACKAGES.get(name, ())):
        if packages_a.get(package) != packages_b.get(package):
            return f"different {package} versions ({packages_a.get(package)} vs {packages_b.get(package)})"
    if "items" not in entry_a or "items" not in entry_b:
        return "no per-item scores (results written before sapo-items/1: rerun `sapo eval`)"
    return None


def compare_benchmark(
    name: str, a: tuple[dict, dict, Path], b: tuple[dict, dict, Path], *, shared_only: bool
) -> BenchmarkComparison:
    """``a`` = (entry, results body, folder of that results.json)."""
    why = refusal(name, a[:2], b[:2])
    if why:
        return BenchmarkComparison(name, refused=why)
    items_a = read_items(a[0]["items"], f"run A {name}", a[2])
    items_b = read_items(b[0]["items"], f"run B {name}", b[2])
    ids_a = {i for items in items_a["metrics"].values() for i in items}
    ids_b = {i for items in items_b["metrics"].values() for i in items}
    if not ids_a & ids_b:
        return BenchmarkComparison(name, refused="no item in common (different questions or data)")
    if ids_a != ids_b and not shared_only:
        return BenchmarkComparison(name, refused=f"different items ({len(ids_a - ids_b)} only in A, "
                                   f"{len(ids_b - ids_a)} only in B; --shared-items compares the "
                                   f"{len(ids_a & ids_b)} in common)")  # fmt: skip
    result = BenchmarkComparison(name)
    for metric in dict.fromkeys([*a[0].get("uncertainty", {}), *items_a["metrics"], *items_a["mean_of"]]):
        parts_a, parts_b = item_parts(items_a, metric), item_parts(items_b, metric)
        if parts_a is not None and parts_b is not None:
            result.metrics[metric] = paired_difference(parts_a, parts_b).as_dict()
            continue
        interval_a = a[0].get("uncertainty", {}).get(metric)
        interval_b = b[0].get("uncertainty", {}).get(metric)
        if interval_a and interval_b:
            result.metrics[metric] = {"a": interval_a, "b": interval_b,
                                      "note": "not a mean over items: no paired test; each run's own interval"}  # fmt: skip
    return result


def compare_runs(path_a: str | Path, path_b: str | Path, *, shared_only: bool = False) -> dict:
    """The comparison as a dict (what ``--json`` prints)."""
    (body_a, file_a), (body_b, file_b) = load(path_a), load(path_b)
    benchmarks = {}
    for name, entry_a in body_a.get("benchmarks", {}).items():
        entry_b = body_b.get("benchmarks", {}).get(name)
        if entry_b is None or "skipped" in entry_a or "skipped" in entry_b:
            continue
        comparison = compare_benchmark(name, (entry_a, body_a, file_a.parent), (entry_b, body_b, file_b.parent),
                                       shared_only=shared_only)  # fmt: skip
        benchmarks[name] = {"refused": comparison.refused, "metrics": comparison.metrics}
    return {"a": {"results": str(file_a), "model": body_a.get("model", {}).get("name")},
            "b": {"results": str(file_b), "model": body_b.get("model", {}).get("name")},
            "test": f"on the shared items: paired bootstrap 95% interval ({RESAMPLES} resamples), paired permutation "
                    "two-sided p (exact up to 12 items)",
            "benchmarks": benchmarks}  # fmt: skip


def format_comparison(body: dict) -> str:
    lines = [f"A = {body['a']['model']} ({body['a']['results']})", f"B = {body['b']['model']} ({body['b']['results']})",
             f"test: {body['test']}; * = significant at 5%", ""]  # fmt: skip
    if not body["benchmarks"]:
        lines.append("no benchmark in both results files")
    for name, entry in body["benchmarks"].items():
        if entry["refused"]:
            lines.append(f"{name}: not compared: {entry['refused']}")
            continue
        lines.append(f"{name}:")
        for metric, d in entry["metrics"].items():
            if "note" in d:
                lines.append(f"  {metric:<26} A {d['a']['value']:.4g}  B {d['b']['value']:.4g}  ({d['note']})")
            elif d["difference"] is None:
                lines.append(f"  {metric:<26} {d['method']}")
            else:
                low, high = d["ci95"]
                lines.append(f"  {metric:<26} A {d['a']:.4g}  B {d['b']:.4g}  A-B {d['difference']:+.4g} "
                             f"[{low:+.4g}, {high:+.4g}]  p={d['p_value']:.3g}{' *' if d['significant'] else ''}  "
                             f"(n={d['n']})")  # fmt: skip
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> int:
    body = compare_runs(args.a, args.b, shared_only=args.shared_items)
    print(json.dumps(body, indent=1) if args.json else format_comparison(body))
    compared = [e for e in body["benchmarks"].values() if not e["refused"]]
    return 0 if compared else 2


def add_compare_command(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="paired comparison of two `sapo eval` results: difference, 95%% interval, significance",
        description="Compare run A with run B on every benchmark both scored: per metric, A - B with a paired "
        "bootstrap 95% interval and a two-sided paired permutation p over the items both scored. A benchmark is refused, with the "
        "reason, when the runs differ in data, items, judge, benchmark settings, chat template or scoring "
        "package versions. Exit 2 when nothing could be compared.",
    )
    p.add_argument("a", help="run A: a results.json or the folder holding it")
    p.add_argument("b", help="run B: a results.json or the folder holding it")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--shared-items", action="store_true",
                   help="compare on the items both runs scored when their item sets differ (default: refuse)")  # fmt: skip
    p.set_defaults(func=_compare)
