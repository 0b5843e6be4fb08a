"""``results.json``: one schema for every benchmark, with what changes a score recorded beside it.

A score depends on the model's weights, its chat template, the dtype, the seed, the data
(real or fixture), the judge and the package versions (lm-eval versions alone move GSM8K:
SPIN#12). Each of these is written next to the numbers, so two results files can be compared
or refused. Judge keys never appear: ``JudgeSettings.describe`` leaves them out.

Layout::

    {"schema": "sapo-eval/1", "model": {...provenance...}, "run": {seed, limit, dtype, device, ...},
     "judge": {...} | null, "packages": {...},
     "benchmarks": {"mtbench": {"data": "mt_bench" | "fixtures", "metrics": {...}, "files": [...], ...}, ...}}

Benchmarks from earlier runs on the same weights are kept, so a suite can be run in parts.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from sapo.files import atomic_write_json
from sapo.models import hub_revision, weights_fingerprint

SCHEMA = "sapo-eval/1"
PACKAGES = ("sapo-harness", "torch", "transformers", "trl", "lm_eval", "alpaca_eval", "fschat", "openai", "datasets")


def model_provenance(name: str, path: str, tokenizer=None, dtype: str | None = None) -> dict:
    """Name, local folder, hub repo id and revision (for a hub snapshot folder), weights hash and
    chat-template hash."""
    folder = Path(path)
    content = weights_fingerprint(folder)
    repo_id, revision = hub_revision(folder) or (None, None)  # the snapshot folder is named by its commit
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    card = folder / "sapo_config.json"
    method = json.loads(card.read_text()).get("method") if card.is_file() else None
    return {
        "name": name,
        "path": str(folder),
        "repo_id": repo_id,
        "revision": revision,
        "weights_sha256": content,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        "dtype": dtype,
        "trained_with": method,  # set when the folder was written by `sapo train`
    }


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict:
    """``{package: installed version or None}`` (the bench records its own list with the same reader)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def results_path(source: str | Path) -> Path:
    """The results.json named by ``source``: the file itself, or the one in the folder ``source``."""
    path = Path(source)
    return path / "results.json" if path.is_dir() else path


def write_results(output_dir: Path, *, model: dict, run: dict, judge: dict | None, benchmarks: dict,
                  packages: dict | None = None) -> Path:  # fmt: skip
    """Write (merge) ``output_dir/results.json`` atomically; return its path. ``packages``: the versions to
    record (default: read now).

    Earlier benchmarks in the file are kept only if they were measured on the same weights.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "results.json"
    merged = {}
    if path.is_file():
        old = json.loads(path.read_text())
        same = model.get("weights_sha256") is not None  # a folder without safetensors: never merged
        if same and old.get("model", {}).get("weights_sha256") == model.get("weights_sha256"):
            merged = old.get("benchmarks", {})
    merged.update(benchmarks)
    body = {"schema": SCHEMA, "model": model, "run": run, "judge": judge, "packages": packages or package_versions(),
            "benchmarks": merged}  # fmt: skip
    return atomic_write_json(path, body)
