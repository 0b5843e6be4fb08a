"""Two CPU processes (gloo) through `accelerate launch`: every rank ends with the same policy,
EMA and reference weights, while each keeps its own buffer and generator stream; SPIN splits
its generation between the ranks."""

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


def launch(*args: str) -> None:
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes/accelerate_configs/cpu_2proc.yaml"),
        "--main_process_port", str(_free_port()), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_cpu_processes_end_with_identical_weights(tiny_model_dir, tmp_path):
    launch(str(REPO / "tests/dist_run_sapo.py"), str(tiny_model_dir), str(tmp_path))
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


SPIN_RECIPE = """\
method: spin
dataset_name: embedded
max_examples: 7
max_length: 256
max_prompt_length: 192
gradient_checkpointing: false
per_device_train_batch_size: 2
report_to: none
save_strategy: "no"
max_steps: 1
spin_iterations: 1
spin_learning_rates: [0.01]
spin_betas: [0.1]
spin_max_new_tokens: 3
spin_generation_batch_size: 2
"""


def test_spin_shares_generation_between_two_processes(tiny_model_dir, tmp_path):
    (tmp_path / "spin.yaml").write_text(SPIN_RECIPE)
    out = tmp_path / "out"
    launch("-m", "sapo.cli", "train", str(tmp_path / "spin.yaml"), "--model_name_or_path", str(tiny_model_dir),
           "--output_dir", str(out))  # fmt: skip
    folder = out / "iteration-0"
    shares = []
    for rank in (0, 1):
        lines = (folder / f"generated_rank{rank}.jsonl").read_text().splitlines()
        shares.append({json.loads(line)["index"] for line in lines})
    assert shares == [{0, 2, 4, 6}, {1, 3, 5}]  # every prompt once, split by index
    assert json.loads((folder / "manifest.json").read_text())["pairs"] == 7
    assert (out / "model.safetensors").is_file()
