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

from sapo.argtypes import non_negative_int, positive_int
from sapo.chat import CHAT_FORMATS, MULTI_TURNS
from sapo.errors import RecipeError, closest
from sapo.log import get_logger
from sapo.models import MODEL_HELP

logger = get_logger(__name__)
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


def parse_recipe(path: str | Path, overrides: list[str]):
    """Read a recipe YAML plus ``--field value`` overrides into (method, its config)."""
    from trl import TrlParser

    if not Path(path).is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:  # the message carries the line and column
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of config fields")
    method = values.pop("method", "sapo")
    if method not in METHODS:
        raise RecipeError(f"{path}: method: expected one of {METHODS}, got {method!r}")
    config_cls = config_class(method)
    parser = TrlParser((config_cls,))
    fields = {a.dest for a in parser._actions}
    unknown = [
        f"{key}{_only_when_generating(key) or _did_you_mean(key, fields)}" for key in values if key not in fields
    ]
    if unknown:
        raise RecipeError(f"{path}: unknown recipe keys {', '.join(unknown)} (keys must be {config_cls.__name__} "
                          f"fields: sapo train --fields {method})")  # fmt: skip
    parser.set_defaults_with_config(**recipe_values(config_cls, values, path))

    def refuse(message: str):  # argparse would print the whole usage of ~170 fields and exit
        raise RecipeError(f"{path}: command-line override: {message}")

    parser.error = refuse
    try:
        (config,) = parser.parse_args_into_dataclasses(args=overrides)
    except ValueError as err:  # __post_init__ names the field
        raise RecipeError(f"{path}: {err}") from err
    if config.resume_from_checkpoint in ("True", "true", "latest"):
        config.resume_from_checkpoint = True
    return method, config


def _only_when_generating(key: str) -> str:
    """A hint for a key that only the generating methods (SAPO, SPIN) take."""
    from sapo.train.config import GeneratingArguments, HarnessArguments

    own = set(GeneratingArguments.__dataclass_fields__) - set(HarnessArguments.__dataclass_fields__)
    return " (a field of the generating methods, sapo and spin, only)" if key in own else ""


def _did_you_mean(key: str, fields) -> str:
    close = closest(key.replace("-", "_"), fields)
    return f" (did you mean {close}?)" if close else ""


def _field_kind(hint) -> tuple[type, bool] | None:
    """(bool, int or float; whether the field is a list of them) for a field of such a type or an optional one."""
    import types
    import typing

    if hint in (bool, int, float):
        return hint, False
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list and args and args[0] in (bool, int, float):
        return args[0], True
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 1:
        return _field_kind(args[0])
    return None


def _typed(value, kind: type, name: str, path):
    """``value`` as ``kind``, or a RecipeError naming the field. Strings are converted (PyYAML reads 1e-6, without a
    dot, as a string); a bool is never a number, nor a float with a fraction an integer."""
    words = {bool: "true or false", int: "an integer", float: "a number"}[kind]
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    if kind is not bool and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    elif isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
        return value
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise RecipeError(f"{path}: {name}: expected {words}, got {value!r}")


def recipe_values(config_cls, values: dict, path) -> dict:
    """The recipe's values, each number or switch checked against its field's type (argparse would check only
    those written as strings, and a list not at all)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_cls)
    checked = {}
    for f in dataclasses.fields(config_cls):
        kind = _field_kind(hints.get(f.name)) if f.name in values else None
        value = values.get(f.name)
        if kind is None or value is None:
            continue
        if str(value).lower() in ("none", "null") and type(None) in typing.get_args(hints[f.name]):
            continue  # an optional field written None (a string in YAML): TRL's parser reads it as None
        if kind[1]:
            items = value if isinstance(value, list) else [value]
            checked[f.name] = [_typed(v, kind[0], f"{f.name}[{i}]", path) for i, v in enumerate(items)]
        else:
            checked[f.name] = _typed(value, kind[0], f.name, path)
    return {**values, **checked}


def run_tokenizer(config):
    """The run's tokenizer: the model's, with the recipe's chat template and chat format applied."""
    from sapo.chat import resolve_chat_template, setup_chat_format
    from sapo.models import load_tokenizer

    tokenizer = load_tokenizer(config.model_name_or_path)
    if config.chat_template:
        tokenizer.chat_template = resolve_chat_template(config.chat_template)
    if tokenizer.chat_template is None:  # before any row is rendered (or a model loaded)
        raise RecipeError(f"{config.model_name_or_path}: the tokenizer has no chat template; set chat_template "
                          "(sapo data audit: --chat-template) to chatml, zephyr, llama3 or a .jinja file")  # fmt: skip
    if config.chat_format:
        added = setup_chat_format(tokenizer, tokenizer.chat_template)
        logger.info(
            f"chat_format {config.chat_format}: {'added' if added else 'found'} {tokenizer.bos_token} and "
            f"{tokenizer.eos_token} as special tokens (ids {tokenizer.bos_token_id}, {tokenizer.eos_token_id})"
        )
    return tokenizer


