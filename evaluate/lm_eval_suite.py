"""The lm-eval benchmarks of ``sapo eval``: Open LLM Leaderboard v1 (six tasks) and IFEval.

lm-eval does all the work: its ``simple_evaluate(model="hf", ...)`` loads the model, builds
prompts with its built-in task configs, scores, and writes its own results JSON and per-sample
logs, so anyone can check our numbers with the upstream ``lm_eval`` command. We add three things:

1. Benchmarks as data (``tasks/openllm.yaml``, ``tasks/ifeval.yaml``): which built-in task, how
   many shots, which metric and filter is the headline.
2. A data source: the hub (lm-eval's own data sets), the real test sets from wheels on PyPI
   (``packaged``: ``packaged.py`` converts them into the layout below; tasks it cannot supply are run
   nowhere and named), the project's offline fixtures (``fixtures/lm_eval/``, shipped in the same fields
   and layout), or a folder with local copies::

       <folder>/<task>/<split>.jsonl (or .json / .parquet)   e.g. arc_challenge/test.jsonl
       <folder>/mmlu/<subject>/{dev,test}.jsonl              one folder per MMLU subject

   where <task> is a key of the benchmark YAML and the splits are its eval and few-shot splits.
   For each run we write small task YAMLs under ``<output_dir>/<benchmark>/tasks/`` that
   ``include:`` the built-in task and override only data location and shots (the same pattern
   as lm-eval's own ``benchmarks/openllm.yaml``), then load them with
   ``TaskManager(include_path=...)``. The command to rerun them upstream is returned too.
3. NLTK's ``punkt_tab`` for IFEval's checker (``nltk_data.py``), so nothing is downloaded.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import yaml

from sapo.errors import DataError, RecipeError
from sapo.evaluate.items import lm_eval_intervals, lm_eval_items, write_items
from sapo.evaluate.lm_eval_data import data_source, present_tasks, resolve_data, split_files
from sapo.evaluate.nltk_data import ensure_punkt_tab
from sapo.log import get_logger
from sapo.models import resolve_model_path

logger = get_logger(__name__)

# resolve(): in the strict editable install the module is a symlink into the source tree.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
DTYPES = ("float32", "bfloat16", "float16", "auto")


def load_benchmark(name: str) -> dict:
    """The benchmark's settings from ``tasks/<name>.yaml``."""
    path = TASKS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
        raise RecipeError(f"unknown lm-eval benchmark {name!r}; known: {', '.join(known)}")
    body = yaml.safe_load(path.read_text())
    if body.get("uncertainty") not in ("lm-eval", "bootstrap"):
        raise RecipeError(f"{path}: uncertainty: expected lm-eval or bootstrap, got {body.get('uncertainty')!r}")
    return body


def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


# ---------------------------------------------------------------- task YAMLs lm-eval reads


