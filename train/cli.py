"""``sapo train RECIPE.yaml [--field value ...]``: recipe in, trained checkpoint out.

A recipe's keys are exactly the config's field names (TRL's parser style); command-line
overrides win; an unknown key is an error. The key ``method`` picks the trainer and with it
the config class: ``sapo`` (default), or the paper's baselines ``sft``, ``dpo``, ``orpo``,
``spin``. Every method reads data through the same pipeline and writes the same output
layout (weights, tokenizer, README.md model card, sapo_config.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

METHODS = ("sapo", "sft", "dpo", "orpo", "spin")


def config_class(method: str):
    """The config dataclass of ``method``: the shared model/data fields plus TRL's config for it."""
    if method == "sapo":
        from sapo.train.config import SAPOConfig

        return SAPOConfig
    if method == "spin":
        from sapo.train.spin import SPINConfig

        return SPINConfig
    from sapo.train import baselines

    classes = {"sft": baselines.SFTRunConfig, "dpo": baselines.DPORunConfig, "orpo": baselines.ORPORunConfig}
    return classes[method]


class RecipeError(ValueError):
    """A recipe or override that does not make a valid configuration."""


def parse_recipe(path: str | Path, overrides: list[str]):
    """Read a recipe YAML plus ``--field value`` overrides into (method, its config)."""
    from trl import TrlParser

    if not Path(path).is_file():
        raise RecipeError(f"{path}: no such recipe file")
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of config fields")
    method = values.pop("method", "sapo")
    if method not in METHODS:
        raise RecipeError(f"{path}: method: expected one of {METHODS}, got {method!r}")
    config_cls = config_class(method)
    parser = TrlParser((config_cls,))
    unknown = parser.set_defaults_with_config(**values)
    if unknown:
        raise RecipeError(f"{path}: unknown recipe keys {unknown[::2]} (keys must be {config_cls.__name__} fields)")
    try:
        (config,) = parser.parse_args_into_dataclasses(args=overrides)
    except ValueError as err:  # __post_init__ names the field
        raise RecipeError(f"{path}: {err}") from err
    if config.resume_from_checkpoint in ("True", "true", "latest"):
        config.resume_from_checkpoint = True
    return method, config


def run_training(method: str, config) -> Path:
    """Train ``method`` as ``config`` says; return the folder of the final model."""
    import torch

    from sapo.models import load_causal_lm, load_tokenizer
    from sapo.train.data import load_examples_from_config, resolve_chat_template, to_dataset

    tokenizer = load_tokenizer(config.model_name_or_path)
    if config.chat_template:
        tokenizer.chat_template = resolve_chat_template(config.chat_template)
    examples, stats = load_examples_from_config(config, tokenizer)
    print(f"data: {stats.summary()}", flush=True)
    if method == "spin":
        from sapo.train.spin import run_spin

        return run_spin(config, tokenizer, examples)
    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = load_causal_lm(config.model_name_or_path, dtype=dtype)
    if method == "sapo":
        from sapo.train.trainer import SAPOTrainer

        trainer = SAPOTrainer(model=model, args=config, train_dataset=to_dataset(examples), processing_class=tokenizer)
    else:
        from sapo.train.baselines import build_baseline_trainer

        trainer = build_baseline_trainer(method, config, model, tokenizer, examples)
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    output = Path(config.output_dir)
    trainer.save_model(str(output))
    trainer.save_state()  # trainer_state.json: the logged losses and rewards, for reports
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output)
    return output


def print_fields(method: str) -> None:
    """Every config field of ``method``: name, default and help (TRL's own fields included)."""
    import dataclasses

    for f in sorted(dataclasses.fields(config_class(method)), key=lambda f: f.name):
        if f.name.startswith("_") or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        print(f"{f.name} = {default!r}\n    {f.metadata.get('help', '')}")


def _train(args: argparse.Namespace) -> int:
    if args.fields:
        print_fields(args.fields)
        return 0
    if not args.recipe:
        raise RecipeError("sapo train: give a RECIPE (or --fields METHOD)")
    method, config = parse_recipe(args.recipe, args.overrides)
    print(f"trained {method}: {run_training(method, config)}")
    return 0


def add_train_command(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train SAPO or a baseline (sft, dpo, orpo, spin) from a recipe YAML",
        description="Train with Self-Augmented Preference Optimization or one of the paper's baselines. RECIPE is "
        "a YAML file whose keys are config fields (see recipes/); its key 'method' picks sapo (default), sft, dpo, "
        "orpo or spin. Any field can be overridden as --field value. Shared fields: model_name_or_path, "
        "chat_template, dataset_name, dataset_field, max_length, max_prompt_length, max_examples, output_dir, "
        "max_steps, num_train_epochs, per_device_train_batch_size, learning_rate, beta, seed, save_steps, "
        "resume_from_checkpoint (a folder, or True for the newest complete checkpoint). SAPO: sapo_loss "
        "(dpo|orpo), ema_decay, ema_update_steps, buffer_size, segment_max_new_tokens, top_k, top_p, temperature, "
        "ref_update (ema|policy|fixed), ref_update_steps, generator (ema|policy), segment, use_buffer. DPO/ORPO: "
        "rejected_field. SPIN: spin_iterations, spin_learning_rates, spin_betas, spin_max_new_tokens, "
        "spin_generation_batch_size, spin_mix_previous. Multi-GPU: accelerate launch --config_file "
        "recipes/accelerate_configs/zero3.yaml -m sapo.cli train RECIPE.",
        epilog="'sapo train --fields METHOD' lists every field of a method with its help text and default.",
    )
    train.add_argument(
        "recipe", nargs="?", help="recipe YAML, e.g. recipes/embedded/smollm2-135m/sapo-dpo/config_cpu.yaml"
    )
    train.add_argument("--fields", choices=METHODS, help="list the config fields of METHOD and exit")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs")
    train.set_defaults(func=_train)
