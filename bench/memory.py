"""Peak memory of a SAPO run against the sum of its parts.

The parts, in bytes of the model's parameters P: the policy (P), its gradients (P), AdamW's two
moments (2P), the EMA model (P), the DPO reference model (P; SAPO-ORPO has none: the EMA stands in),
and one batch's activations, measured alone (the policy's forward and backward over the batch's
chosen and rejected rows). The overhead is what the run holds beyond them: copies, caches, the
generation's KV cache, allocator slack.

Each measurement runs in a child process of its own (``python -m sapo.bench.memory KIND SHAPE``), whose
peak is read against its own baseline after imports: a process's peak never comes down, so two
measurements cannot share one. On a GPU the peak is ``torch.cuda.max_memory_allocated``; on a CPU the
peak resident set (which also counts what the allocator keeps but does not use).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import torch

from sapo.bench.measure import device, peak_rss_bytes
from sapo.bench.step import StepBench, StepShape, bench_examples


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if device() == "cuda" else peak_rss_bytes()


def _activations(model_path: str, shape: StepShape) -> None:
    """The policy's forward and backward over one batch of chosen and rejected rows, as DPO computes it."""
    from transformers import AutoModelForCausalLM

    from sapo.models import load_tokenizer

    examples = bench_examples(load_tokenizer(model_path), shape)
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device())
    model.train()
    rows = [e.prompt_ids + e.answer_ids for e in examples] * 2  # chosen and rejected: one length
    ids = torch.tensor(rows, device=device())
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    logps = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:, None]).sum()
    logps.backward()


def child(kind: str, model_path: str, shape: StepShape, steps: int = 2) -> dict:
    """Run ``kind`` (``activations``, ``sapo``) in this process; its peak above the baseline after imports."""
    baseline = _peak()
    if kind == "activations":
        _activations(model_path, shape)
    else:
        bench = StepBench(model_path, shape, kinds=("sapo",))
        for _ in range(steps):
            bench.step("sapo")
    return {"peak_bytes": _peak() - baseline}


def measure(kind: str, model_path: str, shape: StepShape) -> int:
    """Peak bytes of ``kind`` above its baseline, measured in a child process."""
    argv = [sys.executable, "-m", "sapo.bench.memory", kind, model_path, json.dumps(dataclasses.asdict(shape))]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory bench {kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def parameter_bytes(model_path: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    return sum(p.numel() for p in model.parameters()) * 4  # float32, as the CPU runs train


def parts(param_bytes: int, activations: int, sapo_loss: str) -> dict[str, int]:
    """The sum the overhead is measured against (see the module docstring)."""
    found = {"policy": param_bytes, "gradients": param_bytes, "optimizer state (AdamW)": 2 * param_bytes,
             "EMA model": param_bytes, "one batch's activations": activations}  # fmt: skip
    if sapo_loss == "dpo":
        found["reference model"] = param_bytes
    return found


def overhead(model_path: str, shape: StepShape) -> dict:
    """Peak of a SAPO run (``shape.sapo_loss``) over the sum of its parts: the ratio and each part."""
    activations = measure("activations", model_path, shape)
    found = parts(parameter_bytes(model_path), activations, shape.sapo_loss)
    peak = measure("sapo", model_path, shape)
    return {"peak_bytes": peak, "parts_bytes": found, "sum_bytes": sum(found.values()),
            "ratio": peak / sum(found.values())}  # fmt: skip


if __name__ == "__main__":
    kind, path, shape_json = sys.argv[1:4]
    print(json.dumps(child(kind, path, StepShape(**json.loads(shape_json)))))
