"""Run-config rules that need no model: the global batch and the reference token layout's constraints."""

from __future__ import annotations

import pytest

from sapo.errors import RecipeError
from sapo.train import config as config_module
from sapo.train.cli import recipe_values
from sapo.train.config import SAPOConfig, accumulation_steps, world_size


def test_accumulation_is_derived_from_the_global_batch_and_refused_when_inexact():
    assert accumulation_steps(64, 8, 8) == 1  # the paper: 8 GPUs x 8
    assert accumulation_steps(64, 8, 2) == 4
    assert accumulation_steps(64, 2, 1) == 32
    with pytest.raises(ValueError, match=r"global_batch_size: 64 is not a multiple of 3 processes x .* = 24"):
        accumulation_steps(64, 8, 3)


def test_world_size_is_what_the_launcher_announces(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "8")  # accelerate launch / torchrun set it in every process
    assert world_size() == 8


@pytest.mark.parametrize(("world", "expected"), [(1, 8), (4, 2), (8, 1)])
def test_config_derives_accumulation_for_this_launch(tmp_path, monkeypatch, world, expected):
    # Patched, not WORLD_SIZE itself: with it set, building the config would start a process group.
    monkeypatch.setattr(config_module, "world_size", lambda: world)
    config = SAPOConfig(output_dir=str(tmp_path), global_batch_size=64, per_device_train_batch_size=8,
                        report_to="none")  # fmt: skip
    assert config.gradient_accumulation_steps == expected
    with pytest.raises(ValueError, match="set one of them"):  # an explicit, different accumulation is not overridden
        SAPOConfig(output_dir=str(tmp_path), global_batch_size=64, per_device_train_batch_size=8,
                   gradient_accumulation_steps=expected + 1, report_to="none")  # fmt: skip


def test_config_refuses_a_launch_that_cannot_make_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "world_size", lambda: 3)
    with pytest.raises(ValueError, match="global_batch_size"):
        SAPOConfig(output_dir=str(tmp_path), global_batch_size=64, per_device_train_batch_size=8, report_to="none")


def test_reference_prompt_split_needs_the_last_turn_as_answer(tmp_path):
    with pytest.raises(ValueError, match="multi_turn: last"):
        SAPOConfig(output_dir=str(tmp_path), prompt_split="reference", multi_turn="first", report_to="none")
    with pytest.raises(ValueError, match="prompt_split"):
        SAPOConfig(output_dir=str(tmp_path), prompt_split="twice", report_to="none")


def test_recipe_values_are_checked_against_field_types_and_converted():
    # PyYAML reads 1e-6 (no dot) as a string: argparse converted such strings, so they stay accepted, as numbers.
    values = {"learning_rate": "1e-6", "max_steps": "3", "use_buffer": "false", "beta": 1, "output_dir": "x",
              "max_prompt_length": None}  # fmt: skip
    assert recipe_values(SAPOConfig, values, "r.yaml") == {"learning_rate": 1e-6, "max_steps": 3, "use_buffer": False,
                                                           "beta": 1.0, "output_dir": "x", "max_prompt_length": None}  # fmt: skip
    assert recipe_values(SAPOConfig, {"max_prompt_length": "None"}, "r.yaml") == {"max_prompt_length": "None"}  # TRL's
    from sapo.train.spin import SPINConfig

    assert recipe_values(SPINConfig, {"spin_betas": ["0.1", 5]}, "r.yaml") == {"spin_betas": [0.1, 5.0]}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"beta": "abc"}, "r.yaml: beta: expected a number, got 'abc'"),
        ({"max_steps": 1.5}, "r.yaml: max_steps: expected an integer, got 1.5"),
        ({"max_steps": True}, "r.yaml: max_steps: expected an integer, got True"),  # YAML's yes/on are booleans
        ({"use_buffer": 1}, "r.yaml: use_buffer: expected true or false, got 1"),
        ({"max_length": "long"}, "r.yaml: max_length: expected an integer, got 'long'"),
    ],
)
def test_recipe_values_of_the_wrong_type_name_the_field(values, match):
    with pytest.raises(RecipeError, match=match):
        recipe_values(SAPOConfig, values, "r.yaml")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"learning_rate": -1e-6}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"max_length": 0, "max_prompt_length": None}, "max_length"),
        ({"ema_decay": 1.0}, r"ema_decay: must be in \[0, 1\)"),
    ],
)
def test_out_of_range_values_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        SAPOConfig(output_dir=str(tmp_path), report_to="none", **overrides)


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_baselines_refuse_a_beta_that_is_not_positive(tmp_path, method):
    from sapo.train.cli import config_class

    with pytest.raises(ValueError, match="beta: must be > 0, got 0.0"):
        config_class(method)(output_dir=str(tmp_path), report_to="none", beta=0.0)
