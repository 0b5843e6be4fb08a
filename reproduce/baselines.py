"""Each method against its baseline rows, with ``sapo compare``'s paired test: the marks in a table.

A spec's ``baselines`` maps a row to the rows it is tested against (Table 2: every method against
SFT, SAPO-DPO also against DPO, SAPO-ORPO against ORPO; Table 3: each ablation against full SAPO).
For every column with a direction (``higher_is_better``), the two runs' results are compared on
their shared items (``sapo.evaluate.compare``: same refusals, same paired permutation test), and a
significant difference marks the cell ``▲SFT`` (above SFT) or ``▼DPO`` (below DPO), when it survives
Holm's correction over all the table's tests (family-wise 5%) and is large enough to show at the
column's printed precision. No mark: no
difference detectable after the correction, or not comparable (the reason is listed under the table, except a judge
that failed calibration: its cells already say so).
"""

from __future__ import annotations

from pathlib import Path

from sapo.errors import SapoError
from sapo.evaluate.compare import BenchmarkComparison, compare_benchmark
from sapo.evaluate.uncertainty import holm_rejections
from sapo.reproduce.measured import measured_value, suite_and_metric
from sapo.reproduce.table_specs import MODEL_LABELS

UP, DOWN = "▲", "▼"
FAILED_JUDGE = "the judge failed calibration"  # compare.refusal's words; such cells print the failure instead


def baseline_marks(table_spec, scale: str, measured: dict, folders: dict) -> tuple[dict, list[str], int]:
    """``({(model, row, column): [mark, ...]}, [lines naming what could not be compared], tests run)``.

    ``measured``: "<model>/<row>" -> results body; ``folders``: the same keys -> the folder of that
    results.json (None for a results dict with no folder: its items cannot be read)."""
    labels = {row.key: row.label for row in table_spec.rows}
    several = len(table_spec.models_at(scale)) > 1
    marks, unavailable, done, tests = {}, {}, {}, []

    def skip(reason: str, pair: str) -> None:
        if not reason.startswith(FAILED_JUDGE):  # the cells themselves say so already
            unavailable.setdefault(reason, []).append(pair)

    for model in table_spec.models_at(scale):
        for row, baselines in table_spec.baselines.items():
            for base in [baselines] if isinstance(baselines, str) else baselines:
                a, b = f"{model}/{row}", f"{model}/{base}"
                name = (f"{MODEL_LABELS[model]} " if several else "") + f"{labels[row]} vs {labels[base]}"
                if a not in measured or b not in measured:
                    continue  # a missing run is listed under the table already
                if folders.get(a) is None or folders.get(b) is None:
                    skip("no results folder, so no per-item scores", name)
                    continue
                for column in table_spec.columns:
                    if column.higher_is_better is None:
                        continue
                    shown_a, shown_b = measured_value(measured[a], column)[1], measured_value(measured[b], column)[1]
                    if shown_a != shown_b:
                        skip("the two runs show different metrics", f"{name} ({column.label})")
                        continue
                    path = (shown_a or column).path
                    suite, metric = suite_and_metric(path)
                    entry_a, entry_b = measured[a]["benchmarks"].get(suite), measured[b]["benchmarks"].get(suite)
                    if not entry_a or not entry_b or "skipped" in entry_a or "skipped" in entry_b:
                        continue
                    if (a, b, suite) not in done:  # one comparison per suite and pair, for all its columns
                        try:
                            done[(a, b, suite)] = compare_benchmark(
                                suite, (entry_a, measured[a], Path(folders[a])),
                                (entry_b, measured[b], Path(folders[b])), shared_only=False)  # fmt: skip
                        except SapoError as err:  # an items file moved or changed: say so, render the rest
                            done[(a, b, suite)] = BenchmarkComparison(suite, refused=str(err))
                    result = done[(a, b, suite)]
                    if result.refused:
                        skip(result.refused, f"{name} ({suite})")
                        continue
                    diff = result.metrics.get(metric, {})
                    if "p_value" not in diff:
                        skip("not a mean over items, so no paired test", f"{name} ({column.label})")
                        continue
                    up = ((diff.get("difference") or 0) > 0) == column.higher_is_better
                    shown = round(abs(diff.get("difference") or 0) * column.scale, column.decimals) > 0
                    tests.append(
                        ((model, row, column.key), (UP if up else DOWN) + labels[base], diff["p_value"], shown)
                    )
    # One family per table: a mark survives Holm's correction over every test the table ran (a real shift too small
    # to print counts as a test but is not marked).
    for (key, mark, _, shown), rejected in zip(tests, holm_rejections([t[2] for t in tests]), strict=True):
        if rejected and shown:
            marks.setdefault(key, []).append(mark)
    return marks, [f"{', '.join(dict.fromkeys(pairs))}: {reason}" for reason, pairs in unavailable.items()], len(tests)
