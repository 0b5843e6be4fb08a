"""What ``sapo eval`` checks before any model loads: a chat template where one is needed, and each
benchmark's answer budget (plus its longest prompt, where the prompts are local) against the model's context."""

from __future__ import annotations

import argparse
from pathlib import Path

from sapo.errors import RecipeError
from sapo.evaluate.suites import JUDGED, limit_of


def preflight(args: argparse.Namespace, suite: list[str]) -> None:
    """Raise a RecipeError naming the flag to change, before any model loads (see the module docstring)."""
    from sapo.chat import generation_prompt_ids, resolve_chat_template
    from sapo.evaluate.generation import check_context, lm_eval_budgets, model_context
    from sapo.evaluate.judge import JudgeSettings
    from sapo.models import load_tokenizer, resolve_model_path

    path = resolve_model_path(args.model)
    tokenizer = load_tokenizer(path)
    if args.chat_template:
        tokenizer.chat_template = resolve_chat_template(args.chat_template)
    chatting = [name for name in suite if name != "openllm"]
    if tokenizer.chat_template is None and chatting:
        raise RecipeError(f"{args.model}: the tokenizer has no chat template, which {', '.join(chatting)} needs: "
                          "pass --chat-template (chatml, zephyr, llama3 or a .jinja file)")  # fmt: skip
    if args.data == "packaged":  # every benchmark's real sets checked and converted now, not mid-run
        from sapo.evaluate import packaged

        for name in set(suite) & set(packaged.benchmarks()):
            packaged.prepare(name)
    context = model_context(path)
    judged = args.judge == "local" or JudgeSettings.from_env(args.judge_model) is not None
    for name in suite:
        if name in JUDGED and not judged:
            continue  # skipped for want of a judge
        if name == "openllm":  # lm-eval's own budgets (GSM8K's 256); it keeps the end of a longer prompt
            for task, budget in lm_eval_budgets("openllm").items():
                check_context(f"openllm: {task}", budget, context, flag=None)
            continue
        budget, texts = benchmark_defaults(name, args.data)
        texts = texts[: limit_of(args.limit, name)]
        prompts = [generation_prompt_ids(tokenizer, [{"role": "user", "content": t}]) for t in texts]
        check_context(name, args.max_new_tokens or budget, context, max(map(len, prompts)) if prompts else None)


def benchmark_defaults(name: str, data: str) -> tuple[int, list[str]]:
    """A benchmark's own answer budget, and its first-turn prompts where they are on this machine (AlpacaEval's may
    be on the hub: each prompt is checked when answered, as MT-Bench's second turns are)."""
    import inspect

    from sapo.evaluate import alpacaeval, mtbench, packaged, verifiable
    from sapo.evaluate.generation import lm_eval_budgets
    from sapo.evaluate.lm_eval_data import FIXTURES_DIR, auto_source
    from sapo.files import read_jsonl

    if name == "ifeval":  # lm-eval's task config; the prompts of the packaged set, the fixtures or a local copy
        budget = lm_eval_budgets("ifeval")["ifeval"]
        source = auto_source("ifeval") if data == "auto" else data
        if source in ("hub", "real"):
            return budget, []  # the hub's prompts are not on this machine
        if source == "packaged":
            folder = packaged.prepare("ifeval") / "lm_eval"
        else:
            folder = FIXTURES_DIR if source == "fixtures" else Path(source)
        file = folder / "ifeval" / "train.jsonl"
        return budget, [row["prompt"] for row in read_jsonl(file)] if file.is_file() else []
    runner = {"mtbench": mtbench.run_mtbench, "alpacaeval": alpacaeval.run_alpacaeval,
              "verifiable": verifiable.run_verifiable}[name]  # fmt: skip
    budget = inspect.signature(runner).parameters["max_new_tokens"].default
    if name == "mtbench":
        return budget, [question["turns"][0] for question in mtbench.load_mtbench_data(data).questions]
    if name == "alpacaeval" and data == "packaged":
        return budget, [row["instruction"] for row in alpacaeval.load_alpacaeval_data(data).rows]
    return budget, [item["prompt"] for item in verifiable.load_items()] if name == "verifiable" else []
