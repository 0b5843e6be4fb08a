"""``run_openllm`` vs lm-eval's own entry point on the same tasks (goal <= 1.05x).

What ``run_openllm`` adds around ``lm_eval.simple_evaluate``: writing the fixture files and task
YAMLs, checking the task index, and building its result dict. The upstream side is what the
``lm_eval`` CLI does with the YAMLs that run wrote: ``simple_evaluate`` with identical arguments,
then lm-eval's own results and sample files. Both load the model themselves (``model="hf"``).
They take turns on the offline fixtures, best turn kept (the warm-up pays for imports and the
``datasets`` cache), and must give identical numbers, or the timing compares different work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sapo.bench.measure import best, take_turns


def run_upstream(model_path: str, tasks_dir: str, group: str, output: str, limit: int, seed: int) -> dict:
    """lm-eval's entry point and output files, as ``lm_eval --include_path ... --log_samples`` runs them."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    from sapo.evaluate.lm_eval_suite import seed_args

    tracker = EvaluationTracker(output_path=output)
    results = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": model_path, "dtype": "float32"},
                                      tasks=[group], task_manager=TaskManager(include_path=tasks_dir, include_defaults=False),
                                      limit=limit, batch_size=1, device="cpu", log_samples=True,
                                      evaluation_tracker=tracker, apply_chat_template=False, fewshot_as_multiturn=False,
                                      **seed_args(seed))  # fmt: skip
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    return results


def openllm_group(ctx, limit: int = 2, seed: int = 1234) -> dict[str, dict]:
    from sapo.evaluate.lm_eval_suite import run_openllm

    out = Path(tempfile.mkdtemp(prefix="bench-openllm-"))
    results: dict[str, dict] = {}

    def ours() -> None:
        results["sapo"] = run_openllm(ctx.model_path, output_dir=out / "sapo", limit=limit, data="fixtures", seed=seed)

    def upstream() -> None:  # on the task YAMLs our turn wrote (the warm-up runs ours first)
        sapo = results["sapo"]
        results["lm_eval"] = run_upstream(ctx.model_path, sapo["tasks_dir"], sapo["lm_eval_group"],
                                          str(out / "lm_eval"), limit, seed)  # fmt: skip

    times = take_turns({"sapo": ours, "lm_eval": upstream}, rounds=1 if ctx.quick else 3)
    for key, setting in results["sapo"]["settings"].items():
        lm_eval_key = f"{setting['metric']},{setting['filter']}"
        upstream_value = results["lm_eval"]["results"][setting["lm_eval_task"]][lm_eval_key]
        if results["sapo"]["metrics"][key] != upstream_value:
            raise AssertionError(f"openllm bench: {key} differs from lm-eval's ({upstream_value}): not the same work")
    sapo, upstream_best = best(times["sapo"]), best(times["lm_eval"])
    return {"openllm_overhead": {"ours": sapo, "baseline": upstream_best, "value": sapo / upstream_best,
                                 "detail": f"{sapo:.2f} s vs {upstream_best:.2f} s, {limit} documents per task"}}  # fmt: skip