def run_training(method: str, config) -> Path:
    """Train ``method`` as ``config`` says; return the folder of the final model. The main process holds the
    output folder's lock: a second run pointed at it stops with a clear error instead of interleaving files."""
    from accelerate import PartialState

    from sapo.files import held_lock

    if not PartialState().is_main_process:  # ranks of one launch share the folder; rank 0 speaks for them
        return _run_training(method, config)
    with held_lock(config.output_dir, wait=False, what="trainings"):
        return _run_training(method, config)


def _run_training(method: str, config) -> Path:
    from sapo.chat import fit_embeddings
    from sapo.models import load_causal_lm, weights_dtype
    from sapo.train.data import load_examples_from_config, to_dataset

    tokenizer = run_tokenizer(config)
    examples, stats = load_examples_from_config(config, tokenizer)
    logger.info(f"data: {stats.summary()}")
    if method == "spin":
        from sapo.train.spin import run_spin

        return run_spin(config, tokenizer, examples)
    # fp32 master weights unless asked: bf16 is mixed precision (bf16 weights lose lr 5e-7 updates outside ZeRO-3).
    model = load_causal_lm(config.model_name_or_path, dtype=weights_dtype(config.model_dtype))
    if config.chat_format:  # before the trainers copy it into the EMA and reference models
        fit_embeddings(model, tokenizer)
    if method == "sapo":
        from sapo.train.trainer import SAPOTrainer

        trainer = SAPOTrainer(model=model, args=config, train_dataset=to_dataset(examples), processing_class=tokenizer)
    else:
        from sapo.train.baselines import build_baseline_trainer

        trainer = build_baseline_trainer(method, config, model, tokenizer, examples)
    from sapo.log import engine_name

    logger.info(f"engine: {engine_name(trainer.accelerator)}")
    from sapo.train.checkpoints import SAPO_STATE, TRAINER_STATE, resume_point

    marker = SAPO_STATE if method == "sapo" else TRAINER_STATE
    resume = resume_point(config.output_dir, config.resume_from_checkpoint, marker,
                          main_process=trainer.accelerator.is_main_process)  # fmt: skip
    trainer.accelerator.wait_for_everyone()  # incomplete checkpoints are gone before any rank trains
    trainer.train(resume_from_checkpoint=resume)
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
    overrides = list(args.overrides)
    for at, arg in enumerate(overrides):  # after the recipe, argparse leaves --log-level among the overrides
        if arg == "--log-level" or arg.startswith("--log-level="):
            from sapo.log import setup_logging

            joined = "=" in arg
            setup_logging(arg.split("=", 1)[1] if joined else (overrides[at + 1] if at + 1 < len(overrides) else ""))
            del overrides[at : at + (1 if joined else 2)]
            break
    method, config = parse_recipe(args.recipe, overrides)
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
        "resume_from_checkpoint (a folder; true: the newest complete checkpoint; auto: that, else from the start). "
        "SAPO: sapo_loss "
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


# --------------------------------------------------------------------------- sapo data


def _data_write_embedded(args: argparse.Namespace) -> int:
    from sapo.train.embedded_data import write_embedded_dataset

    print(write_embedded_dataset(args.path, n=args.n, seed=args.seed))
    return 0


def _data_audit(args: argparse.Namespace) -> int:
    from sapo.train.data import load_examples_from_config

    source = args
    if args.recipe:  # the recipe's model, template and data fields: exactly what its training run reads
        _, source = parse_recipe(args.recipe, [])
    elif not args.dataset_name:
        raise RecipeError("sapo data audit: give a DATASET or --recipe RECIPE")
    else:
        args.model_name_or_path = args.model
        args.chat_template = args.chat_template or args.chat_format
    tokenizer = run_tokenizer(source)
    examples, stats = load_examples_from_config(source, tokenizer)
    print(stats.summary())
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    if args.json:
        write_audit_json(args.json, source, examples[: args.show], tokenizer)
    for example in examples[: args.show]:
        ids = example.prompt_ids + example.answer_ids
        counts = {t: ids.count(i) for t, i in specials.items() if ids.count(i)}
        print(f"--- {example.where}: {len(example.prompt_ids)} prompt + {len(example.answer_ids)} answer tokens")
        print(f"    first tokens: {tokenizer.convert_ids_to_tokens(ids[:6])}")
        print(f"    last tokens:  {tokenizer.convert_ids_to_tokens(ids[-6:])}")
        print(f"    special token counts: {counts}")
        print(f"    answer: {tokenizer.decode(example.answer_ids)[:200]!r}")
    return 0


