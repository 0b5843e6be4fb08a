"""SAPO checkpoints on disk: which are complete, which rotation may delete, and loading frozen weights.

A SAPO checkpoint is HF Trainer's ``checkpoint-N`` folder plus the EMA and reference models, the replay buffer
and the generator RNG; ``sapo_state.json`` is written last and marks it complete. HF's own rotation
(``save_total_limit``) runs inside its save, before that mark: it keeps the newest folder, which is not yet
complete, and may delete the last complete one. ``SAPOTrainer`` holds it off and calls
``rotate_checkpoints`` here once the new checkpoint is complete.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch

from sapo.train.resume import checkpoints, complete_checkpoints

SAPO_STATE = "sapo_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete


def latest_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint-N folder whose SAPO state was fully written, or None."""
    complete = complete_checkpoints(output_dir, SAPO_STATE)
    return str(complete[-1]) if complete else None


def rotate_checkpoints(output_dir: str | Path, limit: int | None, best: str | None = None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``limit``; never the newest complete one (what a resume takes) nor
    ``best`` (``load_best_model_at_end``). Returns the folders deleted."""
    if not limit or limit <= 0:
        return []
    folders = checkpoints(output_dir)
    newest = latest_complete_checkpoint(output_dir)
    protected = {Path(p).resolve() for p in (newest, best) if p}
    deleted = []
    for folder in folders:
        if len(folders) - len(deleted) <= max(limit, len(protected)):
            break
        if folder.resolve() not in protected:
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
    return deleted


def load_weights(module: torch.nn.Module, folder: Path, deepspeed: bool = False) -> None:
    """Load a safetensors checkpoint written by save_pretrained into an existing module, in place
    (parameter storage is kept, so tensors paired for the EMA stay valid)."""
    from safetensors.torch import load_file

    gathered = contextlib.nullcontext()
    if deepspeed and any(hasattr(p, "ds_tensor") for p in module.parameters()):  # ZeRO-3: load whole, on rank 0
        import deepspeed as ds

        gathered = ds.zero.GatheredParameters(list(module.parameters()), modifier_rank=0)
    device = next(module.parameters()).device
    with gathered:
        missing, unexpected = module.load_state_dict(load_file(folder / "model.safetensors", device=str(device)),
                                                     strict=False)  # fmt: skip
    tied = {name for name in missing if module.get_output_embeddings() is not None and name.startswith("lm_head")}
    if unexpected or set(missing) - tied:
        raise ValueError(f"{folder}: weights do not match the model (missing {missing}, unexpected {unexpected})")
