"""``sapo bench``: every entry of ``bench/goals.yaml`` against its baseline, printed with its goal and whether
it is met, into ``results/bench/<machine>.json`` and the rendered ``results/bench/README.md``.

``--predict RECIPE --gpus N --gpu-type T`` prints what a run of a recipe would cost instead (``predict.py``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sapo.argtypes import fraction, positive_int
from sapo.errors import RecipeError
from sapo.log import get_logger

logger = get_logger(__name__)

# Group name -> "module:function"; each returns {entry: measured} (see entries.py). Run in this order: the
# cheap guards last, so a long entry's failure shows early. growth_memory (~3 min) and reproduce (~19 min) run only
# when named.
GROUPS = {"step": "entries:step_group", "memory": "entries:memory_group", "growth": "growth:growth_group",
          "ema": "guards:ema_group", "generation": "guards:generation_group",
          "eval_generation": "guards:eval_generation_group", "openllm": "guards_openllm:openllm_group",
          "growth_memory": "growth:growth_memory_group", "reproduce": "entries:reproduce_group"}  # fmt: skip
ON_REQUEST = ("growth_memory", "reproduce")  # minutes each: run by --only


def _group_function(name: str):
    import importlib

    module, function = GROUPS[name].split(":")
    return getattr(importlib.import_module(f"sapo.bench.{module}"), function)


def chosen_groups(only: str | None, goals: dict[str, dict]) -> list[str]:
    """The groups to run: those of the entries (or groups) named by ``--only``, else every group but the
    ones run on request."""
    if not only:
        return [g for g in GROUPS if g not in ON_REQUEST]
    wanted = set()
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name in GROUPS:
            wanted.add(name)
        elif name in goals:
            wanted.add(goals[name]["group"])
        else:
            from sapo.errors import closest

            near = closest(name, [*goals, *GROUPS])
            hint = f" (did you mean {near!r}?)" if near else ""
            raise RecipeError(f"--only: {name!r} is no bench entry or group{hint}; groups: {', '.join(GROUPS)}")
    return [g for g in GROUPS if g in wanted]


def run_bench(args: argparse.Namespace) -> int:
    from sapo.bench.entries import BenchContext
    from sapo.bench.measure import machine, machine_slug
    from sapo.bench.report import commit, format_table, load_goals, record, render_readme, update_results
    from sapo.models import resolve_model_path

    goals = load_goals()
    groups = chosen_groups(args.only, goals)
    ctx = BenchContext(args.model, str(resolve_model_path(args.model)), rounds=args.rounds, quick=args.quick,
                       output=args.output)  # fmt: skip
    info = machine()
    measured_commit = commit()  # now: the code that runs, before the run writes its own files into the tree
    output = Path(args.output)
    found: dict[str, dict] = {}
    extra: dict = {}
    seconds: dict[str, float] = {}
    for name in groups:
        logger.info(f"sapo bench: {name} ...")
        began = time.perf_counter()
        measured = _group_function(name)(ctx)
        extra.update(measured.pop("_extra", {}))  # a group's files (the growth plot) and fits
        found.update(measured)
        seconds[name] = round(time.perf_counter() - began, 1)
        logger.info(f"sapo bench: {name} took {seconds[name]:.0f} s")
    extra["group_seconds"] = {**(extra.get("group_seconds") or {}), **seconds}
    extra["group_commits"] = {name: measured_commit for name in seconds}  # the fits and plots have no entries
    rows = record(found, goals, args.model, info["packages"], measured_commit)
    print(f"\nmachine: {info['cpu']}, {info['cpu_cores']} cores, {info['torch_threads']} torch threads"
          + (f"; {info['gpu_count']} x {info['gpu']}" if "gpu" in info else "") + f"; model: {args.model}")  # fmt: skip
    print(format_table(rows))
    if args.quick:
        print("\n--quick: sizes for a smoke test; nothing written")
        return 0
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{machine_slug(info)}.json"
    update_results(path, info, rows, extra)
    print(f"\nresults: {path}; {render_readme(output)}")
    return 0


def _bench_command(args: argparse.Namespace) -> int:
    if args.predict:
        from sapo.bench.predict import predict_main

        if args.gpus is None or args.gpu_type is None:
            raise RecipeError("--predict needs --gpus N and --gpu-type T (see bench/hardware.yaml; 'this' for here)")
        print(predict_main(args.predict, args.gpus, args.gpu_type, rows=args.rows, mfu=args.mfu,
                           bandwidth_fraction=args.bandwidth_fraction, results_dir=args.output))  # fmt: skip
        return 0
    return run_bench(args)


def add_bench_command(sub) -> None:
    from sapo.bench.predict import BANDWIDTH_FRACTION, MFU

    p = sub.add_parser(
        "bench",
        help="what a step costs against TRL's DPO step and the machine's limits; how cost grows; --predict",
        description="Run every bench entry (bench/goals.yaml) against its baseline in one process, taking turns, "
        "and print each ratio with its goal and whether it is met; write results/bench/<machine>.json and the "
        "rendered results/bench/README.md. About 19 minutes on 2 CPU cores. The embedded reproduce_table2 wall "
        "time (~19 min more on 2 cores) and the memory sweep (~3 min) run only when named: --only reproduce_table2, "
        "--only growth_memory. --predict RECIPE prints the hours a "
        "recipe would take on --gpus N of --gpu-type T, with its assumptions.",
    )
    p.add_argument("--only", metavar="ENTRY,...", help="entries or groups to run (default: all but growth_memory and reproduce); "
                   "a results file keeps the entries not run")  # fmt: skip
    p.add_argument("--model", default="embedded", help="embedded (default), tiny or a checkpoint folder")
    p.add_argument("--rounds", type=positive_int, default=2,
                   help="timed turns per side of the step and segment-batching entries, the best kept (default 2); "
                   "the others use fixed counts sized to the 20-minute budget")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small sizes, nothing written: a smoke test of the bench")
    p.add_argument("--output", default="results/bench", help="folder of the results files (default results/bench)")
    predict = p.add_argument_group("prediction (no measurement)")
    predict.add_argument("--predict", metavar="RECIPE", help="a recipe YAML (recipes/paper/...): print its cost")
    predict.add_argument("--gpus", type=positive_int, help="GPUs the run would use")
    predict.add_argument("--gpu-type", help="a GPU of bench/hardware.yaml, or 'this' (this machine, from its sweep)")
    predict.add_argument("--rows", type=positive_int, help="training rows, where the recipe's dataset size is unknown")
    predict.add_argument(
        "--mfu",
        type=fraction,
        default=MFU,
        help="share of the GPU's peak bf16 FLOP/s a training step reaches (default %(default)s)",
    )
    predict.add_argument(
        "--bandwidth-fraction",
        type=fraction,
        default=BANDWIDTH_FRACTION,
        help="share of the GPU's memory bandwidth a decoding step reaches (default %(default)s)",
    )
    p.set_defaults(func=_bench_command)
