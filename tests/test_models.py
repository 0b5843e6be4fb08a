"""Model loading: the embedded default materializes offline, loads with plain
AutoModelForCausalLM and answers a chat prompt, and processes that ask for it at once build it once;
hub names fail with a message."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sapo.files import COMPLETE_STAMP, held_lock
from sapo.models import ModelUnavailableError, build_tiny_model, load_causal_lm, materialize_embedded_model


def _greedy_answer(folder, question: str, max_new_tokens: int = 24) -> str:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True)


def test_embedded_model_is_a_plain_checkpoint_that_answers(embedded_model_dir):
    files = {p.name for p in embedded_model_dir.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert "Paris" in _greedy_answer(embedded_model_dir, "What is the capital of France?")


def test_materialize_reuses_a_complete_copy(embedded_model_dir):
    stamp = (embedded_model_dir / "model.safetensors").stat().st_mtime_ns
    assert materialize_embedded_model(embedded_model_dir) == embedded_model_dir
    assert (embedded_model_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_interrupted_write_is_not_taken_for_complete(tmp_path):
    # A folder with a config but without the completion stamp is an interrupted write: rebuilt.
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "config.json").write_text("{}")
    build_tiny_model(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    assert model.config.num_hidden_layers == 2


# Imports first, then a barrier on two files, so both processes ask for the model in the same instant.
_BUILD_AT_ONCE = """
import os, sys, time
from pathlib import Path
from sapo.models import build_tiny_model
Path(sys.argv[2]).touch()
while len(list(Path(sys.argv[2]).parent.glob("ready-*"))) < 2:
    time.sleep(0.005)
folder = build_tiny_model(sys.argv[1])
print(os.stat(folder / "model.safetensors").st_ino)
"""


def test_two_processes_building_at_once_make_one_model(tmp_path):
    # An `accelerate launch` on a fresh cache: every rank asks for the model. One builds, the other waits and
    # reuses its folder, never replacing it under a rank that is already loading it.
    target = tmp_path / "cache" / "tiny"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD_AT_ONCE, str(target), str(tmp_path / f"ready-{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [child.communicate(timeout=300) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err[-2000:]
    inodes = {int(out.split()[-1]) for out, _ in results}
    assert inodes == {(target / "model.safetensors").stat().st_ino}, "one process replaced the other's model"
    assert sorted(p.name for p in target.parent.iterdir()) == [".tiny.lock", "tiny"]  # no temporary folder left
    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 2


def test_embedded_materialization_waits_for_the_process_building_it(tmp_path):
    # The embedded build (~25 s) takes the same lock: while another process holds it, a second waits, then
    # finds the folder whole and reuses it instead of building its own.
    target = tmp_path / "embedded"
    script = "import sys; from sapo.models import materialize_embedded_model as m; print('asking', flush=True); m(sys.argv[1])"
    with held_lock(target):
        child = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout.readline() == "asking\n"
        time.sleep(2)  # it is now blocked on the lock (it would otherwise be dequantizing for ~25 s)
        assert child.poll() is None
        target.mkdir()  # what the other process published: a stand-in, marked so a rebuild would show
        for name in ("config.json", COMPLETE_STAMP, "stand-in"):
            (target / name).write_text("{}")
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    assert sorted(os.listdir(target)) == sorted(["config.json", COMPLETE_STAMP, "stand-in"])


def test_tiny_model_shape_and_tied_embeddings(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_unreachable_hub_model_gives_a_clear_message():
    with pytest.raises(ModelUnavailableError, match="hub is out of reach"):
        load_causal_lm("no-such-org/no-such-model-xyz")
