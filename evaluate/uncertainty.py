"""Error bars and paired comparisons, from per-item scores.

Every score ``sapo eval`` reports is a ratio of sums over items: item ``i`` contributes
``(s_i, c_i)`` and the score is ``sum(s) / sum(c)``. An IFEval prompt contributes (1, 1) or (0, 1)
to prompt-level accuracy and (instructions followed, instructions) to instruction-level
accuracy; an MT-Bench question contributes (sum of its parsed ratings, number parsed), so an
unparsed rating counts nowhere, as in FastChat; an AlpacaEval instruction contributes
(100 x (preference - 1), 1). One estimator therefore serves every benchmark:

- ``bootstrap_interval``: resample items with replacement, recompute the ratio; the standard
  error is the standard deviation of the replicates and the 95% interval their 2.5 and 97.5
  percentiles (Efron's percentile bootstrap). A question's two MT-Bench turns, an IFEval
  prompt's instructions, move together: the item is the unit that is resampled.
- ``normal_interval``: value +/- 1.96 x a standard error someone else computed (lm-eval's
  ``*_stderr``, alpaca_eval's ``lc_standard_error``), named as such.
- ``mean_of_independent``: a plain mean of independent scores (the Open LLM average of six
  tasks): the standard errors add in quadrature.
- ``paired_bootstrap``: two runs scored on the same items; items resampled jointly, so what
  both runs find hard cancels. Two-sided p: twice the smaller share of replicate differences
  on either side of zero, plus one (so never 0): p < 0.05 about when the 95% interval
  excludes 0.

Resampling is seeded (``seed=0``): the same items always give the same interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000  # percentile intervals settle to ~0.1 standard error by ~1000 resamples
Z95 = 1.959963984540054  # the normal 97.5% quantile
_CHUNK = 250  # resamples drawn at once: bounds memory at _CHUNK x items indices

Items = dict[str, tuple[float, float]]  # item id -> (sum, count): the score is sum(sums) / sum(counts)


@dataclass(frozen=True)
class Interval:
    """A score with its uncertainty, as results.json stores it beside the plain value."""

    value: float | None
    stderr: float | None
    ci95: tuple[float, float] | None
    n: int  # items (or, for a mean of scores, the items of all of them)
    method: str

    def as_dict(self) -> dict:
        body = asdict(self)
        body["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return body

    @property
    def half_width(self) -> float | None:
        return None if self.ci95 is None else (self.ci95[1] - self.ci95[0]) / 2


def ratio(items: Items) -> float | None:
    """The score itself: sum of sums over sum of counts (None when nothing counted)."""
    counts = sum(c for _, c in items.values())
    return sum(s for s, _ in items.values()) / counts if counts else None


def _arrays(items: Items, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([items[i][0] for i in ids], dtype=np.float64),
        np.array([items[i][1] for i in ids], dtype=np.float64),
    )


def _replicates(columns: list[tuple[np.ndarray, np.ndarray]], resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap replicates of each (sums, counts) column, all resampled with the same item indices."""
    n = len(columns[0][0])
    rng = np.random.default_rng(seed)
    out = [[] for _ in columns]
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        for k, (sums, counts) in enumerate(columns):
            total = counts[idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k].append(np.where(total > 0, sums[idx].sum(axis=1) / total, np.nan))
    return [np.concatenate(parts) for parts in out]


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]  # a resample that drew only uncounted items has no score


def bootstrap_interval(items: Items, *, unit: str = "items", resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Percentile bootstrap over ``items`` (module docstring). Fewer than two counted items: no interval."""
    value = ratio(items)
    counted = sum(1 for _, c in items.values() if c > 0)
    method = f"bootstrap over {unit} ({resamples} resamples, percentile 95%)"
    if value is None or counted < 2:
        return Interval(value, None, None, len(items), method + ": too few items")
    (reps,) = _replicates([_arrays(items, list(items))], resamples, seed)
    reps = _finite(reps)
    low, high = np.percentile(reps, [2.5, 97.5])
    return Interval(value, float(reps.std(ddof=1)), (float(low), float(high)), len(items), method)


def normal_interval(value: float | None, stderr: float | None, n: int, method: str) -> Interval:
    """``value +/- 1.96 stderr``, from a standard error computed elsewhere (``method`` says by whom)."""
    if value is None or stderr is None or not math.isfinite(stderr):
        return Interval(value, None, None, n, method + ": no standard error given")
    return Interval(value, stderr, (value - Z95 * stderr, value + Z95 * stderr), n, method + ", normal 95%")


def mean_of_independent(parts: list[Interval]) -> Interval:
    """The plain mean of independent scores; standard errors in quadrature, a normal interval."""
    value = sum(p.value for p in parts) / len(parts) if parts and all(p.value is not None for p in parts) else None
    if value is None or any(p.stderr is None for p in parts):
        return Interval(value, None, None, sum(p.n for p in parts), "mean of scores: a part has no standard error")
    stderr = math.sqrt(sum(p.stderr**2 for p in parts)) / len(parts)
    return normal_interval(value, stderr, sum(p.n for p in parts), f"mean of {len(parts)} independent scores")


@dataclass(frozen=True)
class Difference:
    """Run A minus run B on the items both scored."""

    a: float | None
    b: float | None
    difference: float | None
    ci95: tuple[float, float] | None
    p_value: float | None
    n: int
    method: str

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < 0.05

    def as_dict(self) -> dict:
        body = asdict(self)
        body["ci95"] = list(self.ci95) if self.ci95 is not None else None
        body["significant"] = self.significant
        return body


def paired_bootstrap(a: list[Items], b: list[Items], *, resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """A - B for a score that is the plain mean of one or more ratios (``a[k]`` pairs with ``b[k]``: one part per
    Open LLM task, a single part elsewhere). Each part is resampled over the items both runs have, jointly for
    A and B; parts are resampled independently."""
    method = f"paired bootstrap over shared items ({resamples} resamples, percentile 95%, two-sided p)"
    shared = [sorted(set(x) & set(y)) for x, y in zip(a, b, strict=True)]
    n = sum(len(ids) for ids in shared)
    values_a = [ratio({i: x[i] for i in ids}) for x, ids in zip(a, shared, strict=True)]
    values_b = [ratio({i: y[i] for i in ids}) for y, ids in zip(b, shared, strict=True)]
    if any(v is None for v in values_a + values_b) or any(len(ids) < 2 for ids in shared):
        return Difference(None, None, None, None, None, n, method + ": too few shared items")
    score_a, score_b = float(np.mean(values_a)), float(np.mean(values_b))
    diffs = np.zeros(resamples)
    for k, (x, y, ids) in enumerate(zip(a, b, shared, strict=True)):
        rep_a, rep_b = _replicates([_arrays(x, ids), _arrays(y, ids)], resamples, seed + k)
        diffs += rep_a - rep_b
    diffs = _finite(diffs / len(shared))
    low, high = np.percentile(diffs, [2.5, 97.5])
    # The share of replicates on the far side of zero; a difference no resample crosses gets 1/(R+1), not 0.
    tail = min((diffs <= 0).sum(), (diffs >= 0).sum())
    p_value = min(1.0, float(2 * (tail + 1) / (len(diffs) + 1)))
    return Difference(score_a, score_b, score_a - score_b, (float(low), float(high)), p_value, n, method)
