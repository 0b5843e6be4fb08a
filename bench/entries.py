"""The measurements behind ``bench/goals.yaml``: each group runs once and yields the values of its entries.

A group returns ``{entry: {"value": ..., "ours": ..., "baseline": ..., "detail": ...}}``; ``report.py``
compares each value with its goal. Groups: ``step`` (SAPO's full step, its share generating, the step
without generation, FLOP/s and decoding bandwidth against this machine's limits), ``memory``, the
regression guards (``guards.py``), ``growth`` (``growth.py``) and ``reproduce``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from sapo.bench.measure import (
    best,
    device,
    matmul_flops_per_s,
    memory_bytes_per_s,
    spread,
    synchronize,
    take_turns,
)
from sapo.bench.step import StepBench, StepShape, decode_bytes, sampling_settings, training_flops
from sapo.generation import WEIGHT_MAJOR_ROWS, sample_continuations


@dataclass(frozen=True)
class BenchContext:
    """What every group is told: the model, how many turns, and whether to run the quick (test) sizes."""

    model: str  # embedded, tiny or a checkpoint folder
    model_path: str
    rounds: int = 2
    quick: bool = False
    output: str = "results/bench"  # where files a group writes (the growth plot) land

    def shape(self, **changes) -> StepShape:
        base = StepShape(segment=16, answer_tokens=48, prompt_tokens=16) if self.quick else StepShape()
        return replace(base, **changes)


def decode_bytes_per_s(model, contexts: list[list[int]], new_tokens: int, rounds: int) -> tuple[float, float]:
    """Bytes a decoding step reads per second, and seconds per decoding step: generating ``new_tokens`` minus
    generating 1 (the prefill), over the ``new_tokens - 1`` decoding steps; sampled as SAPO samples."""
    kwargs = dict(pad_token_id=0, eos_token_id=None, **sampling_settings())

    def generate(budget: int) -> None:
        sample_continuations(model, contexts, budget, generator=torch.Generator().manual_seed(0), **kwargs)
        synchronize()

    times = take_turns({"full": partial(generate, new_tokens), "prefill": partial(generate, 1)}, rounds)
    per_step = (best(times["full"]) - best(times["prefill"])) / (new_tokens - 1)
    mean_context = max(map(len, contexts)) + new_tokens // 2
    return decode_bytes(model, len(contexts), mean_context) / per_step, per_step


def step_group(ctx: BenchContext) -> dict[str, dict]:
    """SAPO's full step against TRL's DPO step, and both against this machine's matmul and copy speeds."""
    shape = ctx.shape()
    bench = StepBench(ctx.model_path, shape)
    sides = {kind: partial(bench.step, kind) for kind in bench.trainers}
    for run in sides.values():  # warm-up (take_turns' own would count generation in the share)
        run()
    sapo, fast = bench.trainers["sapo"], bench.trainers.get("sapo_fast")  # sapo_fast: CPU only
    for trainer in (sapo, fast):
        if trainer is not None:
            trainer.generation_seconds = 0.0
    times = take_turns(sides, ctx.rounds, warmup=False)
    full, no_gen, dpo = best(times["sapo"]), best(times["sapo_no_gen"]), best(times["dpo"])
    share = sapo.generation_seconds / sum(times["sapo"])  # over all timed turns: generation is not timed per turn
    noise = f"turn spread {max(spread(t) for t in times.values()):.0%}"
    where = (f"batch {shape.batch}, prompt {shape.prompt_tokens} + answer {shape.answer_tokens} tokens, "
             f"segment {shape.segment}")  # fmt: skip
    config = bench.model.config
    flops = training_flops(config, shape.batch, shape.max_length, reference=True)
    matmul = matmul_flops_per_s()
    contexts = [p + a[:32] for p, a in zip(*bench.batches["sapo"].values(), strict=True)]
    decode, per_token = decode_bytes_per_s(sapo.ema_model, contexts, shape.segment, ctx.rounds)
    memory, kernel = memory_bytes_per_s()
    found = {}
    if fast is not None:
        full_fast = best(times["sapo_fast"])
        speedup = sapo.generation_seconds / fast.generation_seconds  # the same number of timed turns each
        found["full_step_fast_decoding"] = {
            "ours": full_fast, "baseline": dpo, "value": full_fast / dpo,
            "detail": f"{full_fast:.2f} s vs {dpo:.2f} s; cpu_fast_decoding (weight-first products of "
                      f"{WEIGHT_MAJOR_ROWS.start}-{WEIGHT_MAJOR_ROWS.stop - 1} rows); "
                      f"its generation {speedup:.2f}x faster than the default's"}  # fmt: skip
    return found | {
        "full_step": {"ours": full, "baseline": dpo, "value": full / dpo,
                      "detail": f"{full:.2f} s vs {dpo:.2f} s; {where}; {noise}"},
        "generation_share": {"value": share, "detail": f"{sapo.generation_seconds / len(times['sapo']):.2f} s of "
                             f"{sum(times['sapo']) / len(times['sapo']):.2f} s per step (mean of {len(times['sapo'])} "
                             f"turns) writing {shape.batch} x {shape.segment} tokens"},
        "step_no_generation": {"ours": no_gen, "baseline": dpo, "value": no_gen / dpo,
                               "detail": f"{no_gen:.2f} s vs {dpo:.2f} s; {where}"},
        "training_flops": {"ours": flops / no_gen, "baseline": matmul, "value": flops / no_gen / matmul,
                           "detail": f"{flops / no_gen / 1e9:.1f} GFLOP/s ({flops / 1e9:.0f} GFLOP counted) vs "
                           f"{matmul / 1e9:.1f} GFLOP/s (2048^2 matmul)"},
        "decode_bandwidth": {"ours": decode, "baseline": memory, "value": decode / memory,
                             "detail": f"{decode / 1e9:.2f} GB/s ({per_token * 1e3:.0f} ms per decoding step of "
                             f"{shape.batch} rows) vs {memory / 1e9:.2f} GB/s (512 MiB {kernel}, STREAM-style)"},
    }  # fmt: skip


