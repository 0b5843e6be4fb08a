"""Peak memory of a SAPO run against the sum of its parts.

The parts, in bytes of the model's parameters P: the policy (P), its gradients (P), AdamW's two
moments (2P), the EMA model (P), the DPO reference model (P; SAPO-ORPO has none: the EMA stands in),
and one batch's activations. The activations are measured on TRL's own DPO step over the same batch
(its loss path, its logits): its peak less its policy, reference, gradients and AdamW state. So the
overhead is what a SAPO run holds beyond a DPO run's memory and one more model: copies, the replay
buffer, the generation's KV cache, allocator slack.

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
from sapo.bench.step import StepBench, StepShape


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if device() == "cuda" else peak_rss_bytes()


def child(kind: str, model_path: str, shape: StepShape, steps: int = 2) -> dict:
    """Run ``steps`` optimizer steps of ``kind`` (``dpo``: TRL's DPO step; ``sapo``: SAPO's full step, of
    ``shape.sapo_loss``) in this process; its peak above the baseline after imports, before any model loads.
    Two steps: AdamW's state is allocated at the first optimizer step and held through the second."""
    baseline = _peak()
    bench = StepBench(model_path, shape, kinds=(kind,))
    for _ in range(steps):
        bench.step(kind)
    return {"peak_bytes": _peak() - baseline}


def measure(kind: str, model_path: str, shape: StepShape) -> int:
    """Peak bytes of ``kind`` above its baseline, measured in a child process."""
    argv = [sys.executable, "-m", "sapo.bench.memory", kind, model_path, json.dumps(dataclasses.asdict(shape))]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory bench {kind} failed:\n{done.stderr[-4000:]}")
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]
    if peak <= 0:  # a child that reads no growth measured nothing (as ru_maxrss did): never a number to judge
        raise RuntimeError(f"memory bench {kind}: the child's peak did not rise above its baseline ({peak} bytes)")
    return peak


def parameter_bytes(model_path: str) -> int:
    from sapo.bench.predict import local_model

    return sum(p.numel() for p in local_model(model_path, 4).parameters()) * 4  # float32, as the CPU runs train


def parts(param_bytes: int, activations: int, sapo_loss: str) -> dict[str, int]:
    """The sum the overhead is measured against (see the module docstring)."""
    found = {"policy": param_bytes, "gradients": param_bytes, "optimizer state (AdamW)": 2 * param_bytes,
             "EMA model": param_bytes, "one batch's activations": activations}  # fmt: skip
    if sapo_loss == "dpo":
        found["reference model"] = param_bytes
    return found


def activations(model_path: str, shape: StepShape) -> int:
    """One batch's activations: the peak of TRL's DPO step less what it holds for good (policy and reference,
    gradients, AdamW's two moments: 5P)."""
    held = 5 * parameter_bytes(model_path)
    found = measure("dpo", model_path, shape) - held
    if found <= 0:
        raise RuntimeError(f"memory bench: the DPO step's peak is below its {held} bytes of weights and state")
    return found


def overhead(model_path: str, shape: StepShape, activation_bytes: int) -> dict:
    """Peak of a SAPO run (``shape.sapo_loss``) over the sum of its parts: the ratio and each part."""
    found = parts(parameter_bytes(model_path), activation_bytes, shape.sapo_loss)
    peak = measure("sapo", model_path, shape)
    return {"peak_bytes": peak, "parts_bytes": found, "sum_bytes": sum(found.values()),
            "ratio": peak / sum(found.values())}  # fmt: skip


if __name__ == "__main__":
    kind, path, shape_json = sys.argv[1:4]
    print(json.dumps(child(kind, path, StepShape(**json.loads(shape_json)))))
