"""Every recipe, paper and embedded scale, parses into its method's config without loading
anything, and every key it sets arrives in the config unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate_configs" not in p.parts)


def test_recipes_are_found():
    methods = {(p.parts[-4], p.parts[-2]) for p in RECIPES}  # (scale, method)
    for scale in ("paper", "embedded"):
        assert {m for s, m in methods if s == scale} >= {"sft", "dpo", "orpo", "spin", "sapo-dpo", "sapo-orpo"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_parses_into_config(path, monkeypatch):
    from sapo.train.cli import config_class, parse_recipe

    values = yaml.safe_load(path.read_text())
    overrides = []
    if values.get("bf16") and not torch.cuda.is_available():
        # A GPU recipe asks for bf16, which TrainingArguments refuses on a machine without a GPU.
        overrides = ["--bf16", "false"]
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: loaded.append(a))
    method, config = parse_recipe(path, overrides)
    assert method == values.pop("method", "sapo")
    assert type(config) is config_class(method)
    assert not loaded, f"parsing loaded {loaded}"
    for key, want in values.items():
        if key == "bf16" and overrides:
            continue
        got = getattr(config, key)
        got = getattr(got, "value", got)  # enums: optimizer, scheduler
        if key == "report_to":  # transformers keeps a list; "none" is the empty one, as is a missing TensorBoard
            from transformers.integrations import is_tensorboard_available

            want = [] if want == "none" or (want == "tensorboard" and not is_tensorboard_available()) else [want]
        assert got == want, f"{path.name}: {key} = {got!r}, recipe says {want!r}"
