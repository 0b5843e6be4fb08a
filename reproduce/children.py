"""The child processes ``sapo reproduce`` (tables and sweeps) runs, and the folders they write.

Each training or evaluation is its own process: one model in memory at a time, and a crash in
one row does not take the others down. Paths are relative to the checkout the children run in.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sapo.errors import SapoError
from sapo.log import get_logger

logger = get_logger(__name__)

RUNS_ROOT = Path("runs")  # trained checkpoints (large; gitignored): runs/<scale>/<model>/<method>[+overrides],
# the recipes' own output_dir, so the LLaMA-3-8B chain finds its SFT stage where the recipes expect it
RESULTS_ROOT = Path("results/runs")  # results.json + upstream tools' files per run (gitignored)
RUN_STAMP = "reproduce_run.json"  # written into a run folder after training finished
EVAL_STAMP = "reproduce_eval.json"  # in a run's results folder: {benchmark: the sapo eval flags it was scored with}


@dataclass(frozen=True)
class Step:
    """One child process to run: its command line and what it is for."""

    what: str
    argv: list[str]

    def shell(self) -> str:
        return shlex.join(self.argv)


def run_child(step: Step, log: Path, cwd: Path) -> None:
    """Run a child process in ``cwd`` (recipes name paths relative to the checkout), its output going to the
    terminal and to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info(f"\n== {step.what}\n   {step.shell()}")
    began = time.perf_counter()
    # Line-buffered both ways (the child unbuffered, the log flushed per line): the log and the terminal follow a
    # long training as it goes, instead of showing minutes of progress at once when the child exits.
    # A progress bar's "\r" updates stay "\r" (newline=""), so they redraw in place on the terminal.
    with log.open("w", buffering=1, newline="") as handle:
        child = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=cwd,
                                 preexec_fn=die_with_parent)  # fmt: skip
        for line in io.TextIOWrapper(child.stdout, encoding="utf-8", errors="replace", newline=""):
            handle.write(line)
            if not line.lstrip().startswith(("{'", "Map", "Loading")) or "loss" in line:
                sys.stdout.write(line)
        if child.wait() != 0:
            raise SapoError(f"{step.what} failed (exit {child.returncode}); log: {log}")
    logger.info(f"   done in {time.perf_counter() - began:.0f} s")


def _libc_prctl():
    """Linux's prctl, looked up once in the parent: the child between fork and exec should only call it."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before it runs: ask Linux to send it SIGTERM when ``sapo reproduce`` dies. Otherwise a killed
    reproduce leaves its training running, orphaned, and the rerun finds the run folder locked by it (or, without
    the lock, both would write one folder). SIGTERM, not SIGKILL: a plain ``sapo`` child dies of it at once, and
    ``accelerate launch`` (torchrun's agent) takes it as the signal to stop its worker processes, which a SIGKILL
    would leave running. Elsewhere (no prctl) the child outlives its parent as before."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def drop_checkpoints(model_dir: Path) -> None:
    """Delete a finished run's intermediate checkpoints (they exist to resume a crash; each holds the
    optimizer state, EMA and reference: ~2.5 GB for the 135M model). The final model stays."""
    for folder in sorted(model_dir.glob("checkpoint-*")) + sorted(model_dir.glob("iteration-*/checkpoint-*")):
        shutil.rmtree(folder)


def override_flags(overrides: dict) -> list[str]:
    """``sapo train``'s flags for recipe overrides: ``--key value`` (booleans lowercase, lists as several values)."""

    def values(value) -> list[str]:
        if isinstance(value, bool):
            return [str(value).lower()]
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        return [str(value)]

    return [x for key, value in overrides.items() for x in (f"--{key}", *values(value))]
