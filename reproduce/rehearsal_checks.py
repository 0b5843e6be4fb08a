"""What the rehearsal measures and checks: each child's seconds and memory, and what its files and log show.

Kept apart from the plan and driver (``rehearse.py``): these read a finished step's output (a trained folder, a
results.json, a log) and say what it proves, so each can be tested on its own.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sapo.log import get_logger
from sapo.procmem import memory_status

logger = get_logger(__name__)


@dataclass
class StepResult:
    """One child process of the rehearsal and what it showed."""

    name: str
    kind: str  # train, eval, audit, plan, check
    argv: list[str]
    processes: int = 1
    engine: str = "plain"
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    returncode: int | None = None
    checks: dict = field(default_factory=dict)
    cuts: dict = field(default_factory=dict)
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.checks.get("failed")


def run_child(result: StepResult, cwd: Path, env: dict, logs: Path) -> StepResult:
    """Run ``result.argv``; record exit code, seconds and peak memory (``memory_peaks``)."""
    log = logs / f"{result.name.replace('/', '_').replace(' ', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info(f"== {result.name}\n   {shlex.join(result.argv)}")
    began = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(result.argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        largest, total = memory_peaks(child)
    result.seconds = round(time.perf_counter() - began, 1)
    result.peak_rss_mib, result.checks["peak_total_rss_mib"] = largest, total
    result.returncode = child.returncode
    result.log = str(log)
    logger.info(f"   exit {result.returncode} in {result.seconds:.0f} s, peak {largest:.0f} MiB")
    if result.returncode != 0:
        logger.warning("   last lines:\n" + "".join(log.read_text().splitlines(keepends=True)[-15:]))
    return result


def memory_peaks(child: subprocess.Popen, every: float = 0.5) -> tuple[float, float]:
    """Wait for ``child``; return (peak resident MiB of its largest process, peak sum over its process tree).

    Sampled from /proc every ``every`` seconds: each process's VmHWM (its own high-water mark, reset by exec, so
    unlike ``ru_maxrss`` it does not count the pages a child inherits from this large parent at fork) and VmRSS."""
    import psutil

    largest = total = 0.0
    while child.poll() is None:
        try:
            tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        now = 0.0
        for proc in tree:
            status = {key: value / 2**20 for key, value in memory_status(proc.pid).items()}  # MiB
            largest, now = max(largest, status.get("VmHWM", 0.0)), now + status.get("VmRSS", 0.0)
        total = max(total, now)
        time.sleep(every)
    return round(largest, 1), round(total, 1)


def check_trained(folder: Path, start: Path | None = None) -> dict:
    """What a user would check first: the folder loads with plain from_pretrained, training moved the weights
    away from ``start`` (the model it began from), and what training logged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checks: dict = {}
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)  # plain, but never a pickle
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        return {"failed": f"does not load with from_pretrained: {err}"}
    checks["class"] = type(model).__name__
    checks["vocab"] = model.get_input_embeddings().weight.shape[0]
    checks["tokenizer_len"] = len(tokenizer)
    checks["eos"] = f"{tokenizer.eos_token} ({tokenizer.eos_token_id})"
    checks["safetensors"] = sorted(p.name for p in folder.glob("*.safetensors"))
    if checks["vocab"] < len(tokenizer):
        checks["failed"] = f"embeddings ({checks['vocab']}) smaller than the tokenizer ({len(tokenizer)})"
    states = [folder / "trainer_state.json", *sorted(folder.glob("iteration-*/trainer_state.json"))]
    history = [row for s in states if s.is_file() for row in json.loads(s.read_text())["log_history"]]
    losses = [row["loss"] for row in history if "loss" in row]
    if losses:
        checks["losses"] = [round(float(v), 4) for v in losses]
    early = [float(row["sapo/ended_early"]) for row in history if "sapo/ended_early" in row]
    if early:
        checks["sapo_ended_early"] = [round(v, 3) for v in early]
    checks["spin_iterations"] = len(list(folder.glob("iteration-*/manifest.json"))) or None
    if start is not None:
        changed, compared = tensors_changed(start, model)
        saved = next(iter(model.state_dict().values())).dtype
        checks["tensors_changed"] = f"{changed}/{compared}"
        if saved in (torch.bfloat16, torch.float16) and changed < compared:
            # ZeRO-3 saves the 16-bit weights (zero3_save_16bit_model, as the reference does): a step smaller than
            # the format's resolution at the weight (RMSNorm weights near 1.0: 2**-7 in bf16) rounds away on save
            checks["tensors_changed"] += f" (saved in {str(saved).removeprefix('torch.')}: smaller steps round away)"
            if changed == 0:
                checks["failed"] = f"no weight tensor differs from {start.name}"
        elif changed < compared:
            checks["failed"] = f"only {changed} of {compared} weight tensors differ from {start.name}"
    return {k: v for k, v in checks.items() if v is not None}


