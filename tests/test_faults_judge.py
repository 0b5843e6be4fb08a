"""Crash while judging, on real processes: a process appending judgments to the judge cache is SIGKILLed at a
random point. Every judgment whose ``put`` returned must be read back, and the next run's rows must land on lines
of their own after whatever the kill cut."""

from __future__ import annotations

import json
import random
import textwrap

import pytest
from faults import fault_trials, run_killed_when

from sapo.evaluate.judge import JudgmentCache

pytestmark = pytest.mark.faults

# Rows of ~40 kB of two-byte characters, so a kill may land while one is being written. (Each row goes out in one
# write() call: in 20 trials none was cut. tests/test_eval_judge.py cuts rows mid-JSON and mid-character by hand.)
WRITER = textwrap.dedent("""
    import sys
    from sapo.evaluate.judge import JudgmentCache

    cache = JudgmentCache(sys.argv[1])
    for i in range(100000):
        cache.put({"key": f"k{i}", "content": "\\u00e9" * 20000})
        print(f"put k{i}", flush=True)
""")


@pytest.mark.parametrize("trial", range(fault_trials()))
def test_judge_cache_killed_while_appending_loses_no_returned_put(trial, tmp_path, fault_table):
    import sys

    path = tmp_path / "judge_cache.jsonl"
    rows_before_kill = random.Random(trial).randint(3, 40)

    def enough_rows() -> bool:
        return path.is_file() and path.stat().st_size > rows_before_kill * 40_000

    outcome = run_killed_when([sys.executable, "-c", WRITER, str(path)], enough_rows, cwd=tmp_path, timeout=120)
    returned = {line.split()[1] for line in outcome.output.splitlines() if line.startswith("put ")}
    cache = JudgmentCache(path)
    lost = len(returned - {f"k{i}" for i in range(100000) if cache.get(f"k{i}")})
    cache.put({"key": "after", "content": "x"})
    last = path.read_bytes().split(b"\n")[-2]
    reread = JudgmentCache(path)
    survived = outcome.killed and lost == 0 and json.loads(last)["key"] == "after" and len(reread) == len(cache)
    fault_table.add("judge cache: SIGKILL while appending", survived=survived, lost=lost,
                    note="every put that returned is read back; a cut last line is skipped, never rewritten")  # fmt: skip
    assert outcome.killed and returned, outcome.output[-2000:]
    assert lost == 0 and json.loads(last)["key"] == "after" and len(reread) == len(cache) >= len(returned) + 1
