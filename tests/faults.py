"""The fault-injection suite's tools: real processes killed at chosen points, and the table of what survived.

Each fault test records its trials in the session's ``FaultTable`` (fixture ``fault_table`` in conftest.py):
fault, trials, survived, items lost, items duplicated. ``nox -s faults`` sets ``SAPO_FAULTS_OUT`` so the table is
printed and written to ``results/faults/`` (faults.json and README.md) when the session ends; the normal test run
runs the fast trials and writes nothing. ``SAPO_FAULT_TRIALS`` sets how many trials (seeds) each fault gets.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path


def full_suite() -> bool:
    """Whether this is ``nox -s faults`` (every fault, several trials) rather than the normal test run."""
    return bool(os.environ.get("SAPO_FAULT_TRIALS"))


def fault_trials(fast: int = 1) -> int:
    """Trials per fault: ``SAPO_FAULT_TRIALS`` under ``nox -s faults``, else ``fast``."""
    return int(os.environ.get("SAPO_FAULT_TRIALS", fast))


def full_suite_only():
    """A mark for the fault trials too slow for the normal test run."""
    import pytest

    return pytest.mark.skipif(not full_suite(), reason="fault trial for nox -s faults only")


INPUT_PREFIX = "bad input: "


@dataclass
class FaultRow:
    fault: str
    trials: int = 0
    survived: int = 0
    items_lost: int = 0
    items_duplicated: int = 0
    notes: list[str] = field(default_factory=list)


class FaultTable:
    """Trials by fault, in the order first seen."""

    def __init__(self):
        self.rows: dict[str, FaultRow] = {}

    def add(self, fault: str, *, survived: bool, lost: int = 0, duplicated: int = 0, note: str = "") -> None:
        row = self.rows.setdefault(fault, FaultRow(fault))
        row.trials += 1
        row.survived += int(survived)
        row.items_lost += lost
        row.items_duplicated += duplicated
        if note and note not in row.notes:
            row.notes.append(note)

    def markdown(self) -> str:
        """One row per fault; the many bad-input cases (one trial each) summed into one row, listed in ``cases()``."""
        lines = ["| fault | trials | survived | items lost | items duplicated |", "| :-- | --: | --: | --: | --: |"]
        inputs = [r for r in self.rows.values() if r.fault.startswith(INPUT_PREFIX)]
        rows = [r for r in self.rows.values() if not r.fault.startswith(INPUT_PREFIX)]
        if inputs:
            rows.append(FaultRow(f"bad input: {len(inputs)} cases (each: exit 2, file/row/field/limit named, no "
                                 "traceback, before any model loads where possible)", sum(r.trials for r in inputs),
                                 sum(r.survived for r in inputs)))  # fmt: skip
        for r in rows:
            lines.append(f"| {r.fault} | {r.trials} | {r.survived} | {r.items_lost} | {r.items_duplicated} |")
        return "\n".join(lines)

    def cases(self) -> str:
        """The bad-input cases, each with whether it gave the clear error."""
        inputs = [r for r in self.rows.values() if r.fault.startswith(INPUT_PREFIX)]
        return "\n".join(f"- {r.fault[len(INPUT_PREFIX) :]}: {r.survived}/{r.trials}" for r in inputs)

    def write(self, folder: Path) -> None:
        """faults.json (every row, with the machine and when) and README.md (the table and how it was made)."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "trials_per_fault": fault_trials(), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
        body = {"meta": meta, "rows": [asdict(r) for r in self.rows.values()]}
        (folder / "faults.json").write_text(json.dumps(body, indent=1) + "\n")
        notes = [f"- **{r.fault}**: {n}" for r in self.rows.values() for n in r.notes]
        (folder / "README.md").write_text(
            "# Faults: what `nox -s faults` injected and what survived\n\n"
            "Real processes and a real HTTP judge on 127.0.0.1; each trial is one seed / kill point. "
            "*Survived*: the run finished (or stopped with a clear message) and its output equals an "
            "uninterrupted run's. *Items lost / duplicated*: training steps, generated answers, judgments or "
            "scored items missing from or repeated in the final output (goal 0 for both).\n\n"
            f"{self.markdown()}\n\n"
            + ("## Notes\n\n" + "\n".join(notes) + "\n\n" if notes else "")
            + ("## Bad-input cases\n\n" + self.cases() + "\n\n" if self.cases() else "")
            + f"Measured with Python {meta['python']} on {meta['cpus']} CPUs ({meta['machine']}), "
            f"{meta['trials_per_fault']} trials per fault, finished {meta['finished']}.\n"
        )


# --------------------------------------------------------------------------- processes


def sapo_argv(*args: str) -> list[str]:
    """``sapo ARGS`` as a child process of this interpreter (the installed package, no PATH needed)."""
    return [sys.executable, "-m", "sapo.cli", *args]


@dataclass
class Outcome:
    returncode: int
    killed: bool
    output: str


def run_killed_when(argv: list[str], when: Callable[[], bool], *, cwd: Path, env: dict | None = None,
                    poll: float = 0.002, timeout: float = 600.0) -> Outcome:  # fmt: skip
    """Run ``argv``; SIGKILL it the first time ``when()`` is true (polled every ``poll`` s). The child's output
    goes to a file, never a pipe that could fill and stall it."""
    fd, name = tempfile.mkstemp(prefix="sapo-fault-child-", suffix=".log")  # never in the checkout
    os.close(fd)
    log = Path(name)
    with log.open("wb") as out:
        child = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})  # fmt: skip
        began, killed = time.monotonic(), False
        while child.poll() is None:
            if when():
                child.send_signal(signal.SIGKILL)
                killed = True
                break
            if time.monotonic() - began > timeout:
                child.kill()
                raise TimeoutError(f"{argv}: still running after {timeout} s")
            time.sleep(poll)
        child.wait()
    text = log.read_text(errors="replace")
    log.unlink()
    return Outcome(child.returncode, killed, text)


def never() -> bool:
    return False
