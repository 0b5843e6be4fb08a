"""What a training recipe needs from the hub: its model (weights and tokenizer) and its data set split."""

from __future__ import annotations

from pathlib import Path

from sapo.prefetch import Need


def recipe_needs(recipe: str | Path) -> list[Need]:
    from sapo.models import hub_snapshot
    from sapo.train.cli import parse_recipe

    method, config = parse_recipe(str(recipe), [])  # runs/... names an earlier run's output: nothing to fetch
    needs = []
    model = config.model_name_or_path
    if model not in ("embedded", "tiny") and not Path(model).exists() and not model.startswith("runs/"):
        needs.append(Need("model", model, lambda: [hub_snapshot(model)], f"{method} in {recipe}"))
    data = config.dataset_name
    if data != "embedded" and not Path(data).exists():
        needs.append(Need("dataset", f"{data} [{config.dataset_split}]",
                          lambda: _dataset_files(data, config.dataset_split), f"{method} in {recipe}"))  # fmt: skip
    return needs


def _dataset_files(name: str, split: str) -> list[Path]:
    import datasets

    dataset = datasets.load_dataset(name, split=split)  # prepares the datasets cache, which offline runs reread
    return sorted({Path(f["filename"]) for f in dataset.cache_files})
