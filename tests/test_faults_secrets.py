"""Secrets and unsafe loading. A judge key planted in the environment reaches the judge and nothing else: no
output file of `sapo train` (checkpoints, model card, trainer state, TensorBoard) or `sapo eval` (results, caches,
answers), no line of output, whichever flag named its variable. Weights load from safetensors only, and every
torch.load in the project reads tensors only (``weights_only=True``)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import torch
from faults import sapo_argv
from test_faults_kill import train_argv

from sapo.errors import ModelUnavailableError
from sapo.evaluate.judge_server import JudgeServer
from sapo.models import load_causal_lm

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("src/sapo", "train", "evaluate", "reproduce") for p in (REPO / folder).rglob("*.py")]
KEY = "sk-planted-6c1f0e9a7b"
pytestmark = pytest.mark.faults


def leaks(folder: Path, *texts: str) -> list[str]:
    """Where the planted key shows: files under ``folder`` (read as bytes: pickles, safetensors, event files too)
    and the given texts."""
    found = [str(p) for p in folder.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    return found + [f"output {i}" for i, text in enumerate(texts) if KEY in text]


def planted_env(home: Path, env_name: str) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "SAPO_")) and k != "HF_TOKEN"}
    return {**env, "PATH": "/usr/bin:/bin", "HOME": str(home), env_name: KEY, "HF_TOKEN": KEY, "WANDB_API_KEY": KEY}


@pytest.fixture(scope="module")
def planted_run(tiny_model_dir, tmp_path_factory):
    """A real `sapo train` (2 steps, 2 checkpoints, model card, TensorBoard) with the key in its environment."""
    tmp = tmp_path_factory.mktemp("planted")
    argv = train_argv("sapo-dpo", tiny_model_dir, tmp / "run", 0) + ["--max_steps", "2", "--report_to", "tensorboard"]
    trained = subprocess.run(argv, cwd=REPO, env=planted_env(tmp, "OPENAI_API_KEY"), capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    return tmp / "run", leaks(tmp / "run", trained.stdout, trained.stderr)


@pytest.mark.parametrize(
    "key_flag", [[], ["--judge-api-key-env", "MY_JUDGE_KEY"], ["--judge-api-key-env=MY_JUDGE_KEY"]]
)
def test_a_planted_key_reaches_the_judge_and_nothing_else(key_flag, planted_run, tmp_path, fault_table):
    run, found = planted_run
    env = planted_env(tmp_path, "MY_JUDGE_KEY" if key_flag else "OPENAI_API_KEY")

    def judge(messages, params):
        return "Rating: [[7]]", None

    with JudgeServer(judge, "scripted") as server:
        argv = sapo_argv("eval", str(run), "--suite", "mtbench", "--data", "fixtures", "--limit", "1",
                         "--output", str(tmp_path / "eval"), "--judge-model", "scripted", "--judge-base-url",
                         server.base_url, *key_flag, "--max-new-tokens", "4", "--calibration-pairs", "0",
                         "--log-level", "debug")  # fmt: skip
        evaluated = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        assert server.last_authorization == f"Bearer {KEY}"  # the judge got it
    found = found + leaks(tmp_path / "eval", evaluated.stdout, evaluated.stderr)
    fault_table.add("judge key planted in the environment (" + (" ".join(key_flag) or "$OPENAI_API_KEY") + ")",
                    survived=not found, note="scanned every file of the run and the evaluation, and their output")  # fmt: skip
    assert not found, found


def test_weights_load_from_safetensors_only(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pickled = tmp_path / "pickled"
    model.save_pretrained(pickled)
    for weights in pickled.glob("*.safetensors"):  # the same weights as a pickle only
        from safetensors.torch import load_file

        torch.save(load_file(weights), pickled / "pytorch_model.bin")
        weights.unlink()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((Path(tiny_model_dir) / name).read_bytes())
    with pytest.raises(ModelUnavailableError, match="could not load"):
        load_causal_lm(str(pickled))


def _calls(name: str):
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path.relative_to(REPO), node


def test_every_torch_load_reads_tensors_only():
    bad = [f"{p}:{n.lineno}" for p, n in _calls("torch.load")
           if not any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in n.keywords)]  # fmt: skip
    assert not bad, f"torch.load without weights_only=True (a pickle can run code): {bad}"


def test_every_model_load_refuses_pickles():
    calls = list(_calls("AutoModelForCausalLM.from_pretrained"))
    assert calls
    bad = [f"{p}:{n.lineno}" for p, n in calls if not {k.arg for k in n.keywords} & {"use_safetensors", "gguf_file"}]
    assert not bad, f"from_pretrained without use_safetensors=True: {bad}"
