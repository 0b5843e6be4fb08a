"""Training-health guards: a loss stuck at ln 2 warns; a non-finite loss stops with the batch saved."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sapo.train.health import StuckLossCallback, check_finite


class _State:
    global_step = 7


def _log(callback, loss, chosen=0.0, rejected=0.0):
    callback.on_log(None, _State(), None, logs={"loss": loss, "rewards/chosen": chosen, "rewards/rejected": rejected})


def test_stuck_loss_warns_once_after_patience():
    callback = StuckLossCallback(patience=3)
    _log(callback, math.log(2))
    _log(callback, math.log(2) + 5e-4)
    with pytest.warns(RuntimeWarning, match="ln 2"):
        _log(callback, math.log(2))
    _log(callback, math.log(2))  # no second warning (pytest would fail on an unexpected one below)
    assert callback.warned


def test_learning_resets_the_count():
    callback = StuckLossCallback(patience=2)
    _log(callback, math.log(2))
    _log(callback, 0.6, chosen=0.1, rejected=-0.1)  # learning happened
    _log(callback, math.log(2))
    assert callback.stuck == 1 and not callback.warned
    _log(callback, math.log(2), chosen=0.01)  # non-zero rewards: not stuck even at ln 2
    assert callback.stuck == 0


def test_nonfinite_loss_stops_and_saves_the_batch(tmp_path, smol_tokenizer):
    pairs = [{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5]}]
    check_finite(torch.tensor(0.5), pairs, smol_tokenizer, tmp_path, step=3)  # finite: nothing happens
    assert not (tmp_path / "nonfinite_batch.json").exists()
    with pytest.raises(FloatingPointError, match="step 3: non-finite loss.*nonfinite_batch.json"):
        check_finite(torch.tensor(float("nan")), pairs, smol_tokenizer, tmp_path, step=3)
    saved = json.loads((tmp_path / "nonfinite_batch.json").read_text())
    assert saved["pairs"][0]["chosen_ids"] == [3, 4]
    assert saved["pairs"][0]["chosen_ids_text"] == smol_tokenizer.decode([3, 4])


def test_sapo_trainer_stops_on_a_nan_loss(tiny_model_dir, tmp_path):
    # A real run whose policy weights are poisoned: the first step must stop with the batch saved.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sapo.train.config import SAPOConfig
    from sapo.train.data import load_examples, to_dataset
    from sapo.train.trainer import SAPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=4)
    config = SAPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to="none",
                        segment_max_new_tokens=4, gradient_checkpointing=False, max_length=256, max_prompt_length=192,
                        save_strategy="no")  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SAPOTrainer(model=model, args=config, train_dataset=to_dataset(examples), processing_class=tokenizer)
    with torch.no_grad():
        trainer.model.model.norm.weight.fill_(float("nan"))  # after the EMA copy: generation stays sane
    with pytest.raises(FloatingPointError, match="step 1: non-finite loss"):
        trainer.train()
    assert json.loads((tmp_path / "nonfinite_batch.json").read_text())["pairs"]