def write_audit_json(path: str, source, examples, tokenizer) -> None:
    """The shown examples with the messages they were made from, for the template-parity audit."""
    from dataclasses import asdict

    from sapo.files import atomic_write_json
    from sapo.train.data import TokenLayout, conversation_from_row, read_rows

    layout, wanted, rows = TokenLayout.from_config(source), {e.where: e for e in examples}, []
    for where, row in read_rows(source.dataset_name, source.dataset_split) if wanted else ():
        if where in wanted:
            messages = conversation_from_row(row, where, source.dataset_field)
            example = wanted[where]
            rows.append({"where": where, "prompt_messages": layout.prompt_messages(messages),
                         "prompt_ids": example.prompt_ids, "answer_ids": example.answer_ids, "layout": asdict(layout),
                         "answer_tokens": tokenizer.convert_ids_to_tokens(example.answer_ids)})  # fmt: skip
            if len(rows) == len(wanted):
                break
    atomic_write_json(path, rows)


def add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="write the embedded data set; audit tokenization of any data set")
    dsub = data.add_subparsers(dest="action", required=True)
    write = dsub.add_parser(
        "write-embedded",
        help="write the project's own instruction data set as JSONL (Capybara 'messages' format)",
    )
    write.add_argument("path", help="output .jsonl file")
    write.add_argument("--n", type=int, default=400, help="number of conversations (default 400)")
    write.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    write.set_defaults(func=_data_write_embedded)
    audit = dsub.add_parser(
        "audit",
        help="tokenize a data set as training would and show counts, first/last tokens and special tokens",
        description="Runs the shared data pipeline and prints what was read, truncated and dropped, then "
        "decodes the first and last tokens of a few examples so doubled BOS/EOS tokens are visible.",
    )
    # dests use the config's field names, so the audit reads data exactly as training does
    audit.add_argument(
        "dataset_name",
        metavar="dataset",
        nargs="?",
        help="'embedded', a .jsonl/.json/.parquet file, a saved folder or a hub name (or give --recipe)",
    )
    audit.add_argument("--recipe", help="read model, chat template and every data field from this recipe YAML")
    audit.add_argument("--model", default="embedded", help=MODEL_HELP + " (for its tokenizer)")
    audit.add_argument("--chat-template", help="chatml, zephyr, llama3 or a .jinja file (default: the tokenizer's)")
    audit.add_argument("--chat-format", choices=CHAT_FORMATS,
                       help="make ChatML's markers special tokens first, as the recipe field chat_format does")  # fmt: skip
    audit.add_argument(
        "--split", dest="dataset_split", default="train", help="split for hub data sets (default train)"
    )
    audit.add_argument(
        "--field", dest="dataset_field", help="the conversation column (default: first of chosen, messages, real)"
    )
    audit.add_argument("--system-prompt", help="system message for conversations that have none")
    audit.add_argument("--max-length", type=positive_int, default=2048, help="token budget of prompt + answer")
    audit.add_argument("--max-prompt-length", type=positive_int, default=1792, help="token budget of the prompt")
    audit.add_argument("--truncation", choices=["truncate", "drop", "reference"], default="truncate",
                       help="rows over the limits: truncate (keep the prompt's end, then cut the answer), drop, or "
                       "reference (drop prompts of >= --max-prompt-length tokens, then truncate); counted, and each "
                       "dropped row named (default truncate)")  # fmt: skip
    audit.add_argument("--multi-turn", choices=MULTI_TURNS, default="last", help="which turn is the answer")
    audit.add_argument("--prompt-split", choices=["render_once", "reference"], default="render_once",
                       help="render once and split (default), or the reference code's separate renders")  # fmt: skip
    audit.add_argument("--no-prompt-bos", dest="prompt_bos", action="store_false", help="no BOS before the prompt")
    audit.add_argument("--answer-eos", action="store_true", help="append one EOS to every answer (reference)")
    audit.add_argument("--on-bad-row", choices=["error", "skip"], default="error")
    audit.add_argument("--show", type=non_negative_int, default=3, help="examples to print (default 3)")
    audit.add_argument("--json", metavar="FILE",
                       help="also write the shown examples' prompt messages, prompt and answer ids and token layout "
                       "to FILE, for comparison with what the benchmarks feed (sapo eval MODEL --show-prompts)")  # fmt: skip
    audit.set_defaults(func=_data_audit)