def memory_group(ctx: BenchContext) -> dict[str, dict]:
    from sapo.bench.memory import activations, overhead

    found = {}
    activation_bytes = activations(ctx.model_path, ctx.shape())  # one batch shape for both losses
    for loss in ("dpo", "orpo"):
        shape = ctx.shape(sapo_loss=loss)
        result = overhead(ctx.model_path, shape, activation_bytes)
        parts = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in result["parts_bytes"].items())
        found[f"memory_sapo_{loss}"] = {
            "ours": result["peak_bytes"], "baseline": result["sum_bytes"], "value": result["ratio"],
            "detail": f"peak {result['peak_bytes'] / 2**20:.0f} MiB vs parts {result['sum_bytes'] / 2**20:.0f} MiB "
                      f"({parts}); {'GPU allocated' if device() == 'cuda' else 'CPU resident set'}"}  # fmt: skip
    return found


def step_seconds(log: str) -> dict[str, float]:
    """``{step: seconds}`` from ``sapo reproduce``'s output: each child step's ``== what`` line and the ``done in N
    s`` line after it (``reproduce/children.run_child``)."""
    found, current = {}, None
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("== "):
            current = line[3:]
        elif current and line.startswith("done in ") and line.endswith(" s"):
            found[current] = float(line[len("done in ") : -2])
            current = None
    return found


def reproduce_group(ctx: BenchContext) -> dict[str, dict]:
    """Wall time of ``sapo reproduce table2`` at the embedded scale from nothing: a fresh folder holding only
    recipes/ and results/paper/ of this checkout (so no finished run is reused), this machine's model cache; with
    each child step's seconds (training and evaluation of each row), read from its output."""
    from sapo.reproduce.paper_numbers import repository_root

    root = repository_root()
    with tempfile.TemporaryDirectory(prefix="sapo-bench-reproduce-") as tmp:
        shutil.copytree(root / "recipes", Path(tmp) / "recipes")
        shutil.copytree(root / "results" / "paper", Path(tmp) / "results" / "paper")
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sapo.cli", "reproduce", "table2"], cwd=tmp, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})  # fmt: skip
        seconds = time.perf_counter() - began
    steps = step_seconds(done.stdout)
    training = sum(v for k, v in steps.items() if k.startswith("train "))
    evaluation = sum(v for k, v in steps.items() if k.startswith("evaluate "))
    return {"reproduce_table2": {"value": seconds, "steps_s": steps,
                                 "detail": f"{seconds / 60:.1f} min from a fresh folder: training {training:.0f} s, "
                                 f"evaluation {evaluation:.0f} s over {len(steps)} steps"}}  # fmt: skip
