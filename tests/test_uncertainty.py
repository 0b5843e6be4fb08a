"""Error bars and paired comparisons against closed forms (evaluate/uncertainty.py, evaluate/items.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sapo.evaluate.items import alpacaeval_items, item_parts, mtbench_items, read_items, write_items
from sapo.evaluate.mtbench import summarize
from sapo.evaluate.uncertainty import (
    Z95,
    bootstrap_interval,
    mean_of_independent,
    normal_interval,
    paired_difference,
    ratio,
)


def bernoulli_items(p: float, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {f"q{i}": (float(v), 1.0) for i, v in enumerate(rng.random(n) < p)}


def test_ratio_is_sum_of_sums_over_sum_of_counts():
    # An IFEval-like metric: prompt a followed 2 of 3 instructions, prompt b 1 of 1, c was not counted.
    assert ratio({"a": (2, 3), "b": (1, 1), "c": (0, 0)}) == pytest.approx(3 / 4)
    assert ratio({"c": (0, 0)}) is None


def test_bootstrap_matches_the_binomial_standard_error():
    items = bernoulli_items(0.3, 2000)
    p = ratio(items)
    interval = bootstrap_interval(items)
    closed = math.sqrt(p * (1 - p) / len(items))  # the standard error of a mean of n Bernoulli draws
    assert interval.value == p
    assert interval.stderr == pytest.approx(closed, rel=0.08)
    low, high = interval.ci95
    assert low < p < high
    assert (high - low) / 2 == pytest.approx(Z95 * closed, rel=0.1)  # near-normal at this n
    assert interval.n == 2000 and "bootstrap" in interval.method


def test_bootstrap_is_seeded_and_resamples_whole_items():
    items = bernoulli_items(0.5, 200)
    assert bootstrap_interval(items) == bootstrap_interval(items)
    # Item 'x' holds ten instructions: resampling moves them together, so the spread is wider than if the
    # same 12 outcomes were 12 separate items.
    clustered = {"x": (10.0, 10.0), "y": (0.0, 1.0), "z": (1.0, 1.0)}
    flat = {f"i{k}": (1.0, 1.0) for k in range(11)} | {"y": (0.0, 1.0)}
    assert ratio(clustered) == ratio(flat)
    assert bootstrap_interval(clustered).stderr > 2 * bootstrap_interval(flat).stderr


def test_bootstrap_with_too_few_items_gives_no_interval():
    interval = bootstrap_interval({"a": (1.0, 1.0), "b": (0.0, 0.0)})
    assert interval.value == 1.0 and interval.ci95 is None and interval.stderr is None
    assert "too few" in interval.method


def test_normal_interval_and_mean_of_independent_scores():
    interval = normal_interval(0.2, 0.1333, 10, "lm-eval's stderr")
    assert interval.ci95 == pytest.approx((0.2 - Z95 * 0.1333, 0.2 + Z95 * 0.1333))
    assert interval.half_width == pytest.approx(Z95 * 0.1333)
    assert normal_interval(0.2, None, 10, "x").ci95 is None
    mean = mean_of_independent([normal_interval(0.5, 0.3, 10, "a"), normal_interval(0.7, 0.4, 20, "b")])
    assert mean.value == pytest.approx(0.6)
    assert mean.stderr == pytest.approx(math.sqrt(0.3**2 + 0.4**2) / 2)  # = 0.25
    assert mean.n == 30


def test_paired_difference_finds_a_planted_shift_and_not_a_null():
    rng = np.random.default_rng(1)
    hardness = rng.random(60) * 10  # items differ far more from each other than the two runs do
    b = {f"q{i}": (float(h), 1.0) for i, h in enumerate(hardness)}
    a = {k: (s + 0.5, 1.0) for k, (s, _) in b.items()}
    shifted = paired_difference([a], [b])
    assert shifted.difference == pytest.approx(0.5)
    assert shifted.ci95 == pytest.approx((0.5, 0.5)) and shifted.significant
    # Unpaired, the two runs' intervals overlap: pairing is what finds the shift.
    low_a, _ = bootstrap_interval(a).ci95
    _, high_b = bootstrap_interval(b).ci95
    assert low_a < high_b

    same = paired_difference([b], [dict(b)])
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant


def test_paired_interval_matches_the_paired_t_interval_on_a_noisy_shift():
    rng = np.random.default_rng(2)
    hardness = rng.normal(5, 3, 400)
    b = {f"q{i}": (float(h), 1.0) for i, h in enumerate(hardness)}
    a = {k: (s + 0.3 + float(rng.normal(0, 1)), 1.0) for k, (s, _) in b.items()}
    diffs = np.array([a[k][0] - b[k][0] for k in b])
    half_t = 1.966 * diffs.std(ddof=1) / math.sqrt(len(diffs))  # t quantile, 399 degrees of freedom
    found = paired_difference([a], [b])
    assert found.difference == pytest.approx(diffs.mean())
    assert (found.ci95[1] - found.ci95[0]) / 2 == pytest.approx(half_t, rel=0.1)
    assert found.significant


def test_a_null_is_rejected_about_five_percent_of_the_time():
    """200 pairs of runs with no true difference (independent coin flips on 60 items): the paired test's
    false-positive rate is near its 5% level."""
    rng = np.random.default_rng(3)
    rejected = 0
    for _ in range(200):
        a = {f"q{i}": (float(v), 1.0) for i, v in enumerate(rng.random(60) < 0.5)}
        b = {f"q{i}": (float(v), 1.0) for i, v in enumerate(rng.random(60) < 0.5)}
        rejected += paired_difference([a], [b], resamples=500).significant
    assert 2 <= rejected <= 22  # 10 expected; beyond 3 binomial standard deviations either way


def test_paired_difference_uses_shared_items_and_means_of_parts():
    a = [{"x": (1.0, 1.0), "y": (1.0, 1.0), "only_a": (0.0, 1.0)}, {"u": (0.5, 1.0), "v": (0.5, 1.0)}]
    b = [{"x": (0.0, 1.0), "y": (0.0, 1.0), "only_b": (1.0, 1.0)}, {"u": (0.5, 1.0), "v": (0.5, 1.0)}]
    diff = paired_difference(a, b)
    assert diff.n == 4
    assert diff.a == pytest.approx((1.0 + 0.5) / 2) and diff.b == pytest.approx((0.0 + 0.5) / 2)
    assert diff.difference == pytest.approx(0.5)
    too_few = paired_difference([{"x": (1.0, 1.0)}], [{"x": (0.0, 1.0)}])
    assert too_few.difference is None and not too_few.significant


def test_mtbench_items_reproduce_fastchat_means():
    questions = [{"question_id": 1, "turns": ["a", "b"]}, {"question_id": 2, "turns": ["c", "d"]}]
    judgments = [{"question_id": 1, "turn": 1, "score": 8.0}, {"question_id": 1, "turn": 2, "score": 6.0},
                 {"question_id": 2, "turn": 1, "score": -1.0}, {"question_id": 2, "turn": 2, "score": 3.0}]  # fmt: skip
    items = mtbench_items(judgments, questions)
    summary = summarize(judgments)
    for metric in ("turn_1", "turn_2", "average"):
        assert ratio(items[metric]) == pytest.approx(summary[metric])
    assert ratio(items["average"]) == pytest.approx((8 + 6 + 3) / 3)  # the unparsed rating counts nowhere
    assert len(items["average"]) == 2  # one item per question: its turns are resampled together


def test_alpacaeval_items_follow_describe_head2head():
    from alpaca_eval.metrics.helpers import AbsoluteScoringRule

    preferences = [2.0, 1.0, 0, 1.25, None]
    annotations = [{"instruction": f"i{k}", "preference": p} for k, p in enumerate(preferences)]
    outputs = [{"instruction": f"i{k}", "output": "x" * (k + 1)} for k in range(5)]
    items = alpacaeval_items(annotations, outputs)
    upstream = AbsoluteScoringRule().describe_head2head([p for p in preferences if p is not None])
    assert ratio(items["win_rate"]) == pytest.approx(upstream["win_rate"])  # (100 + 0 + 50 + 25) / 4
    assert ratio(items["avg_length"]) == pytest.approx(3.0)


def test_items_file_round_trip_and_tamper_check(tmp_path):
    metrics = {"arc": {"t/0:aa": (1.0, 1.0), "t/1:bb": (0.0, 1.0)}, "gsm8k": {"g/0:cc": (1.0, 1.0)}}
    reference = write_items(tmp_path, "openllm", metrics, {"average": ["arc", "gsm8k"]})
    body = read_items(reference, "run A", tmp_path.parent)
    assert body["metrics"] == metrics
    assert item_parts(body, "average") == [metrics["arc"], metrics["gsm8k"]]
    assert item_parts(body, "arc") == [metrics["arc"]] and item_parts(body, "missing") is None
    (tmp_path / "items.json").write_text((tmp_path / "items.json").read_text().replace("1.0", "0.0", 1))
    with pytest.raises(Exception, match="changed after results.json was written"):
        read_items(reference, "run A", tmp_path.parent)


def test_permutation_p_is_exact_on_a_handful_of_items():
    """Five items, each slightly lower in A: of the 2^5 ways to swap the runs' scores item by item, 2 are as
    extreme as the observed one (all lower, all higher): p = 2/32, not significant, however consistent."""
    b = {f"q{i}": (0.7 + 0.01 * i, 1.0) for i in range(5)}
    a = {k: (v - 1e-4, 1.0) for k, (v, _) in b.items()}
    diff = paired_difference([a], [b])
    assert diff.p_value == pytest.approx(2 / 32) and not diff.significant
    assert "exact" in diff.method
    # Eight items of +1, two of -1 (counts 1): |sum| >= 6 happens for C(10,0..2) + mirror = 2 x 56 of 1024 swaps.
    a = {f"q{i}": (1.0 if i < 8 else 0.0, 1.0) for i in range(10)}
    b = {f"q{i}": (0.0 if i < 8 else 1.0, 1.0) for i in range(10)}
    assert paired_difference([a], [b]).p_value == pytest.approx(2 * 56 / 1024)


def test_holm_rejects_step_down_by_hand():
    from sapo.evaluate.uncertainty import holm_rejections

    # m = 4: sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2 stops (0.04 is not reached).
    assert holm_rejections([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_rejections([0.03, 0.2]) == [False, False]  # 0.03 alone would pass at 5%, not against 0.025
    assert holm_rejections([0.02, 0.04]) == [True, True]  # 0.02 <= 0.025, then 0.04 <= 0.05
    assert holm_rejections([]) == []
