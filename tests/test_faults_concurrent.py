"""Concurrent use, on real processes: a second `sapo train` or `sapo eval` pointed at an output folder another
process is writing stops at once with a clear error (exit 2, the folder and the holder named) instead of
interleaving its files with the first; the first finishes untouched, and a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from faults import never, run_killed_when, sapo_argv
from test_faults_kill import train_argv

from sapo.errors import OutputInUseError
from sapo.files import held_lock

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.faults


def test_two_trainings_into_one_folder(tiny_model_dir, tmp_path, fault_table):
    out = tmp_path / "run"
    # Long enough (40 steps) that the second run, importing torch and TRL, starts while the first still trains.
    first = subprocess.Popen(train_argv("sapo-dpo", tiny_model_dir, out, 0) + ["--max_steps", "40"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-1").is_dir() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start beside it"
        began = time.monotonic()
        second = subprocess.run(train_argv("sapo-dpo", tiny_model_dir, out, 0), cwd=REPO, capture_output=True,
                                text=True)  # fmt: skip
        took = time.monotonic() - began
    finally:
        assert first.wait(timeout=600) == 0
    clear = second.returncode == 2 and "in use by another sapo process (pid" in second.stderr
    fault_table.add(
        "two `sapo train` runs into one output folder", survived=clear and "Traceback" not in second.stderr
    )
    assert clear, second.stderr[-2000:]
    assert str(out) in second.stderr and "Traceback" not in second.stderr
    assert (out / "model.safetensors").is_file() and (out / "trainer_state.json").is_file()  # the first, whole
    print(f"second run refused after {took:.1f} s")


def test_eval_into_a_folder_in_use_and_after_its_holder_dies(tiny_model_dir, tmp_path, fault_table):
    out = tmp_path / "eval"
    argv = sapo_argv("eval", str(tiny_model_dir), "--suite", "verifiable", "--data", "fixtures", "--limit", "2",
                     "--max-new-tokens", "2", "--output", str(out))  # fmt: skip
    with held_lock(out, wait=False, what="evaluations"):
        refused = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    clear = refused.returncode == 2 and f"{out}: in use by another sapo process" in refused.stderr
    assert not (out / "results.json").exists()
    # A holder killed with SIGKILL: the kernel drops its lock, so the next run goes ahead. Killed once the lock file
    # names another pid than this test's (which held it above), so the child really held it.
    lock = out.parent / f".{out.name}.lock"

    def child_holds_it() -> bool:
        text = lock.read_text() if lock.is_file() else ""
        return text.startswith("pid ") and not text.startswith(f"pid {os.getpid()},")

    holder = run_killed_when(argv, child_holds_it, cwd=REPO)
    assert holder.killed
    after = run_killed_when(argv, never, cwd=REPO)
    fault_table.add("two `sapo eval` runs into one output folder", survived=clear and after.returncode == 0)
    assert clear, refused.stderr[-2000:]
    assert after.returncode == 0, after.output[-2000:]


def test_the_lock_names_its_holder(tmp_path):
    with held_lock(tmp_path / "x", wait=False):
        with pytest.raises(OutputInUseError, match=r"x: in use by another sapo process \(pid \d+, since"):
            with held_lock(tmp_path / "x", wait=False):
                pass
    with held_lock(tmp_path / "x", wait=False):  # released: free again
        pass