def tensors_changed(start: Path, model) -> tuple[int, int]:
    """(changed, compared): weight tensors of ``model`` that differ from the same-named, same-shaped ones saved in
    the ``start`` folder (a resized embedding is compared on its original rows)."""
    import torch
    from safetensors.torch import load_file

    before = {k: v for f in sorted(start.glob("*.safetensors")) for k, v in load_file(f).items()}
    changed = compared = 0
    for name, value in model.state_dict().items():
        old = before.get(name)
        if old is None or old.dim() != value.dim():
            continue
        rows = value[: old.shape[0]] if old.shape[1:] == value.shape[1:] else None
        if rows is None or rows.shape != old.shape:
            continue
        compared += 1
        changed += not torch.equal(rows.float(), old.float())
    return changed, compared


def engine_used(log: Path) -> str:
    """The engine the run reported (``engine: ...``, logged by ``sapo train`` before training starts)."""
    lines = [line.split("engine: ", 1)[1].strip() for line in log.read_text().splitlines() if "engine: " in line]
    return "; ".join(dict.fromkeys(lines)) or "not reported"


def check_results(folder: Path, suite: str) -> dict:
    path = folder / "results.json"
    if not path.is_file():
        return {"failed": f"no {path}"}
    body = json.loads(path.read_text())
    benchmarks = {name: ("skipped" not in entry) for name, entry in body["benchmarks"].items()}
    checks = {"benchmarks": sorted(name for name, done in benchmarks.items() if done),
              "repo_id": body["model"].get("repo_id"), "revision": body["model"].get("revision"),
              "weights_sha256": (body["model"].get("weights_sha256") or "")[:12] or None}  # fmt: skip
    wanted = set(suite.split(","))
    if not wanted <= set(checks["benchmarks"]) or not checks["weights_sha256"]:
        checks["failed"] = f"results.json lacks {sorted(wanted - set(checks['benchmarks']))} or a weights hash"
    return checks


def compare_with_ddp(step: StepResult, ddp_name: str, results: list[StepResult]) -> None:
    """A sharded run must log what the DDP run ``ddp_name`` of the same recipe and seeds logged (same sampled
    segments, same log-probabilities up to reduction order): else its EMA or reference copies are not the policy's."""
    ddp = next((r for r in results if r.name == ddp_name and r.ok), None)
    if ddp is None or not step.ok:
        return
    ours, theirs = logged(Path(step.log)), logged(Path(ddp.log))
    if not ours or len(ours) != len(theirs):
        step.checks["failed"] = f"logged {len(ours)} steps, the DDP run {len(theirs)}"
        return
    keys = ["loss", "sapo/segment_len", "logps/chosen", "logps/rejected"]
    if "spin" in step.name:
        # SPIN's rejected answers are greedy decodes of the opponent: on random weights nearly every next-token
        # choice is a near-tie, which ZeRO-3's bf16 weights and DDP's fp32 ones break differently
        keys.remove("logps/rejected")
        step.checks["compared"] = "loss, logps/chosen (greedy decodes of random weights differ in bf16)"
    worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-6) for a, b in zip(ours, theirs, strict=True) for k in keys
                if k in a and k in b)  # fmt: skip
    step.checks["max_relative_difference_vs_ddp"] = round(worst, 5)
    if worst > 0.01:
        step.checks["failed"] = f"logged values differ from the DDP run by {worst:.3%} (more than 1%)"


def logged(log: Path) -> list[dict]:
    """The per-step dicts a Trainer printed (``{'loss': '0.69', ...}``), as floats, main process only."""
    import ast

    rows = []
    for line in log.read_text().splitlines():
        for chunk in line.split("{'loss'")[1:]:
            body = ast.literal_eval("{'loss'" + chunk[: chunk.index("}") + 1])
            rows.append({k: float(v) for k, v in body.items() if _is_number(v)})
    return rows


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


SPIECE_SPACE = "\u2581"  # SentencePiece's word-start mark


