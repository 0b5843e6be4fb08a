"""Two CPU processes (gloo) through `accelerate launch`: every rank ends with the same policy,
EMA and reference weights, while each keeps its own buffer and generator stream."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_end_with_identical_weights(tiny_model_dir, tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes/accelerate_configs/cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()),
        str(REPO / "tests/dist_run_sapo.py"), str(tiny_model_dir), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        assert rank["world"] == 2 and rank["backend"] == "gloo"
        assert rank["ref_updates"] == [2]
        # The policy moved; the EMA moved after the sync at step 2, so it differs from the reference.
        assert rank["policy"] != rank["initial"] and rank["ema"] != rank["ref"] != rank["initial"]
    for key in ("policy", "ema", "ref"):
        assert ranks[0][key] == ranks[1][key], f"{key} weights differ between ranks"
    # Each rank samples its own segments (generator seeded with seed + rank).
    assert ranks[0]["rejected"] != ranks[1]["rejected"]
