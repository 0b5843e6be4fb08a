"""Where an interrupted run continues: the newest *complete* checkpoint, never a half-written one.

A checkpoint folder is complete when the last file its trainer writes is there: Hugging Face's Trainer writes
``trainer_state.json`` after the weights, optimizer, scheduler and RNG states; SAPO writes ``sapo_state.json``
after its EMA and reference models, replay buffer and generator states (``sapo.train.trainer``). A kill inside a
checkpoint write leaves a folder without its marker.

``resume_from_checkpoint``:
- a folder: that checkpoint (the trainer refuses it if incomplete);
- ``true``: the newest complete checkpoint; an error when there is none (the user asked to resume);
- ``auto``: the newest complete checkpoint, else a start from the beginning. What ``sapo reproduce`` passes to a
  run folder left by an interrupted run: a run killed inside its first checkpoint write starts clean instead of
  failing on every rerun.
Incomplete checkpoint folders are deleted before training (main process), so the rerun writes them whole.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sapo.errors import CheckpointError
from sapo.log import get_logger

logger = get_logger(__name__)
TRAINER_STATE = "trainer_state.json"  # Hugging Face's last file in a checkpoint
AUTO = "auto"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders of ``output_dir``, oldest step first."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(folders, key=lambda p: int(p.name.split("-")[-1]))


def complete_checkpoints(output_dir: str | Path, marker: str = TRAINER_STATE) -> list[Path]:
    """The checkpoints whose ``marker`` file (written last) is present, oldest first."""
    return [f for f in checkpoints(output_dir) if (f / marker).is_file()]


def resume_point(output_dir: str | Path, requested, marker: str = TRAINER_STATE, *,
                 main_process: bool = True) -> str | None:  # fmt: skip
    """What to pass to ``Trainer.train(resume_from_checkpoint=...)`` for the user's ``requested`` value."""
    if requested in (None, False, ""):
        return None
    if requested is not True and requested != AUTO:
        return str(requested)  # an explicit folder: the trainer checks it
    complete = complete_checkpoints(output_dir, marker)
    newest = complete[-1] if complete else None
    if main_process:
        for folder in checkpoints(output_dir):
            if not (folder / marker).is_file():
                logger.warning(f"{folder}: incomplete checkpoint (no {marker}: interrupted while written); deleted")
                shutil.rmtree(folder, ignore_errors=True)
    if newest is None:
        if requested is True:
            raise CheckpointError(f"{output_dir}: no complete checkpoint to resume from")
        logger.info(f"{output_dir}: no complete checkpoint; training from the start")
        return None
    logger.info(f"resuming from {newest}")
    return str(newest)
