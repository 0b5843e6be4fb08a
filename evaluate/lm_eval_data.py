"""Where an lm-eval benchmark's data comes from: the hub, the packaged real test sets (``packaged.py``), the
project's fixtures, or a folder of local copies in the layout ``lm_eval_suite`` describes; which of the benchmark's
tasks that source can supply, and what results.json records about it (``data_source``)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from sapo.errors import DataError
from sapo.files import hub_offline
from sapo.log import get_logger

logger = get_logger(__name__)

# resolve(): in the strict editable install the module is a symlink into the source tree.
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "lm_eval"  # data=fixtures: the local-copy layout
DATA_SOURCES = ("auto", "hub", "packaged", "fixtures")  # or a folder path
_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # `datasets` loader per suffix
_PROBE_DATASET = "allenai/ai2_arc"  # any public data set lm-eval reads: the hub check asks for its metadata


def hub_reachable(timeout: float = 5.0) -> bool:
    """False when offline mode is set or the hub does not answer a metadata request in time."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/datasets/{_PROBE_DATASET}", timeout=timeout)
    except urllib.error.HTTPError:
        return True  # the hub answered, even if with an error status
    except (OSError, ValueError):
        return False
    return True


def resolve_data(data: str | Path, benchmark: str) -> tuple[str, Path | None]:
    """``(label, folder)``: label is ``hub``, ``packaged``, ``fixtures`` or ``local``; folder is None for the hub.
    ``auto``: the hub when it answers, else the packaged real sets when ``sapo prefetch`` (or an earlier
    ``--data packaged``) prepared them, else the fixtures, with a warning."""
    from sapo.evaluate import packaged

    data = str(data)
    if data == "auto":
        data = auto_source(benchmark)
        if data == "fixtures":
            logger.warning(f"sapo eval: {benchmark}: the hub is out of reach (or HF_*_OFFLINE is set) and the packaged "
                           f"real test sets are not prepared (`sapo prefetch {benchmark} --data packaged`): running on "
                           "the project's FIXTURE data. These numbers test the pipeline and say nothing about the "
                           "model.")  # fmt: skip
    if data == "hub":
        return "hub", None
    if data == "packaged":
        return "packaged", packaged.prepare(benchmark) / "lm_eval"
    # The fixtures are a local copy like any other, only labelled apart so their numbers are never mistaken.
    folder = FIXTURES_DIR if data == "fixtures" else Path(data).expanduser()
    if not folder.is_dir():
        raise DataError(f"data={data!r}: expected one of {', '.join(DATA_SOURCES)} or an existing folder")
    return ("fixtures" if data == "fixtures" else "local"), folder.resolve()


def auto_source(benchmark: str) -> str:
    """What ``--data auto`` reads for an lm-eval benchmark: the hub when it answers, else the packaged real sets
    when prepared (``sapo prefetch BENCHMARK --data packaged``), else the fixtures."""
    from sapo.evaluate import packaged

    if hub_reachable():
        return "hub"
    return "packaged" if packaged.is_prepared(benchmark) else "fixtures"


def split_files(task_folder: Path, splits: list[str]) -> tuple[str, dict[str, str]]:
    """The ``datasets`` builder and ``{split: file}`` for one task of a local copy."""
    files = {}
    for split in splits:
        found = next((path for suffix in _FILE_BUILDERS if (path := task_folder / f"{split}{suffix}").is_file()), None)
        if found is None:
            raise DataError(
                f"missing data file {task_folder / split}.jsonl (or .json/.parquet): this task reads the split(s) "
                f"{', '.join(splits)}; see the layout in sapo.evaluate.lm_eval_suite"
            )
        files[split] = found
    builders = {_FILE_BUILDERS[path.suffix] for path in files.values()}
    if len(builders) > 1:
        raise DataError(f"{task_folder}: mix of parquet and json files; use one format per task")
    return builders.pop(), {split: str(path) for split, path in files.items()}


def present_tasks(benchmark: dict, label: str) -> tuple[dict, dict[str, str]]:
    """The benchmark without the tasks its data source cannot supply, and ``{task: why}`` for those (only the
    packaged source lacks some: TruthfulQA and GSM8K's few-shot pool are on no package)."""
    if label != "packaged":
        return benchmark, {}
    from sapo.evaluate.packaged import absent

    missing = {key: why for key, why in absent(benchmark["benchmark"]).items() if key in benchmark["tasks"]}
    for key, why in missing.items():
        logger.warning(f"sapo eval: {benchmark['benchmark']}: {key} is not run on the packaged data: {why}")
    tasks = {key: spec for key, spec in benchmark["tasks"].items() if key not in missing}
    return {**benchmark, "tasks": tasks, "average": [k for k in benchmark["average"] if k in tasks]}, missing


def data_source(name: str, label: str, folder: Path | None, benchmark: dict) -> dict:
    """results.json's ``data_source``: where the rows came from (``packaged``: package, member, sha256, rows)."""
    if label == "packaged":
        from sapo.evaluate.packaged import provenance

        return provenance(name, tasks=list(benchmark["tasks"]))
    if label == "hub":
        # lm-eval's task YAMLs name the hub data sets and pin no revision: the hub's main branch at run time.
        return {"kind": "hub", "lm_eval_builtin": {key: spec["builtin"] for key, spec in benchmark["tasks"].items()}}
    return {"kind": label, "folder": str(folder)}
