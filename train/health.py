"""Guards against the two silent failures users of DPO trainers hit most (USER-NEEDS, TRL).

- A loss stuck at ln 2 with zero rewards: nothing is learned (every answer token masked, or
  chosen and rejected identical). ``StuckLossCallback`` warns after ``patience`` logged steps.
- A non-finite loss: ``check_finite`` stops the run at once, before its backward pass, and writes
  the offending batch's token ids and text to ``output_dir/nonfinite_batch.json``.
- Non-finite weights after an optimizer step (an inf gradient, a learning rate far too high):
  ``FiniteWeightsCallback`` stops the run in ``on_step_end``, before the step can be saved.
Either way no checkpoint holds the bad step: the newest checkpoint is the last good one.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

LN2 = math.log(2.0)


class StuckLossCallback(TrainerCallback):
    """Warn when the logged loss stays within ``tolerance`` of ln 2 while the rewards are zero."""

    def __init__(self, patience: int = 10, tolerance: float = 1e-3):
        self.patience, self.tolerance = patience, tolerance
        self.stuck = 0
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        rewards = [abs(logs.get(k, 0.0)) for k in ("rewards/chosen", "rewards/rejected")]
        if abs(logs["loss"] - LN2) < self.tolerance and max(rewards) < self.tolerance:
            self.stuck += 1
        else:
            self.stuck = 0
        if self.stuck >= self.patience and not self.warned:
            self.warned = True
            warnings.warn(
                f"loss has stayed at ln 2 = {LN2:.4f} with zero rewards for {self.stuck} logged steps (step "
                f"{state.global_step}): the model is not learning. Usual causes: every answer token masked or "
                "truncated away (run `sapo data audit`), chosen and rejected identical, or a learning rate of 0.",
                RuntimeWarning,
                stacklevel=2,
            )


def check_finite(loss: torch.Tensor, pairs: list[dict], tokenizer, output_dir: str | Path, step: int) -> None:
    """Raise FloatingPointError on a NaN/inf loss at optimizer step ``step``, after saving its batch."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    path = Path(output_dir) / "nonfinite_batch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    dump = [{**pair, **{f"{key}_text": tokenizer.decode(pair[key]) for key in pair}} for pair in pairs]
    path.write_text(json.dumps({"step": step, "loss": str(loss.detach().float().tolist()), "pairs": dump}, indent=1))
    raise FloatingPointError(
        f"step {step}: non-finite loss {loss.detach().float().tolist()}; training stopped before this step changed "
        f"the weights, so the newest checkpoint is the last good one. The batch is saved in {path}"
    )


class FiniteWeightsCallback(TrainerCallback):
    """Stop the run when an optimizer step leaves a non-finite weight, before that step is saved or copied
    into the EMA (``on_step_end`` runs before HF saves a checkpoint). On one process's parameters: the same
    on every rank under DDP; under ZeRO-3 a bad global gradient norm spoils every shard."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        bad = first_non_finite(model)
        if bad is not None:
            raise FloatingPointError(
                f"step {state.global_step}: the optimizer step left non-finite weights ({bad}); training stopped "
                "before saving it, so the newest checkpoint is the last good one. Lower the learning rate or "
                "check max_grad_norm."
            )


def first_non_finite(model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or inf, else None. Max and min propagate both, so no
    parameter-sized temporary is made, and the device is synchronized once."""
    named = [(name, getattr(p, "ds_tensor", p.detach())) for name, p in model.named_parameters()]  # ZeRO-3: a shard
    named = [(name, t) for name, t in named if t.numel()]
    if not named:
        return None
    device = named[0][1].device
    extremes = torch.stack([torch.stack([t.amax(), t.amin()]).float().to(device) for _, t in named])
    finite = torch.isfinite(extremes).all(dim=1).tolist()
    return next((name for (name, _), ok in zip(named, finite, strict=True) if not ok), None)
