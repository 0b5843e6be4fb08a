"""Per-item scores of every benchmark: what error bars and ``sapo compare`` are computed from.

Each benchmark's upstream files already hold a score per item (lm-eval's sample logs,
FastChat's judgment rows, alpaca_eval's annotations); here they become ``(sum, count)`` pairs
(see ``uncertainty.py``) keyed by an item id that names the item's content, so two runs on
different data can never be paired by accident:

    lm-eval      "<lm-eval task>/<doc_id>:<doc_hash[:10]>"
    MT-Bench     "<question_id>:<sha256 of its turns[:10]>"
    AlpacaEval   "<sha256 of the instruction[:10]>"
    verifiable   "<item id>:<sha256 of the prompt[:10]>"

The file, ``OUTPUT/<benchmark>/items.json``::

    {"schema": "sapo-items/1", "benchmark": "mtbench",
     "metrics": {"turn_1": {"81:3fa...": [8.0, 1], ...}, ...},   metric -> item id -> [sum, count]
     "mean_of": {"average": ["arc_challenge", ...]}}             scores that are a plain mean of others

For every metric here, ``ratio(metrics[m])`` equals the benchmark's reported value (tests check it),
except AlpacaEval's ``avg_length``, which alpaca_eval truncates to an integer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sapo.errors import DataError
from sapo.evaluate.uncertainty import Items, bootstrap_interval, mean_of_independent, normal_interval
from sapo.files import atomic_write_json

SCHEMA = "sapo-items/1"


def short_hash(text: str) -> str:
    """The first 10 hex digits of ``text``'s sha256: the content part of an item id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def _pair(value) -> tuple[float, float]:
    """One sample's metric: a list (IFEval's per-instruction booleans) counts each entry; a number counts once."""
    if isinstance(value, list):
        return float(sum(bool(v) for v in value)), float(len(value))
    return float(value), 1.0


# --------------------------------------------------------------------------- per benchmark


def lm_eval_items(benchmark: dict, names: dict[str, str], samples: dict, group_subtasks: dict) -> dict[str, Items]:
    """Our metric name -> items, from lm-eval's logged samples (``simple_evaluate(log_samples=True)``).
    A per-subject task (MMLU) pools its subjects' documents, as its size-weighted group score does."""
    metrics = {}
    for key, spec in benchmark["tasks"].items():
        tasks = group_subtasks.get(names[key], [names[key]]) if spec.get("per_subject") else [names[key]]
        for report_name, lm_eval_key in spec["report"].items():
            metric, metric_filter = lm_eval_key.split(",")
            items = {}
            for task in tasks:
                if task not in samples:
                    raise DataError(f"lm-eval logged no samples for task {task} (benchmark {benchmark['benchmark']})")
                for row in samples[task]:
                    if row["filter"] == metric_filter:
                        items[f"{task}/{row['doc_id']}:{row['doc_hash'][:10]}"] = _pair(row[metric])
            metrics[report_name] = items
    return metrics


def mtbench_items(judgments: list[dict], questions: list[dict]) -> dict[str, Items]:
    """turn_1, turn_2 and average: a question is one item (its two turns move together); unparsed ratings
    (-1) count nowhere, as in FastChat's show_result."""
    ids = {q["question_id"]: f"{q['question_id']}:{short_hash(json.dumps(q['turns']))}" for q in questions}
    metrics = {"turn_1": {}, "turn_2": {}, "average": {}}
    for row in judgments:
        if row["question_id"] not in ids:
            raise DataError(f"MT-Bench judgment for question {row['question_id']}, which is not in the question set")
        item = ids[row["question_id"]]
        pair = (row["score"], 1.0) if row["score"] != -1 else (0.0, 0.0)
        metrics[f"turn_{row['turn']}"][item] = pair
        s, c = metrics["average"].get(item, (0.0, 0.0))
        metrics["average"][item] = (s + pair[0], c + pair[1])
    return metrics


def alpaca_preference(value) -> float | None:
    """An alpaca_eval preference in [1, 2] (2: the model's output, "output_2", preferred), read as its
    ``describe_head2head`` reads it: 0 is a draw (1.5); missing, NaN or out of range is None (dropped)."""
    value = 1.5 if value == 0 else value
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or not 1 <= value <= 2:
        return None
    return float(value)