def compare_prompts(training: dict, as_sent: dict, as_trained: dict) -> tuple[list[str], list[str]]:
    """(declared, undeclared) differences between a training row's prompt and what the benchmarks feed for it.
    Each declared one is a named field or a documented behaviour; anything else is undeclared."""
    layout, prompt, answer = training["layout"], training["prompt_ids"], training["answer_ids"]
    declared, undeclared = [], []
    if as_trained is not as_sent and as_trained["mtbench"] != as_sent["mtbench"]:
        declared.append("system_prompt: training adds a system message the benchmarks do not send")
    bench, lm_eval = as_trained["mtbench"], as_trained["lm_eval"]
    if lm_eval != bench:
        if lm_eval == bench[1:]:
            declared.append("lm-eval sends no BOS before a text that starts with the bos_token string")
        else:
            undeclared.append(f"lm-eval and MT-Bench prompts differ from token {_first_difference(lm_eval, bench)}")
    expected, tokens = bench, as_trained["tokens"]["mtbench"]
    if not layout["prompt_bos"] and expected[:1] == [as_trained.get("bos_id")] != prompt[:1]:
        expected, tokens = expected[1:], tokens[1:]
        declared.append("prompt_bos: false: training puts no BOS before the prompt")
    if layout["prompt_split"] == "reference" and expected[: len(prompt)] == prompt != expected:
        header, answer_tokens = tokens[len(prompt) :], training.get("answer_tokens", [])
        if answer[: len(header)] == expected[len(prompt) :]:
            expected, tokens = prompt, tokens[: len(prompt)]
            declared.append("prompt_split: reference: the generation prompt is the start of the answer")
        elif answer_tokens[:1] == [SPIECE_SPACE + header[0]] and answer_tokens[1 : len(header)] == header[1:]:
            expected, tokens = prompt, tokens[: len(prompt)]
            declared.append("prompt_split: reference: the answer is tokenized alone, so a SentencePiece tokenizer "
                            f"starts its header with {answer_tokens[0]!r} where generation continues with "
                            f"{header[0]!r} (alignment/utils.py:154-155)")  # fmt: skip
    if prompt != expected:
        at = _first_difference(prompt, expected)
        undeclared.append(f"training prompt and MT-Bench/AlpacaEval prompt differ from token {at}: "
                          f"{training['tokens'][at : at + 4]} vs {tokens[at : at + 4]}")  # fmt: skip
    return declared, undeclared


def _first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def check_parity(audit: StepResult, prompts: StepResult, folder: Path) -> dict:
    rows = json.loads((folder / "training.json").read_text())
    lines = [line for line in Path(prompts.log).read_text().splitlines() if line.startswith("[{")]
    if prompts.returncode != 0 or not lines:
        return {"failed": "no benchmark prompts"}
    asked = json.loads(lines[-1])
    declared, undeclared = set(), []
    for i, row in enumerate(rows):
        row["tokens"] = _tokens_of(row["prompt_ids"], asked[2 * i + 1])
        d, u = compare_prompts(row, asked[2 * i], asked[2 * i + 1])
        declared.update(d)
        undeclared += [f"{row['where']}: {x}" for x in u]
    checks = {"rows": len(rows), "declared": sorted(declared), "same": not declared and not undeclared}
    if undeclared:
        checks["failed"] = "; ".join(undeclared)
    audit.checks["rows"] = len(rows)
    prompts.checks.update(checks)
    return checks


def _tokens_of(ids: list[int], bench: dict) -> list[str]:
    """Token strings of training ids, from the benchmark side's id -> string pairs (one tokenizer)."""
    vocab = {}
    for name in ("mtbench", "lm_eval"):
        vocab.update(zip(bench[name], bench["tokens"][name], strict=True))
    return [vocab.get(i, str(i)) for i in ids]


def check_prefetch(result: StepResult) -> dict:
    lines = Path(result.log).read_text().splitlines()
    found = [line.split()[0] + " " + line.split()[1] for line in lines if line.startswith(("model ", "dataset "))]
    return {"found": found} if result.returncode == 0 else {"failed": "a need is missing from the cache"}


def check_paper_plan(result: StepResult) -> dict:
    text = Path(result.log).read_text()
    launches = text.count("accelerate launch --config_file recipes/accelerate_configs/zero3.yaml")
    checks = {"train_commands": launches, "eval_commands": text.count("sapo eval "),
              "says_why": "cannot run here" in text}  # fmt: skip
    if result.returncode == 2 and checks["says_why"] and launches:
        result.returncode = 0  # the expected outcome: a refusal with the plan
    else:
        checks["failed"] = "expected exit 2, the reasons and the paper-scale commands"
    return checks
