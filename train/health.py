"""Guards against the two silent failures users of DPO trainers hit most (USER-NEEDS, TRL).

- A loss stuck at ln 2 with zero rewards: nothing is learned (every answer token masked, or
  chosen and rejected identical). ``StuckLossCallback`` warns after ``patience`` logged steps.
- A non-finite loss: ``check_finite`` stops the run at once and writes the offending batch's
  token ids and text to ``output_dir/nonfinite_batch.json`` so it can be inspected.
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


def check_finite(loss: torch.Tensor, pairs: list[dict], tokenizer, output_dir: str | Path) -> None:
    """Raise FloatingPointError on a NaN/inf loss, after saving the batch that produced it."""
    if bool(torch.isfinite(loss.detach()).all()):
        return
    path = Path(output_dir) / "nonfinite_batch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    dump = [{**pair, **{f"{key}_text": tokenizer.decode(pair[key]) for key in pair}} for pair in pairs]
    path.write_text(json.dumps({"loss": str(loss.detach().float().tolist()), "pairs": dump}, indent=1))
    raise FloatingPointError(f"non-finite loss {loss.item()}; the batch is saved in {path}")
