"""``sapo train RECIPE.yaml [--field value ...]``: recipe in, trained checkpoint out.

A recipe's keys are exactly the config's field names (TRL's parser style); command-line
overrides win; an unknown key is an error. The optional key ``method`` picks the trainer
(only ``sapo`` so far; the baselines arrive through the same door).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

METHODS = ("sapo",)


class RecipeError(ValueError):
    """A recipe or override that does not make a valid configuration."""


def parse_recipe(path: str | Path, overrides: list[str]):
    """Read a recipe YAML plus ``--field value`` overrides into (method, SAPOConfig)."""
    from trl import TrlParser

    from sapo.train.config import SAPOConfig

    if not Path(path).is_file():
        raise RecipeError(f"{path}: no such recipe file")
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of config fields")
    method = values.pop("method", "sapo")
    if method not in METHODS:
        raise RecipeError(f"{path}: method: expected one of {METHODS}, got {method!r}")
    parser = TrlParser((SAPOConfig,))
    unknown = parser.set_defaults_with_config(**values)
    if unknown:
        raise RecipeError(f"{path}: unknown recipe keys {unknown[::2]} (keys must be SAPOConfig fields)")
    try:
        (config,) = parser.parse_args_into_dataclasses(args=overrides)
    except ValueError as err:  # __post_init__ names the field
        raise RecipeError(f"{path}: {err}") from err
    if config.resume_from_checkpoint in ("True", "true", "latest"):
        config.resume_from_checkpoint = True
    return method, config


def run_sapo(config) -> Path:
    """Train SAPO as ``config`` says; return the folder of the final policy."""
    import torch

    from sapo.models import load_causal_lm, load_tokenizer
    from sapo.train.data import load_examples_from_config, resolve_chat_template, to_dataset
    from sapo.train.trainer import SAPOTrainer

    tokenizer = load_tokenizer(config.model_name_or_path)
    if config.chat_template:
        tokenizer.chat_template = resolve_chat_template(config.chat_template)
    examples, stats = load_examples_from_config(config, tokenizer)
    print(f"data: {stats.summary()}", flush=True)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = load_causal_lm(config.model_name_or_path, dtype=dtype)
    trainer = SAPOTrainer(model=model, args=config, train_dataset=to_dataset(examples), processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    output = Path(config.output_dir)
    trainer.save_model(str(output))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output)
    return output


def _train(args: argparse.Namespace) -> int:
    method, config = parse_recipe(args.recipe, args.overrides)
    print(f"trained policy: {run_sapo(config)}")
    return 0


def add_train_command(sub) -> None:
    from sapo.train.config import SAPOConfig

    fields = sorted(name for name in SAPOConfig.__dataclass_fields__ if not name.startswith("_"))
    train = sub.add_parser(
        "train",
        help="train SAPO from a recipe YAML (command-line --field value overrides win)",
        description="Train with Self-Augmented Preference Optimization. RECIPE is a YAML file whose keys are "
        "config fields (see recipes/); any field can be overridden as --field value. Key SAPO fields: "
        "model_name_or_path, dataset_name, output_dir, max_steps, num_train_epochs, per_device_train_batch_size, "
        "learning_rate, beta, sapo_loss (dpo|orpo), ema_decay, ema_update_steps, buffer_size, "
        "segment_max_new_tokens, top_k, top_p, temperature, ref_update (ema|policy|fixed), ref_update_steps, "
        "generator (ema|policy), segment, use_buffer, seed, save_steps, resume_from_checkpoint "
        "(a folder, or True for the newest complete checkpoint). Multi-GPU: accelerate launch --config_file "
        "recipes/accelerate_configs/zero3.yaml -m sapo.cli train RECIPE.",
        epilog=f"All {len(fields)} fields: " + ", ".join(fields),
    )
    train.add_argument("recipe", help="recipe YAML, e.g. recipes/embedded/smollm2-135m/sapo-dpo/config_cpu.yaml")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs")
    train.set_defaults(func=_train)
