"""Model loading: the embedded default materializes offline, loads with plain
AutoModelForCausalLM and answers a chat prompt; hub names fail with a message."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

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


def test_tiny_model_shape_and_tied_embeddings(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_unreachable_hub_model_gives_a_clear_message():
    with pytest.raises(ModelUnavailableError, match="hub is out of reach"):
        load_causal_lm("no-such-org/no-such-model-xyz")
