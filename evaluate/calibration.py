"""Judge calibration: before a judged score is trusted, the judge must tell a right answer from a wrong one.

The set (``fixtures/calibration/embedded-pairs-v1.jsonl``, written by
``sapo.train.embedded_data.write_calibration_pairs``): 40 instructions of the embedded families
that appear in no training split, each with its correct answer (``better``) and a fluent answer
of the same family to another question (``worse``: "Canberra" for "the largest planet"). Any
judge worth its column prefers the right one.

Each pair is judged in the benchmark's own form, through the same code and prompts:

- MT-Bench: FastChat's ``single-v1`` grading of (instruction, better) and (instruction, worse).
  A pair scores 1 when better is rated higher, 0 when lower, 0.5 for a tie or an unparsed
  rating (no information either way).
- AlpacaEval: alpaca_eval's annotator compares better (as the model's output) with worse (as
  the reference); alpaca_eval itself randomizes which is shown first. A pair scores
  ``preference - 1``: 1 when better is preferred.

Agreement is the mean score, with a bootstrap 95% interval over pairs. The verdict is an exact
one-sided sign test over the pairs the judge decided (score above or below 0.5): the judge
passes when chance is rejected at 5%. A judge that rates everything 5 decides nothing and
fails; one that answers at random fails 95% of the time; its benchmark column is then printed
"judge failed calibration (x% on n)". The
judgments go through the judge's cache like any other, so they are asked once per cache file.
``sapo eval`` runs it beside each judged benchmark (``cli.py``) and stores it as the entry's ``calibration``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sapo.errors import DataError
from sapo.evaluate.items import alpaca_preference
from sapo.evaluate.uncertainty import bootstrap_interval

CALIBRATION_DIR = Path(__file__).resolve().parent / "fixtures" / "calibration"
CALIBRATION_SET = "embedded-pairs-v1"
CHANCE = 0.5
ALPHA = 0.05
DEFAULT_PAIRS = 40
MIN_PAIRS = 10  # fewer cannot show much: 5 of 5 right is already p = 0.03
FIELDS = ("id", "source", "instruction", "better", "worse")


def load_pairs(n: int, path: Path | None = None) -> list[dict]:
    """The first ``n`` calibration pairs (families in turn, so any prefix is balanced)."""
    path = path or CALIBRATION_DIR / f"{CALIBRATION_SET}.jsonl"
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        missing = [f for f in FIELDS if not isinstance(row.get(f), str) or not row[f]]
        if missing:
            raise DataError(f"{path}: row {number}: missing or empty field(s) {', '.join(missing)}")
        if any(row[f] == other[f] for other in rows for f in ("id", "instruction")):
            raise DataError(f"{path}: row {number}: id or instruction repeats an earlier row")
        rows.append(row)
    if n > len(rows):
        raise DataError(f"{path}: {n} calibration pairs asked, the set has {len(rows)}")
    return rows[:n]


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact binomial p of ``wins`` or more right choices out of ``wins + losses`` decided pairs,
    if the judge were a coin."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0


def summarize_agreement(scores: dict[str, float], form: str, **counts) -> dict:
    """The ``calibration`` entry of a judged benchmark: agreement (ties count 0.5) with a bootstrap interval,
    and the verdict of an exact sign test on the pairs the judge decided (score above or below 0.5)."""
    interval = bootstrap_interval({k: (v, 1.0) for k, v in scores.items()}, unit="pairs")
    wins = sum(v > CHANCE for v in scores.values())
    losses = sum(v < CHANCE for v in scores.values())
    p_value = sign_test_p(wins, losses)
    return {"set": CALIBRATION_SET, "form": form, "n": len(scores), "agreement": interval.value,
            "ci95": list(interval.ci95) if interval.ci95 else None, "right": wins, "wrong": losses,
            "p_value": p_value, "passed": p_value < ALPHA,
            "rule": f"passes when an exact one-sided sign test over the decided pairs rejects chance at {ALPHA}",
            **counts, "per_pair": scores}  # fmt: skip


def failed_text(calibration: dict) -> str:
    """How a table shows a column whose judge failed: "judge failed calibration (52% on 40)"."""
    return f"judge failed calibration ({100 * (calibration['agreement'] or 0):.0f}% on {calibration['n']})"


def calibrate_mtbench(judge, data, n: int = DEFAULT_PAIRS, *, parallel: int = 4) -> dict | None:
    """Grade each pair's two answers with FastChat's single-v1 prompt (``mtbench.judge_answers``); None for n=0."""
    if not n:
        return None
    from sapo.evaluate.mtbench import MTBenchData, judge_answers

    pairs = load_pairs(n)
    questions = [{"question_id": p["id"], "category": "writing", "turns": [p["instruction"], ""]} for p in pairs]
    answers = [{"question_id": p["id"], "model_id": f"calibration-{side}", "choices": [{"index": 0,
                "turns": [p[side], ""]}]} for p in pairs for side in ("better", "worse")]  # fmt: skip
    calibration_data = MTBenchData(questions, {}, data.judge_prompts, CALIBRATION_SET, {"kind": "calibration"})
    rows = judge_answers(judge, calibration_data, answers, parallel=parallel, turns=(1,), desc="judge calibration")
    rating = {(r["question_id"], r["model"]): r["score"] for r in rows}
    scores, ties, unparsed = {}, 0, 0
    for p in pairs:
        better, worse = rating[(p["id"], "calibration-better")], rating[(p["id"], "calibration-worse")]
        if -1 in (better, worse):
            unparsed += 1
            scores[p["id"]] = 0.5
        else:
            ties += better == worse
            scores[p["id"]] = 1.0 if better > worse else 0.0 if better < worse else 0.5
    return summarize_agreement(scores, "FastChat single-v1 grading of both answers", ties=ties, unparsed=unparsed)


def calibrate_alpacaeval(judge, folder: Path, n: int = DEFAULT_PAIRS, *,
                         annotator: str = "weighted_alpaca_eval_gpt4_turbo", parallel: int = 4) -> dict | None:  # fmt: skip
    """Compare each pair with alpaca_eval's annotator (better as the model's output, worse as the reference),
    its config written into ``folder`` as ``run_alpacaeval`` writes it. None for n=0."""
    if not n:
        return None
    import pandas as pd
    from alpaca_eval.main import evaluate
    from alpaca_eval.metrics import get_winrate  # the plain win rate: LC would fetch df_gamed.csv from the hub

    from sapo.evaluate.alpacaeval import judge_completions, write_annotator_config

    annotator_config = write_annotator_config(annotator, judge, Path(folder))

    pairs = load_pairs(n)
    better = [{"instruction": p["instruction"], "output": p["better"], "generator": "calibration-better",
               "dataset": p["source"]} for p in pairs]  # fmt: skip
    worse = [
        {**row, "output": p["worse"], "generator": "calibration-worse"} for row, p in zip(better, pairs, strict=True)
    ]
    out = Path(folder) / "calibration"
    evaluate(model_outputs=pd.DataFrame(better), reference_outputs=pd.DataFrame(worse),
             annotators_config=str(annotator_config), name="calibration-better", output_path=out,
             precomputed_leaderboard=None, is_cache_leaderboard=False, is_return_instead_of_print=True,
             caching_path=None, fn_metric=get_winrate, sort_by="win_rate",
             fn_completions=judge_completions(judge, parallel))  # fmt: skip
    annotations = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    by_instruction = {a["instruction"]: a.get("preference") for a in annotations}
    scores, unparsed = {}, 0
    for p in pairs:
        preference = alpaca_preference(by_instruction.get(p["instruction"]))
        if preference is None:  # no "m"/"M" in the judge's top logprobs, or a row alpaca_eval dropped
            unparsed += 1
            scores[p["id"]] = 0.5
        else:
            scores[p["id"]] = preference - 1.0
    return summarize_agreement(scores, "alpaca_eval pairwise annotation, order randomized by alpaca_eval",
                               unparsed=unparsed)  # fmt: skip