def _task_config(spec: dict, name: str, data_folder: Path | None) -> dict:
    """One lm-eval task: the built-in config with our name, shots and (for local data) files.

    The built-in's split fields are kept as they are: which split is scored and which one shots come from, and
    also how many shots lm-eval's seeded sampler draws per document (one extra when the shot split "equals" the
    test split, which for HellaSwag and Winogrande is None == None). Setting ``fewshot_split`` here would change
    that draw, and with it the exemplars, from what ``lm_eval --tasks hellaswag`` picks on the same rows."""
    config = {
        "include": str(_lm_eval_tasks_dir() / spec["builtin"]),
        "task": name,
        "tag": [],  # do not join the built-in task's tags (e.g. `truthfulqa`), or its group runs our copy too
        "num_fewshot": spec["num_fewshot"],
    }
    if data_folder is not None:  # the files of the splits the built-in reads: the scored one and the shot pool,
        # which lm-eval loads when it builds the task even at 0 shots
        splits = [spec["eval_split"], *([spec["fewshot_split"]] if spec.get("fewshot_split") else [])]
        builder, files = split_files(data_folder, splits)
        config |= {"dataset_path": builder, "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    return config


def _subjects(key: str, spec: dict, folder: Path | None) -> list[str]:
    """MMLU-style subjects: the built-in ones on the hub, else the subject folders of the copy."""
    if folder is None:
        builtin_dir = (_lm_eval_tasks_dir() / spec["builtin"]).parent
        return sorted(p.stem.removeprefix("mmlu_") for p in builtin_dir.glob("mmlu_*.yaml"))
    subjects = sorted(p.name for p in (folder / key).iterdir() if p.is_dir()) if (folder / key).is_dir() else []
    if not subjects:
        raise DataError(f"no subject folders under {folder / key}: expected {key}/<subject>/<split>.jsonl")
    return subjects


def write_task_configs(
    benchmark: dict, label: str, folder: Path | None, tasks_dir: Path
) -> tuple[str, dict[str, str]]:
    """Write one YAML per lm-eval task (and group) under ``tasks_dir``; return the benchmark's
    group name and ``{task key: lm-eval task or group name}``.

    Names carry the data label (``openllm_fixtures_gsm8k``), so results files never mix sources up.
    """
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for stale in tasks_dir.glob("*.yaml"):  # from an earlier run: TaskManager would index them too
        stale.unlink()
    prefix = f"{benchmark['benchmark']}_{label}"
    names = {}
    for key, spec in benchmark["tasks"].items():
        name = names[key] = f"{prefix}_{key}"
        if not spec.get("per_subject"):
            _dump(tasks_dir / f"{name}.yaml", _task_config(spec, name, folder / key if folder else None))
            continue
        # One task per subject, prompted as lm-eval's mmlu/_generate_configs.py does, and a group
        # that pools them weighted by size, like lm-eval's `mmlu` group.
        members = []
        for subject in _subjects(key, spec, folder):
            member = f"{name}_{subject}"
            config = _task_config(spec, member, folder / key / subject if folder else None)
            topic = subject.replace("_", " ")
            config["task_alias"] = subject
            config["description"] = f"The following are multiple choice questions (with answers) about {topic}.\n\n"
            if folder is None:
                config["dataset_name"] = subject
            _dump(tasks_dir / f"{member}.yaml", config)
            members.append(member)
        metric = next(iter(spec["report"].values())).split(",")[0]
        aggregate = [{"metric": metric, "weight_by_size": True}]
        _dump(tasks_dir / f"{name}.yaml", {"group": name, "task": members, "aggregate_metric_list": aggregate})
    _dump(tasks_dir / f"{prefix}.yaml", {"group": prefix, "task": list(names.values())})
    return prefix, names


def _dump(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000))


# ---------------------------------------------------------------- running lm-eval


def seed_args(seed: int) -> dict:
    """One seed for all four of lm-eval's generators, as ``lm_eval --seed N`` does."""
    return {"random_seed": seed, "numpy_random_seed": seed, "torch_random_seed": seed, "fewshot_random_seed": seed}


# Tokenizer files, written anew by ``with_chat_template``; every other file of the model is linked.
_TOKENIZER_FILES = ("tokenizer", "special_tokens_map", "chat_template", "vocab", "merges", "added_tokens")


def with_chat_template(model_path: str | Path, template: str, folder: Path) -> Path:
    """A folder lm-eval loads as ``model_path`` but with ``template`` as its tokenizer's chat template (lm-eval reads
    the template from the tokenizer): the model's own files linked, the tokenizer saved again with the template."""
    from sapo.models import load_tokenizer

    source = Path(model_path).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith(_TOKENIZER_FILES):
            (folder / path.name).symlink_to(path.resolve())
    tokenizer = load_tokenizer(str(source))
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return folder


