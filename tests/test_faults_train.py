"""Faults during a real (tiny) SAPO run: a crash between a checkpoint's save and its SAPO state under
``save_total_limit``, a NaN loss and non-finite weights. Each must leave the newest complete checkpoint on disk,
none holding the bad step, and a resume from it must finish the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from sapo.train.checkpoints import SAPO_STATE, latest_complete_checkpoint, rotate_checkpoints
from sapo.train.config import SAPOConfig
from sapo.train.data import load_examples, to_dataset
from sapo.train.health import first_non_finite
from sapo.train.trainer import SAPOTrainer


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def dataset(tokenizer):
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=8)
    return to_dataset(examples)


def trainer_for(model_dir, tokenizer, dataset, output_dir, callbacks=None, **overrides) -> SAPOTrainer:
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=2, max_steps=3, segment_max_new_tokens=4,
                  max_length=256, max_prompt_length=192, report_to="none", gradient_checkpointing=False,
                  learning_rate=0.1, save_strategy="steps", save_steps=1, seed=0)  # fmt: skip
    values.update(overrides)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return SAPOTrainer(model=model, args=SAPOConfig(**values), train_dataset=dataset, processing_class=tokenizer,
                       callbacks=callbacks)  # fmt: skip


def checkpoints(out: Path) -> dict[str, bool]:
    """checkpoint folder name -> complete."""
    return {p.name: (p / SAPO_STATE).is_file() for p in sorted(out.glob("checkpoint-*"))}


def resume_to_the_end(tiny_model_dir, tokenizer, dataset, out, **overrides) -> SAPOTrainer:
    trainer = trainer_for(tiny_model_dir, tokenizer, dataset, out, **overrides)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == trainer.args.max_steps
    return trainer


# --------------------------------------------------------------------------- rotation (save_total_limit)


def test_rotation_keeps_the_last_complete_checkpoint_through_a_crash(tiny_model_dir, tokenizer, dataset, tmp_path):
    # HF rotates inside its save, before the SAPO state marks the new checkpoint complete. A crash between the
    # two (here: the second SAPO-state write) must leave checkpoint-1, the last complete one, in place.
    out = tmp_path / "run"
    trainer = trainer_for(tiny_model_dir, tokenizer, dataset, out, save_total_limit=1)
    real_save, calls = trainer._save_sapo_state, []

    def crash_on_the_second(folder):
        calls.append(folder)
        if len(calls) == 2:
            raise _Crash
        real_save(folder)

    trainer._save_sapo_state = crash_on_the_second
    with pytest.raises(_Crash):
        trainer.train()
    assert checkpoints(out) == {"checkpoint-1": True, "checkpoint-2": False}
    assert latest_complete_checkpoint(out) == str(out / "checkpoint-1")

    resumed = resume_to_the_end(tiny_model_dir, tokenizer, dataset, out, save_total_limit=1)
    assert resumed.state.global_step == 3
    assert checkpoints(out) == {"checkpoint-3": True}  # rotation still keeps one, once it is complete


def test_rotation_never_deletes_the_newest_complete_checkpoint(tmp_path):
    for step, complete in [(1, True), (2, True), (3, False), (4, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / SAPO_STATE).write_text("{}")
    deleted = rotate_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["checkpoint-1", "checkpoint-3"]
    assert checkpoints(tmp_path) == {"checkpoint-2": True, "checkpoint-4": False}
    assert rotate_checkpoints(tmp_path, None) == [] and rotate_checkpoints(tmp_path, 0) == []


# --------------------------------------------------------------------------- non-finite loss and weights


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny_model_dir, tokenizer, dataset, tmp_path):
    out = tmp_path / "run"
    trainer = trainer_for(tiny_model_dir, tokenizer, dataset, out, max_steps=4)

    def nan_at_step_3(module, inputs, output):  # on the policy only: generation (the EMA) stays sane
        if trainer.state.global_step == 2 and module.training:
            return output * float("nan")
        return output

    trainer.model.model.norm.register_forward_hook(nan_at_step_3)
    with pytest.raises(FloatingPointError, match=r"step 3: non-finite loss"):
        trainer.train()
    assert checkpoints(out) == {"checkpoint-1": True, "checkpoint-2": True}  # nothing saved after the NaN
    assert json.loads((out / "nonfinite_batch.json").read_text())["step"] == 3
    assert first_non_finite(AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")) is None

    resume_to_the_end(tiny_model_dir, tokenizer, dataset, out, max_steps=4)
    assert checkpoints(out) == {f"checkpoint-{k}": True for k in (1, 2, 3, 4)}


class _PoisonAfterStep(TrainerCallback):
    """An optimizer step that leaves a NaN weight (as an inf gradient or a huge learning rate would)."""

    def __init__(self, step: int):
        self.step = step

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            with torch.no_grad():
                model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")


def test_non_finite_weights_stop_before_the_step_is_saved(tiny_model_dir, tokenizer, dataset, tmp_path):
    out = tmp_path / "run"
    trainer = trainer_for(tiny_model_dir, tokenizer, dataset, out, callbacks=[_PoisonAfterStep(2)])
    with pytest.raises(
        FloatingPointError, match=r"step 2: the optimizer step left non-finite weights \(model\.layers"
    ):
        trainer.train()
    assert checkpoints(out) == {"checkpoint-1": True}  # step 2 was never saved
    assert first_non_finite(trainer.ema_model) is None  # nor copied into the generator
    resume_to_the_end(tiny_model_dir, tokenizer, dataset, out)
    assert checkpoints(out) == {f"checkpoint-{k}": True for k in (1, 2, 3)}


def test_first_non_finite_names_the_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert first_non_finite(model) is None
    with torch.no_grad():
        model[1].bias[1] = float("-inf")
    assert first_non_finite(model) == "1.bias"
    with torch.no_grad():
        model[0].weight[0, 1] = float("nan")
    assert first_non_finite(model) == "0.weight"


@pytest.mark.parametrize("method", ["dpo", "orpo", "sft"])
def test_baselines_stop_on_a_nan_step_before_saving_it(method, tiny_model_dir, tokenizer, tmp_path):
    """HF's trainers log a NaN loss (hidden by logging_nan_inf_filter) and go on, saving NaN weights; ours stop."""
    from sapo.train.baselines import DPORunConfig, ORPORunConfig, SFTRunConfig, build_baseline_trainer

    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=8,
                                rejected_field=None if method == "sft" else "rejected")  # fmt: skip
    config_cls = {"dpo": DPORunConfig, "orpo": ORPORunConfig, "sft": SFTRunConfig}[method]
    out = tmp_path / method
    config = config_cls(output_dir=str(out), per_device_train_batch_size=2, max_steps=4, report_to="none",
                        learning_rate=1e-3, save_strategy="steps", save_steps=1, bf16=False,
                        gradient_checkpointing=False, max_length=256, max_prompt_length=192)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = build_baseline_trainer(method, config, model, tokenizer, examples)

    def nan_from_step_3(module, inputs, output):
        return output * float("nan") if trainer.state.global_step == 2 and module.training else output

    model.model.norm.register_forward_hook(nan_from_step_3)
    with pytest.raises(FloatingPointError, match=r"step 3: the optimizer step left non-finite weights"):
        trainer.train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert first_non_finite(AutoModelForCausalLM.from_pretrained(out / "checkpoint-2")) is None
