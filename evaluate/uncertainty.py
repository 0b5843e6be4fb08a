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
- ``paired_difference``: two runs scored on the same items. The 95% interval resamples items
  jointly for both runs (paired bootstrap), so what both runs find hard cancels; the p-value
  comes from a paired permutation test (each item's two scores swapped between the runs at
  random; exact up to 12 items), which holds its level at any number of items.

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
        return half_width(self.ci95)


def half_width(ci95) -> float | None:
    """Half the width of a 95% interval ``[low, high]``: what tables print after ``±``."""
    return None if ci95 is None else (ci95[1] - ci95[0]) / 2


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


def _swapped_differences(parts: list[tuple[tuple, tuple]], resamples: int, seed: int) -> tuple[np.ndarray, bool]:
    """The paired permutation distribution of mean-over-parts (ratio A - ratio B): each item's two scores
    swapped between the runs or not. Every assignment when there are at most 2^12 of them (exact), else
    ``resamples`` random ones, drawn ``_CHUNK`` at a time (memory: _CHUNK x items). Returns (differences, exact)."""
    n = sum(len(sa) for (sa, _), _ in parts)
    exact = n <= 12
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, 2**n if exact else resamples, _CHUNK):
        if exact:
            rows = np.arange(start, min(start + _CHUNK, 2**n))
            flips = ((rows[:, None] >> np.arange(n)) & 1).astype(np.float64)
        else:
            flips = (rng.random((min(_CHUNK, resamples - start), n)) < 0.5).astype(np.float64)
        total, first = np.zeros(len(flips)), 0
        for (sa, ca), (sb, cb) in parts:
            swap = flips[:, first : first + len(sa)]
            first += len(sa)
            num_a = sa.sum() + swap @ (sb - sa)  # a swapped item counts B's score for A, and A's for B
            den_a = ca.sum() + swap @ (cb - ca)
            num_b, den_b = sa.sum() + sb.sum() - num_a, ca.sum() + cb.sum() - den_a
            with np.errstate(invalid="ignore", divide="ignore"):
                total += num_a / den_a - num_b / den_b
        out.append(total / len(parts))
    return np.concatenate(out), exact


def paired_difference(a: list[Items], b: list[Items], *, resamples: int = RESAMPLES, seed: int = 0) -> Difference:
    """A - B for a score that is the plain mean of one or more ratios (``a[k]`` pairs with ``b[k]``: one part per
    Open LLM task, a single part elsewhere), on the items both runs have.

    Interval: paired bootstrap (items resampled jointly for A and B, parts independently), percentile 95%.
    p: paired permutation test (each item's two scores swapped between the runs at random; exact for up
    to 12 items), two-sided. The permutation test holds its level at any n, where a bootstrap p is
    anti-conservative on a handful of items (five items all slightly lower: bootstrap p ~ 0.001, swapping
    gives the exact 2/32). On so few items the bootstrap interval can exclude 0 while p does not: trust p."""
    shared = [sorted(set(x) & set(y)) for x, y in zip(a, b, strict=True)]
    n = sum(len(ids) for ids in shared)
    method = f"paired bootstrap 95% interval ({resamples} resamples); paired permutation p, two-sided"
    values_a = [ratio({i: x[i] for i in ids}) for x, ids in zip(a, shared, strict=True)]
    values_b = [ratio({i: y[i] for i in ids}) for y, ids in zip(b, shared, strict=True)]
    if any(v is None for v in values_a + values_b) or any(len(ids) < 2 for ids in shared):
        return Difference(None, None, None, None, None, n, method + ": too few shared items")
    score_a, score_b = float(np.mean(values_a)), float(np.mean(values_b))
    observed = score_a - score_b
    arrays = [(_arrays(x, ids), _arrays(y, ids)) for x, y, ids in zip(a, b, shared, strict=True)]
    diffs = np.zeros(resamples)
    for k, (pair_a, pair_b) in enumerate(arrays):
        rep_a, rep_b = _replicates([pair_a, pair_b], resamples, seed + k)
        diffs += rep_a - rep_b
    low, high = np.percentile(_finite(diffs / len(shared)), [2.5, 97.5])
    swapped, exact = _swapped_differences(arrays, resamples, seed)
    swapped = _finite(swapped)
    extreme = int((np.abs(swapped) >= abs(observed) - 1e-12).sum())
    # Exact: the share of assignments at least as extreme (the observed one among them). Sampled: +1 on both sides.
    p_value = extreme / len(swapped) if exact else (extreme + 1) / (len(swapped) + 1)
    return Difference(score_a, score_b, observed, (float(low), float(high)), min(1.0, float(p_value)), n,
                      method + (" (exact)" if exact else f" ({resamples} random swaps)"))  # fmt: skip


def holm_rejections(p_values: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test: which of a family of tests to reject with the chance of any false rejection held at
    ``alpha``, whatever their dependence. The k-th smallest p (k = 0, 1, ...) is rejected while it is at most
    alpha / (m - k); the first that is not stops the procedure (Holm 1979)."""
    m = len(p_values)
    rejected = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def judge_spread(by_repeat: dict[str, list[float | None]]) -> dict:
    """The judge's own spread over ``--judge-repeats``: each metric's value per repeat (repeat 0 is the one
    reported), their mean, sample standard deviation and range. Answers and items are the same in every repeat:
    only the judge's replies differ."""
    out = {}
    for name, values in by_repeat.items():
        known = [v for v in values if v is not None]
        sd = float(np.std(known, ddof=1)) if len(known) > 1 else None
        out[name] = {"by_repeat": values, "mean": float(np.mean(known)) if known else None, "sd": sd,
                     "range": [min(known), max(known)] if known else None}  # fmt: skip
    return {
        "repeats": len(next(iter(by_repeat.values()), [])),
        "metrics": out,
        "method": "the same answers judged again; repeat 0 is the reported value",
    }
