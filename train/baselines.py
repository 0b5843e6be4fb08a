"""The baselines SAPO is compared with, trained through the same pipeline: SFT, DPO and ORPO.

Each is TRL's own trainer and loss (``SFTTrainer``, ``DPOTrainer``,
``trl.experimental.orpo.ORPOTrainer``); the one hook overridden is where TRL would tokenize,
because our pipeline (``data.py``) has already rendered every conversation once with the run's
chat template, so all methods see identical tokens. Configs are the shared model/data fields
(``HarnessArguments``) plus TRL's config for the method. SPIN, which TRL lacks, is ``spin.py``.

DPO and ORPO train on both sides of a preference set (paper: the chosen and rejected
conversations of argilla/distilabel-capybara-dpo-7k-binarized); SFT and SAPO read the real
(chosen) answer only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from sapo.train.config import HarnessArguments
from sapo.train.model_card import ModelCardMixin


def require_columns(dataset, columns: tuple[str, ...], trainer: str) -> None:
    missing = set(columns) - set(dataset.column_names)
    if missing:
        raise ValueError(f"{trainer}: the dataset needs tokenized columns {sorted(missing)} (see sapo.train.data)")


# --------------------------------------------------------------------------- configs


@dataclass
class PreferenceDataArguments(HarnessArguments):
    """The shared fields plus the rejected side of a paired preference set."""

    rejected_field: str = field(
        default="rejected",
        metadata={"help": "Column holding the rejected conversation (Capybara-DPO and the embedded set: rejected)."},
    )

    def __post_init__(self):
        if not self.beta > 0:  # DPO's beta / ORPO's lambda (TRL checks neither): 0 or less turns the preference off
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        super().__post_init__()


@dataclass
class SFTRunConfig(HarnessArguments, SFTConfig):
    """Supervised fine-tuning (the LLaMA-3-8B chain's first stage in the reference code)."""

    completion_only_loss: bool | None = field(
        default=True,
        metadata={
            "help": "Loss on answer tokens only. The reference SFT (alignment-handbook era) trains on the whole "
            "packed text: its recipe sets false."
        },
    )


@dataclass
class DPORunConfig(PreferenceDataArguments, DPOConfig):
    """Offline DPO on paired preference data."""


@dataclass
class ORPORunConfig(PreferenceDataArguments, ORPOConfig):
    """ORPO on paired preference data. ``beta`` is ORPO's lambda (paper recipes: 0.05)."""


# --------------------------------------------------------------------------- trainers


class ChatSFTTrainer(ModelCardMixin, SFTTrainer):
    """``SFTTrainer`` on our tokens: ``input_ids`` = prompt + answer, ``completion_mask`` marks the answer."""

    card_method = "SFT"
    _tag_names = ["trl", "sft", "sapo-harness"]

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        require_columns(dataset, ("input_ids", "completion_mask"), "ChatSFTTrainer")
        # TRL skips tokenizing a dataset that has input_ids, and still packs it when asked.
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)


class PairedDPOTrainer(ModelCardMixin, DPOTrainer):
    """TRL's ``DPOTrainer`` and loss, fed the pipeline's (prompt, chosen, rejected) token ids."""

    card_method = "DPO"
    _tag_names = ["trl", "dpo", "sapo-harness"]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        require_columns(dataset, ("prompt_ids", "chosen_ids", "rejected_ids"), "PairedDPOTrainer")
        return dataset


class PairedORPOTrainer(ModelCardMixin, ORPOTrainer):
    """TRL's ``ORPOTrainer`` and loss; ``tokenize_row`` lays out our token ids in its format
    (its own would re-tokenize text and may append a second EOS after ChatML's ``<|im_end|>``)."""

    card_method = "ORPO"
    _tag_names = ["trl", "orpo", "sapo-harness"]

    def tokenize_row(self, feature, model=None) -> dict:
        prompt = list(feature["prompt_ids"])
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for side in ("chosen", "rejected"):
            answer = list(feature[f"{side}_ids"])
            row[f"{side}_input_ids"] = prompt + answer
            row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
            row[f"{side}_labels"] = [-100] * len(prompt) + answer  # NLL and odds ratio on answer tokens
        return row


# --------------------------------------------------------------------------- running one


def to_sft_dataset(examples):
    """``input_ids`` and ``completion_mask`` rows for ``ChatSFTTrainer``."""
    import datasets

    return datasets.Dataset.from_dict(
        {
            "input_ids": [e.prompt_ids + e.answer_ids for e in examples],
            "completion_mask": [[0] * len(e.prompt_ids) + [1] * len(e.answer_ids) for e in examples],
        }
    )


def guards() -> list:
    """Every baseline stops when a step leaves NaN/inf weights, before that step is saved: HF's trainers log a NaN
    loss (hidden by ``logging_nan_inf_filter``) and go on, saving broken checkpoints."""
    from sapo.train.health import FiniteWeightsCallback

    return [FiniteWeightsCallback()]


def paired_dpo_trainer(config, model, tokenizer, examples, trainer_cls=None):
    """DPO (or a subclass: SPIN's iterations) with a frozen copy of ``model`` as the reference. Explicit,
    because with ref_model=None TRL reloads it by name, which fails for 'embedded' and models built in memory;
    copied before the trainer patches ``model.forward``."""
    from sapo.train.copies import frozen_copy
    from sapo.train.data import to_dataset

    trainer_cls = trainer_cls or PairedDPOTrainer
    return trainer_cls(model=model, ref_model=frozen_copy(model), args=config, train_dataset=to_dataset(examples),
                       processing_class=tokenizer, callbacks=guards())  # fmt: skip


def build_baseline_trainer(method: str, config, model, tokenizer, examples):
    """The TRL trainer for ``method`` (sft, dpo, orpo) on the pipeline's ``examples``."""
    from sapo.train.data import to_dataset

    if method == "sft":
        return ChatSFTTrainer(model=model, args=config, train_dataset=to_sft_dataset(examples),
                              processing_class=tokenizer, callbacks=guards())  # fmt: skip
    if method == "dpo":
        return paired_dpo_trainer(config, model, tokenizer, examples)
    if method == "orpo":
        return PairedORPOTrainer(model=model, args=config, train_dataset=to_dataset(examples),
                                 processing_class=tokenizer, callbacks=guards())  # fmt: skip
    raise ValueError(f"method: no baseline trainer for {method!r}")
