"""Checkpoints on disk: which are complete, where a rerun resumes, which rotation may delete, loading frozen weights.

A checkpoint folder is complete when the last file its trainer writes is there: Hugging Face's Trainer writes
``trainer_state.json`` after the weights, optimizer, scheduler and RNG states; SAPO adds the EMA and reference
models, the replay buffer and the generator RNG, and writes ``sapo_state.json`` last. A kill inside a checkpoint
write leaves a folder without its marker.

``resume_from_checkpoint``:
- a folder: that checkpoint (the trainer refuses it if incomplete);
- ``true``: the newest complete checkpoint; an error when there is none (the user asked to resume);
- ``auto``: the newest complete checkpoint, else a start from the beginning. What ``sapo reproduce`` passes to a
  run folder left by an interrupted run: a run killed inside its first checkpoint write starts clean instead of
  failing on every rerun.
Incomplete checkpoint folders are deleted before training (main process), so the rerun writes them whole.

HF's own rotation (``save_total_limit``) runs inside its save, before SAPO's mark: it keeps the newest folder,
which is not yet complete, and may delete the last complete one. ``SAPOTrainer`` holds it off and calls
``rotate_checkpoints`` here once the new checkpoint is complete.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch

from sapo.errors import CheckpointError
from sapo.log import get_logger

logger = get_logger(__name__)
SAPO_STATE = "sapo_state.json"  # written last into a checkpoint: its presence marks the checkpoint complete
SAPO_WRITING = ".sapo-checkpoint"  # written first into a SAPO checkpoint: an incomplete folder without it is not ours
TRAINER_STATE = "trainer_state.json"  # Hugging Face's last file in a checkpoint
AUTO = "auto"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest step first."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(folders, key=lambda p: int(p.name.split("-")[-1]))


def complete_checkpoints(output_dir: str | Path, marker: str = TRAINER_STATE) -> list[Path]:
    """The checkpoints whose ``marker`` file (written last) is present and whole, oldest first. HF writes
    ``trainer_state.json`` in place, so a kill inside that write leaves it present but cut: it must parse."""
    return [f for f in checkpoints(output_dir) if _whole_json(f / marker)]


def _whole_json(path: Path) -> bool:
    import json

    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def _is_ours(folder: Path, marker: str) -> bool:
    """Whether an incomplete ``folder`` was being written by this kind of run. A SAPO run finding a checkpoint
    without ``sapo_state.json`` but with no SAPO start mark either was killed before the mark (no HF state either)
    or holds another method's checkpoint (DPO's, complete by HF's rule): never delete that one."""
    if marker != SAPO_STATE or (folder / SAPO_WRITING).is_file():
        return True
    return not _whole_json(folder / TRAINER_STATE)


def resume_point(output_dir: str | Path, requested, marker: str = TRAINER_STATE, *,
                 main_process: bool = True) -> str | None:  # fmt: skip
    """What to pass to ``Trainer.train(resume_from_checkpoint=...)`` for the user's ``requested`` value."""
    if requested in (None, False, ""):
        return None
    if requested is not True and requested != AUTO:
        return str(requested)  # an explicit folder: the trainer checks it
    complete = complete_checkpoints(output_dir, marker)
    newest = complete[-1] if complete else None
    incomplete = [f for f in checkpoints(output_dir) if f not in complete]
    foreign = [str(f) for f in incomplete if not _is_ours(f, marker)]
    if foreign:
        raise CheckpointError(f"{output_dir}: {', '.join(foreign)} hold(s) another method's complete checkpoint (no "
                              f"{marker}): train into another output_dir, or delete them")  # fmt: skip
    if main_process:
        for folder in incomplete:
            logger.warning(f"{folder}: incomplete checkpoint (no whole {marker}: interrupted while written); deleted")
            shutil.rmtree(folder, ignore_errors=True)
    if newest is None:
        if requested is True:
            raise CheckpointError(f"{output_dir}: no complete checkpoint to resume from")
        logger.info(f"{output_dir}: no complete checkpoint; training from the start")
        return None
    logger.info(f"resuming from {newest}")
    return str(newest)


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