def _save_lm_eval_outputs(results: dict, samples: dict, tracker) -> list[str]:
    """Write lm-eval's results JSON and per-task sample logs as its CLI does; return their paths."""
    tracker.save_results_aggregated(results=results, samples=samples)
    for task_name in results["configs"]:
        tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    folder = Path(tracker.output_path) / tracker.general_config_tracker.model_name_sanitized
    files = [folder / f"results_{tracker.date_id}.json"]
    files += [folder / f"samples_{task}_{tracker.date_id}.jsonl" for task in results["configs"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:  # the tracker logs write errors instead of raising them
        raise RuntimeError(f"lm-eval did not write {', '.join(missing)}")
    return [str(f) for f in files]


def run_lm_eval_benchmark(
    name: str,
    model: str,
    *,
    output_dir: str | Path,
    limit: int | float | None,
    batch_size: int | str,
    device: str,
    dtype: str,
    data: str | Path,
    seed: int,
    apply_chat_template: bool,
    gen_kwargs: dict | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """Run one benchmark of ``tasks/`` through ``lm_eval.simple_evaluate``; see ``run_openllm`` for the result.
    ``env``: variables the upstream command needs to run as recorded (IFEval: ``NLTK_DATA``)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    if dtype not in DTYPES:
        raise RecipeError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    workdir = Path(output_dir).resolve() / name
    model_path = resolve_model_path(model)  # a local folder (a hub name: its snapshot)
    label, folder = resolve_data(data, name)
    benchmark, absent = present_tasks(load_benchmark(name), label)
    tasks_dir = workdir / "tasks"
    group, names = write_task_configs(benchmark, label, folder, tasks_dir)
    # Our YAMLs include the built-in ones by path, so lm-eval's 14k-entry index (~10 s) is not needed.
    task_manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    unknown = sorted(set(names.values()) - set(task_manager.all_tasks))
    if unknown:  # lm-eval skips a YAML it cannot parse without saying so
        raise DataError(f"lm-eval could not load the task config(s) {unknown} from {tasks_dir}")
    tracker = EvaluationTracker(output_path=str(workdir))
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": model_path, "dtype": dtype, "use_safetensors": True},  # lm-eval's HFLM; no pickles
        tasks=[group],
        batch_size=batch_size,
        device=device,
        limit=limit,
        log_samples=True,
        evaluation_tracker=tracker,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=apply_chat_template,  # what the lm_eval CLI passes
        gen_kwargs=gen_kwargs,
        task_manager=task_manager,
        **seed_args(seed),
    )
    samples = results.pop("samples")
    files = _save_lm_eval_outputs(results, samples, tracker)
    items = lm_eval_items(benchmark, names, samples, results.get("group_subtasks", {}))

    source = data_source(name, label, folder, benchmark)
    summary_run = {"limit": limit, "batch_size": batch_size, "device": device, "dtype": dtype, "seed": seed,
                   "apply_chat_template": apply_chat_template, "gen_kwargs": gen_kwargs}  # fmt: skip
    metrics, settings = _headline_metrics(benchmark, names, results["results"])
    intervals = lm_eval_intervals(benchmark, names, results["results"], items)
    averages, mean_of = _average_fields(name, benchmark["average"], metrics, intervals, absent)
    summary = {
        "benchmark": name,
        "data": label,
        "data_source": source,
        "data_dir": str(folder) if folder else None,
        "model": model,
        "model_path": model_path,
        "metrics": metrics,
        **averages,
        "uncertainty": intervals,
        "items": write_items(workdir, name, items, mean_of),
        "settings": settings,
        "run": summary_run,
        "lm_eval_version": lm_eval.__version__,
        "tasks_dir": str(tasks_dir),
        "lm_eval_group": group,
        "files": files,
        "lm_eval_command": _upstream_command(model_path, tasks_dir, group, workdir, summary_run, env or {}),
        "lm_eval_env": env or {},
    }
    if absent:
        summary["absent"] = absent
    if label == "fixtures":
        summary["note"] = "FIXTURE data: a pipeline check, not a measurement of the model"
    return summary


def _average_fields(name: str, averaged: list[str], metrics: dict, intervals: dict, absent: dict) -> tuple[dict, dict]:
    """results.json's average fields and the items file's ``mean_of``. ``averaged``: the tasks the headline is the
    plain mean of (none for IFEval). With tasks absent, their mean is ``partial_average``, labelled, and ``average``
    stays None: never the benchmark's average with tasks missing."""
    if not averaged:
        return {"average": None}, None
    value = sum(metrics[k] for k in averaged) / len(averaged)
    if not absent:
        return {"average": value}, {"average": averaged}
    intervals["partial_average"] = intervals.pop("average")
    label = f"mean of {len(averaged)} tasks, not the {name} average ({', '.join(absent)} absent)"
    return {"average": None, "partial_average": {"value": value, "of": averaged, "label": label}}, {
        "partial_average": averaged
    }


def _headline_metrics(benchmark: dict, names: dict[str, str], scores: dict) -> tuple[dict, dict]:
    """``({our metric name: value}, {task key: how it was scored})`` from lm-eval's ``results`` block."""
    metrics, settings = {}, {}
    for key, spec in benchmark["tasks"].items():
        for report_name, lm_eval_key in spec["report"].items():
            metrics[report_name] = float(scores[names[key]][lm_eval_key])
        metric, metric_filter = next(iter(spec["report"].values())).split(",")
        settings[key] = {"num_fewshot": spec["num_fewshot"], "metric": metric, "filter": metric_filter,
                         "lm_eval_task": names[key], "builtin": spec["builtin"],
                         "splits": "the built-in's (shots drawn as lm-eval draws them)"}  # fmt: skip
    return metrics, settings


def _upstream_command(model_path: str, tasks_dir: Path, group: str, workdir: Path, run: dict, env: dict) -> str:
    """The shell command that reruns this evaluation with the upstream tool, with the environment it needs in
    front (offline, IFEval's checker finds NLTK's punkt_tab only through ``NLTK_DATA``)."""
    parts = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={model_path},dtype={run['dtype']},use_safetensors=True",
             "--include_path", str(tasks_dir), "--tasks", group, "--batch_size", str(run["batch_size"]),
             "--device", run["device"], "--seed", str(run["seed"]), "--log_samples",
             "--output_path", str(workdir)]  # fmt: skip
    if run["limit"] is not None:
        parts += ["--limit", str(run["limit"])]
    if run["apply_chat_template"]:
        parts += ["--apply_chat_template"]
    if run["gen_kwargs"]:
        parts += ["--gen_kwargs", ",".join(f"{k}={v}" for k, v in run["gen_kwargs"].items())]
    return " ".join([*(f"{key}={shlex.quote(value)}" for key, value in env.items()), shlex.join(parts)])


# ---------------------------------------------------------------- the two benchmarks


def run_openllm(
    model: str,
    *,
    output_dir: str | Path,
    limit: int | float | None = None,
    batch_size: int | str = 1,
    device: str = "cpu",
    dtype: str = "float32",
    data: str | Path = "auto",
    seed: int = 1234,
) -> dict:
    """Open LLM Leaderboard v1 through lm-eval: ARC-challenge 25-shot acc_norm, HellaSwag 10-shot
    acc_norm, TruthfulQA 0-shot mc2, MMLU 5-shot acc, Winogrande 5-shot acc, GSM8K 5-shot exact
    match (strict-match headline, flexible-extract beside it), and the plain mean of the six.
    No chat template, as on the leaderboard.

    ``model``: hub name, local folder, ``embedded`` or ``tiny``. ``data``: ``auto`` (hub when
    reachable, else fixtures), ``hub``, ``fixtures`` or a folder of local copies (module docstring).

    Returns ``{"benchmark", "data" (hub|fixtures|local), "data_dir", "model", "model_path",
    "metrics" {name: value in [0, 1]}, "average", "settings" {task: {num_fewshot, metric, filter,
    lm_eval_task, builtin}}, "run" {...}, "lm_eval_version", "tasks_dir", "lm_eval_group",
    "files" (lm-eval's results JSON, then one samples JSONL per task), "lm_eval_command"}``
    (+ ``"note"`` on fixtures).
    """
    return run_lm_eval_benchmark("openllm", model, output_dir=output_dir, limit=limit, batch_size=batch_size,
                                 device=device, dtype=dtype, data=data, seed=seed,
                                 apply_chat_template=False)  # fmt: skip


def run_ifeval(model: str, *, output_dir: str | Path, limit: int | float | None = None, batch_size: int | str = 1,
               device: str = "cpu", dtype: str = "float32", data: str | Path = "auto", seed: int = 1234,
               apply_chat_template: bool = True, max_gen_toks: int | None = None) -> dict:  # fmt: skip
    """IFEval through lm-eval's ``ifeval`` task: prompt- and instruction-level accuracy, strict and
    loose (``metrics`` holds all four; ``average`` is None). ``max_gen_toks`` None keeps the task's
    1280. Same arguments and result as ``run_openllm`` otherwise.
    """
    nltk_root = ensure_punkt_tab()  # before lm-eval imports its ifeval checker, which downloads when this is missing
    gen_kwargs = {"max_gen_toks": max_gen_toks} if max_gen_toks is not None else None
    return run_lm_eval_benchmark("ifeval", model, output_dir=output_dir, limit=limit, batch_size=batch_size,
                                 device=device, dtype=dtype, data=data, seed=seed,
                                 apply_chat_template=apply_chat_template, gen_kwargs=gen_kwargs,
                                 env={"NLTK_DATA": str(nltk_root)})  # fmt: skip
