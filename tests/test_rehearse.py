"""The rehearsal's own machinery: its plan covers every paper recipe, its network guard refuses all but loopback,
its memory figures are the child's own, and it reads what a Trainer logged. The full run is `nox -s rehearsal`."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from sapo.reproduce import rehearsal_checks, rehearse

ROOT = Path(__file__).resolve().parents[1]


def test_plan_rehearses_every_paper_recipe_and_the_llama_chain_in_order():
    plan = rehearse.load_plan()
    on_disk = sorted(
        str(p.parent.relative_to(ROOT / "recipes/paper")) for p in ROOT.glob("recipes/paper/*/*/config_full.yaml")
    )
    assert sorted(plan["single_process"]) == on_disk
    order = plan["single_process"]
    for name in order:  # a recipe that starts from another run's folder comes after that run
        start = yaml.safe_load((ROOT / "recipes/paper" / name / "config_full.yaml").read_text())["model_name_or_path"]
        if start.startswith("runs/paper/"):
            assert order.index(start.removeprefix("runs/paper/")) < order.index(name), name
    methods = {
        yaml.safe_load(rehearse.recipe_path(ROOT, n).read_text())["method"] for n in plan["two_processes"]["recipes"]
    }
    assert methods == {"sft", "dpo", "orpo", "spin", "sapo"}


def test_cuts_replace_an_optimizer_this_machine_lacks(monkeypatch):
    plan = rehearse.load_plan()
    monkeypatch.setattr(rehearse, "bitsandbytes_usable", lambda: False)
    cuts = rehearse.run_cuts(plan, {"method": "sapo", "optim": "adamw_bnb_8bit"})
    assert cuts["optim"] == "adamw_torch" and cuts["segment_max_new_tokens"] == 16 and cuts["max_steps"] == 2
    assert "optim" not in rehearse.run_cuts(plan, {"method": "dpo", "optim": "rmsprop"})
    argv = rehearse.train_argv(["sapo"], Path("r.yaml"), {"max_steps": 2, "packing": True}, "out")
    assert argv == ["sapo", "train", "r.yaml", "--max_steps", "2", "--packing", "true", "--output_dir", "out"]


def test_guard_refuses_the_network_and_keeps_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    port = server.getsockname()[1]
    code = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
            "try:\n    socket.create_connection(('1.1.1.1', 443), timeout=5)\nexcept OSError as err:\n"
            "    print(err)\n")  # fmt: skip
    env = rehearse.child_env(tmp_path / "hf_home")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    server.close()
    assert done.returncode == 0, done.stderr
    assert "network blocked (a connection to 1.1.1.1 was attempted)" in done.stdout
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == str(tmp_path / "hf_home")


def test_memory_peak_is_the_childs_own(tmp_path):
    """A child holding 300 MiB reports about that, not the (larger or smaller) parent's footprint."""
    code = "import time\nx = bytearray(300 * 2**20)\nx[::4096] = b'1' * len(x[::4096])\ntime.sleep(2)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    largest, total = rehearsal_checks.memory_peaks(child, every=0.1)
    assert child.returncode == 0
    assert 300 <= largest < 400 and total >= largest - 1


def test_logged_reads_the_trainer_lines(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(" 50%|#| 1/2 {'loss': '0.6931', 'grad_norm': '2.64', 'sapo/segment_len': '16', 'epoch': '0.5'}\n"
                   "{'train_runtime': '9.3'}\n[RANK 0] {'loss': '0.69', 'logps/chosen': '-265.2', 'note': 'x'}\n")  # fmt: skip
    assert rehearsal_checks.logged(log) == [{"loss": 0.6931, "grad_norm": 2.64, "sapo/segment_len": 16.0, "epoch": 0.5},
                                    {"loss": 0.69, "logps/chosen": -265.2}]  # fmt: skip


def test_prompt_comparison_declares_each_named_difference_and_nothing_else():
    """Training prompt [5, 6] + answer [7, 8]; the benchmarks send BOS 1, the prompt and the header 7 (lm-eval
    without the BOS). prompt_bos: false, prompt_split: reference and lm-eval's BOS rule explain it all."""
    training = {"layout": {"prompt_bos": False, "prompt_split": "reference", "system_prompt": None},
                "prompt_ids": [5, 6], "answer_ids": [7, 8], "tokens": ["a", "b"]}  # fmt: skip
    sent = {"mtbench": [1, 5, 6, 7], "lm_eval": [5, 6, 7], "tokens": {"mtbench": ["<s>", "a", "b", "h"]}, "bos_id": 1}
    declared, undeclared = rehearsal_checks.compare_prompts(training, sent, sent)
    assert undeclared == [] and len(declared) == 3
    assert any(d.startswith("prompt_bos") for d in declared) and any(d.startswith("prompt_split") for d in declared)
    # the same benchmark prompt against a render_once layout with BOS: the header is then a real difference
    plain = {**training, "layout": {"prompt_bos": True, "prompt_split": "render_once", "system_prompt": None}}
    _, undeclared = rehearsal_checks.compare_prompts(plain, sent, sent)
    assert len(undeclared) == 1 and "differ from token 0" in undeclared[0]
    wrong_answer = {**training, "answer_ids": [9, 8]}  # the answer does not start with the generation prompt
    assert rehearsal_checks.compare_prompts(wrong_answer, sent, sent)[1]
    not_a_bos = {**sent, "bos_id": None}  # the first token is dropped only when it is the BOS
    assert rehearsal_checks.compare_prompts(training, not_a_bos, not_a_bos)[1]
    odd_lm_eval = {**sent, "lm_eval": [5, 6, 8]}
    assert "lm-eval and MT-Bench" in rehearsal_checks.compare_prompts(training, odd_lm_eval, odd_lm_eval)[1][0]


def test_a_sentencepiece_answer_header_is_declared_under_the_reference_split():
    """Mistral: the answer tokenized alone starts '▁<' (id 9) where generation continues '<' (id 8)."""
    training = {"layout": {"prompt_bos": True, "prompt_split": "reference", "system_prompt": None},
                "prompt_ids": [1, 5], "answer_ids": [9, 7, 3], "tokens": ["<s>", "a"],
                "answer_tokens": ["\u2581<", "|", "x"]}  # fmt: skip
    sent = {"mtbench": [1, 5, 8, 7], "lm_eval": [1, 5, 8, 7], "bos_id": 1,
            "tokens": {"mtbench": ["<s>", "a", "<", "|"], "lm_eval": ["<s>", "a", "<", "|"]}}  # fmt: skip
    declared, undeclared = rehearsal_checks.compare_prompts(training, sent, sent)
    assert undeclared == [] and "SentencePiece" in declared[0]
    other = {**training, "answer_tokens": ["\u2581>", "|", "x"]}
    assert rehearsal_checks.compare_prompts(other, sent, sent)[1]