def alpacaeval_items(annotations: list[dict], outputs: list[dict]) -> dict[str, Items]:
    """win_rate (100 x (preference - 1); a preference of 0 is a draw, 1.5, and a missing one counts nowhere,
    as alpaca_eval's ``describe_head2head``) and avg_length (characters of each output)."""
    win_rate = {}
    for row in annotations:
        preference = alpaca_preference(row.get("preference"))
        win_rate[short_hash(row["instruction"])] = (
            (0.0, 0.0) if preference is None else (100.0 * (preference - 1), 1.0)
        )
    length = {short_hash(row["instruction"]): (float(len(row["output"])), 1.0) for row in outputs}
    return {"win_rate": win_rate, "avg_length": length}


# --------------------------------------------------------------------------- the file


def write_items(folder: Path, benchmark: str, metrics: dict[str, Items], mean_of: dict | None = None) -> dict:
    """Write ``folder/items.json`` (``folder`` = OUTPUT/<benchmark>); return the results.json reference to it:
    its path relative to OUTPUT, so a results folder can be moved or read from anywhere, and its sha256."""
    body = {"schema": SCHEMA, "benchmark": benchmark, "mean_of": mean_of or {},
            "metrics": {name: {i: list(pair) for i, pair in items.items()} for name, items in metrics.items()}}  # fmt: skip
    path = atomic_write_json(Path(folder) / "items.json", body, indent=None)
    return {"file": f"{Path(folder).name}/items.json", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def read_items(reference: dict, where: str, results_dir: Path) -> dict:
    """The items file a results.json entry names (relative to ``results_dir``, the folder of that
    results.json), checked against its recorded hash."""
    path = Path(results_dir) / reference["file"]
    if not path.is_file():
        raise DataError(f"{where}: per-item scores {path} are missing (moved or deleted)")
    if hashlib.sha256(path.read_bytes()).hexdigest() != reference["sha256"]:
        raise DataError(f"{where}: {path} changed after results.json was written (sha256 differs)")
    body = json.loads(path.read_text(encoding="utf-8"))
    if body.get("schema") != SCHEMA:
        raise DataError(f"{path}: schema {body.get('schema')!r}, expected {SCHEMA!r}")
    body["metrics"] = {name: {i: tuple(p) for i, p in items.items()} for name, items in body["metrics"].items()}
    return body


def item_parts(body: dict, metric: str) -> list[Items] | None:
    """A metric as the list of ratios it is the plain mean of (one part unless it is a ``mean_of``)."""
    if metric in body["mean_of"]:
        return [body["metrics"][m] for m in body["mean_of"][metric]]
    return [body["metrics"][metric]] if metric in body["metrics"] else None


def bootstrap_all(metrics: dict[str, Items], unit: str) -> dict[str, dict]:
    """Every metric's bootstrap interval, as results.json's ``uncertainty`` block holds them."""
    return {name: bootstrap_interval(items, unit=unit).as_dict() for name, items in metrics.items()}


def lm_eval_intervals(benchmark: dict, names: dict[str, str], scores: dict, metrics: dict[str, Items]) -> dict:
    """Per the benchmark YAML's ``uncertainty``: ``lm-eval`` takes lm-eval's own standard error (normal 95%;
    a bootstrap over documents where lm-eval gives "N/A"), ``bootstrap`` resamples documents and keeps
    lm-eval's standard error beside it as ``lm_eval_stderr``."""
    out, given = {}, {}
    for key, spec in benchmark["tasks"].items():
        for report_name, lm_eval_key in spec["report"].items():
            metric, metric_filter = lm_eval_key.split(",")
            stderr = scores[names[key]].get(f"{metric}_stderr,{metric_filter}")
            given[report_name] = float(stderr) if isinstance(stderr, int | float) else None
            value = float(scores[names[key]][lm_eval_key])
            if benchmark["uncertainty"] == "lm-eval" and given[report_name] is not None:
                out[report_name] = normal_interval(value, given[report_name], len(metrics[report_name]),
                                                   "lm-eval's stderr")  # fmt: skip
            else:  # "N/A": lm-eval has no closed form for this aggregation (IFEval's instruction level)
                out[report_name] = bootstrap_interval(metrics[report_name], unit="documents")
    if benchmark["average"]:
        out["average"] = mean_of_independent([out[k] for k in benchmark["average"]])
    body = {name: interval.as_dict() for name, interval in out.items()}
    if benchmark["uncertainty"] == "bootstrap":
        for name, stderr in given.items():
            body[name]["lm_eval_stderr"] = stderr
    return body
