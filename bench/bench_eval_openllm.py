"""``run_openllm`` vs lm-eval's own entry point on the same tasks (goal <= 1.05x).

What ``run_openllm`` adds around ``lm_eval.simple_evaluate``: writing the fixture files and task
YAMLs, checking the task index, and building its result dict. The upstream side is what the
``lm_eval`` CLI does with the YAMLs that run wrote: ``simple_evaluate`` with identical arguments,
then lm-eval's own results and sample files. Both load the model themselves (``model="hf"``).
They take turns in one process on the offline fixtures, best of ``rounds`` (the first turn
also pays for imports and the ``datasets`` cache), and must give identical numbers.

Usage: python bench/bench_eval_openllm.py [--model embedded|tiny|PATH] [--limit N] [--rounds N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lm_eval
import torch
from lm_eval.loggers import EvaluationTracker
from lm_eval.tasks import TaskManager

from sapo.evaluate.lm_eval_suite import run_openllm, seed_args
from sapo.models import resolve_model_path


def run_upstream(model_path: str, tasks_dir: str, group: str, output: str, limit: int, seed: int) -> dict:
    """lm-eval's entry point and output files, as ``lm_eval --include_path ... --log_samples`` runs them."""
    tracker = EvaluationTracker(output_path=output)
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model_path, "dtype": "float32"},
        tasks=[group],
        task_manager=TaskManager(include_path=tasks_dir, include_defaults=False),
        limit=limit,
        batch_size=1,
        device="cpu",
        log_samples=True,
        evaluation_tracker=tracker,
        apply_chat_template=False,
        fewshot_as_multiturn=False,
        **seed_args(seed),
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    return results


def bench(model: str, limit: int, rounds: int, seed: int = 1234) -> dict[str, float]:
    path = resolve_model_path(model)
    out = Path(tempfile.mkdtemp(prefix="bench-openllm-"))
    results: dict[str, dict] = {}

    def ours() -> None:
        results["sapo"] = run_openllm(path, output_dir=out / "sapo", limit=limit, data="fixtures", seed=seed)

    def upstream() -> None:  # on the task YAMLs our first turn wrote
        sapo = results["sapo"]
        results["lm_eval"] = run_upstream(
            path, sapo["tasks_dir"], sapo["lm_eval_group"], str(out / "lm_eval"), limit, seed
        )

    times: dict[str, list[float]] = {"sapo": [], "lm_eval": []}
    sides = [("sapo", ours), ("lm_eval", upstream)]
    for turn in range(rounds):
        for name, run in sides if turn % 2 == 0 else sides[::-1]:  # alternate who goes first
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    for key, setting in results["sapo"]["settings"].items():  # same numbers, or the timing compares different work
        lm_eval_key = f"{setting['metric']},{setting['filter']}"
        assert results["sapo"]["metrics"][key] == results["lm_eval"]["results"][setting["lm_eval_task"]][lm_eval_key]
    print(f"per-turn seconds: sapo {[round(t, 2) for t in times['sapo']]}, "
          f"lm_eval {[round(t, 2) for t in times['lm_eval']]}")  # fmt: skip
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, tiny or a checkpoint folder")
    parser.add_argument("--limit", type=int, default=2, help="documents per task")
    parser.add_argument("--rounds", type=int, default=4, help="turns per side; the best is kept")
    args = parser.parse_args()
    best = bench(args.model, args.limit, args.rounds)
    ratio = best["sapo"] / best["lm_eval"]
    device = "cuda" if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nmodel: {args.model}; device: {device}; limit: {args.limit} per task; best of {args.rounds}")
    print(f"{'measure':<56}{'ratio':>8}{'goal':>10}   detail")
    detail = f"{best['sapo']:.2f} s vs {best['lm_eval']:.2f} s"
    print(f"{'run_openllm / lm_eval.simple_evaluate (fixtures)':<56}{ratio:>7.3f}x{'<= 1.05':>10}   {detail}")


if __name__ == "__main__":
    main()
