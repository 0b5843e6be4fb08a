"""Run configurations: the fields every method shares, and ``SAPOConfig``.

``HarnessArguments`` holds what every trainer of the harness reads the same way (the model,
the data and how our pipeline renders it, the CPU fallback); each method's config is that
mixin plus TRL's own config for the method (the baselines in ``baselines.py``). The methods that
generate while training add ``GeneratingArguments`` (``SAPOConfig`` = it + ``DPOConfig``; SPIN's in
``spin.py``); SFT, DPO and ORPO refuse its keys. So one recipe key means one thing everywhere.

SAPO defaults follow the paper's recipes as the reference code (yinyueqin/SAPO @5d7a210) sets
them; where the code's own default differs from its recipes, the help says both. Every
reference-code literal is a field here (``ref_update_steps`` was a hard-coded 108).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import DPOConfig

from sapo.chat import CHAT_FORMATS, MULTI_TURNS
from sapo.log import get_logger

logger = get_logger(__name__)

SAPO_LOSSES = ("dpo", "orpo")
GENERATORS = ("ema", "policy")
REF_UPDATES = ("ema", "policy", "fixed")
TRUNCATIONS = ("truncate", "drop", "reference")
PROMPT_SPLITS = ("render_once", "reference")


def world_size() -> int:
    """Processes of this launch, as ``accelerate launch`` / torchrun announce them before any state exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def accumulation_steps(global_batch: int, per_device: int, processes: int) -> int:
    """Gradient accumulation that makes ``global_batch`` from ``processes x per_device`` examples a pass.
    Refuses a launch that cannot give it exactly (a silently different batch changes the run: handbook#44)."""
    if global_batch < 1 or per_device < 1:
        raise ValueError(f"global_batch_size and per_device_train_batch_size must be >= 1, got {global_batch}, "
                         f"{per_device}")  # fmt: skip
    per_pass = processes * per_device
    if global_batch % per_pass:
        raise ValueError(
            f"global_batch_size: {global_batch} is not a multiple of {processes} processes x "
            f"per_device_train_batch_size {per_device} = {per_pass}; change per_device_train_batch_size or the "
            "number of processes (or set global_batch_size to the batch you mean)"
        )
    return global_batch // per_pass


def check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    """Raise a ValueError naming the field when ``config.<name>`` is not one of ``choices``."""
    if getattr(config, name) not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {getattr(config, name)!r}")


def drop_missing_tensorboard(args) -> None:
    """Recipes name TensorBoard so a run can be watched live (``tensorboard --logdir OUTPUT_DIR/runs``); where it
    is not installed, the run logs to trainer_state.json alone, with a warning, rather than fail at its first step
    (transformers raises then). ``pip install 'sapo-harness[tensorboard]'`` adds it."""
    from transformers.integrations import is_tensorboard_available

    wanted = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to or [])
    if "tensorboard" in wanted and not is_tensorboard_available():
        logger.warning("report_to: tensorboard is not installed (pip install tensorboard); logging to "
                       "trainer_state.json only")  # fmt: skip
        wanted.remove("tensorboard")
        args.report_to = wanted or "none"


@dataclass
class HarnessArguments:
    """Model and data fields shared by every method (SFT, DPO, ORPO, SPIN, SAPO).

    Mixed in before a TRL config class; ``__post_init__`` validates these fields, switches
    bf16 off and ``use_cpu`` on when there is no GPU (TRL configs refuse to build there
    otherwise), then hands over to the TRL config.
    """

    # Model
    model_name_or_path: str = field(
        default="embedded",
        metadata={"help": "Policy to train: a hub name, a folder, or 'embedded' (packaged SmolLM2-135M-Instruct)."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "chatml, zephyr, llama3 or a .jinja path; default: the tokenizer's own template."},
    )
    chat_format: str | None = field(
        default=None,
        metadata={
            "help": "'chatml': make <|im_start|>/<|im_end|> special tokens (BOS <|im_start|>, EOS = pad = "
            "<|im_end|>) and grow the embeddings, as the reference's setup_chat_format (run_sft.py:150, "
            "run_orpo.py:153) does for a base model whose vocabulary lacks them (Meta-Llama-3-8B). A no-op on a "
            "checkpoint that has them already (our SFT output). Sets chat_template to chatml when unset.",
            "choices": [None, *CHAT_FORMATS],
        },
    )
    # Data
    dataset_name: str = field(
        default="embedded",
        metadata={
            "help": "SFT data: a hub name (paper: argilla/distilabel-capybara-dpo-7k-binarized, chosen side only), "
            "a .jsonl/.json/.parquet file, a saved folder, or 'embedded' (the project's own set)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read from a hub data set."})
    dataset_field: str | None = field(
        default=None, metadata={"help": "Conversation column; default: the first of chosen, messages, real."}
    )
    max_prompt_length: int | None = field(
        default=1792, metadata={"help": "Prompt token budget (reference: 1792); prompts keep their end."}
    )
    max_length: int | None = field(
        default=2048, metadata={"help": "Token budget of prompt + answer (reference recipes: 2048)."}
    )
    truncation: str = field(
        default="truncate",
        metadata={
            "help": "Too-long examples: 'truncate' (keep the prompt's end up to max_prompt_length, then cut the "
            "answer's tail), 'drop' (drop every example over max_length), or 'reference' (yinyueqin/SAPO "
            "run_dpo.py:123-141: first drop every prompt of >= max_prompt_length tokens, counted with the "
            "tokenizer's special tokens, then truncate).",
            "choices": list(TRUNCATIONS),
        },
    )
    multi_turn: str = field(
        default="last",
        metadata={
            "help": "Which part of a multi-turn conversation is the answer: 'last' assistant turn (the reference "
            "code's run_dpo.py / run_orpo.py); 'first' (the first user turn is the prompt, the rest of the "
            "conversation the answer); or 'first_turn' (the first user turn is the prompt and the first reply "
            "the answer, later turns dropped: uclaml/SPIN reformat.py keeps messages[0:2]).",
            "choices": list(MULTI_TURNS),
        },
    )
    prompt_split: str = field(
        default="render_once",
        metadata={
            "help": "How prompt and answer text are made. 'render_once': the whole conversation is rendered once "
            "and the prompt is its rendered prefix ending with the generation prompt (no doubled system prompt, "
            "trl#1930). 'reference': yinyueqin/SAPO run_dpo.py:36-48 / run_orpo.py:51-63, the prompt is the "
            "template of every message but the last (no generation prompt) and the answer the template of the "
            "last message alone, so the assistant header belongs to the answer (needs multi_turn: last).",
            "choices": list(PROMPT_SPLITS),
        },
    )
    prompt_bos: bool = field(
        default=True,
        metadata={
            "help": "Put the BOS token before the prompt when the tokenizer adds one (and the template did not). "
            "The reference tokenizes with add_special_tokens=False: no BOS (alignment/utils.py:154-155)."
        },
    )
    answer_eos: bool = field(
        default=False,
        metadata={
            "help": "Append the tokenizer's EOS to every answer (and rejected answer), learned like any answer "
            "token: the reference's one extra EOS after the templated answer (alignment/utils.py:170-171)."
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples per optimizer step over all processes (paper: 64 = 8 GPUs x 8). When set, "
            "gradient_accumulation_steps is derived as global / (processes x per_device_train_batch_size), and a "
            "launch that cannot give it exactly is refused; step-counted settings (ref_update_steps, "
            "ema_update_steps, save_steps) then mean the same thing on any number of GPUs."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message to prepend to conversations that have none."}
    )
    max_examples: int | None = field(
        default=None,
        metadata={"help": "Train on the first N usable examples only (quick runs); default: all."},
    )
    on_bad_row: str = field(
        default="error",
        metadata={"help": "Bad data rows: 'error' (stop, naming file/row/field) or 'skip' (count and skip)."},
    )
    model_dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype the policy's weights are loaded (and kept) in. float32 by default even with bf16: "
            "bf16 is mixed precision, computing in bf16 from fp32 master weights as the reference does, while "
            "weights stored in bf16 drop every update below ~1/256 of a weight (lr 5e-7 steps round away). "
            "'auto' takes the checkpoint's own dtype.",
            "choices": ["float32", "bfloat16", "float16", "auto"],
        },
    )

    def __post_init__(self):
        for name, choices in (
            ("truncation", TRUNCATIONS),
            ("multi_turn", MULTI_TURNS),
            ("prompt_split", PROMPT_SPLITS),
            ("on_bad_row", ("error", "skip")),
            ("model_dtype", ("float32", "bfloat16", "float16", "auto")),
        ):
            check_choice(self, name, choices)
        if self.chat_format is not None:
            check_choice(self, "chat_format", CHAT_FORMATS)
            self.chat_template = self.chat_template or self.chat_format
        if self.prompt_split == "reference" and self.multi_turn != "last":
            raise ValueError("prompt_split: 'reference' renders the last message as the answer; set multi_turn: last")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "max_prompt_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate >= 0:  # TrainingArguments takes any float; a negative rate trains uphill
            raise ValueError(f"learning_rate: must be >= 0, got {self.learning_rate}")
        if self.global_batch_size is not None:
            derived = accumulation_steps(self.global_batch_size, self.per_device_train_batch_size, world_size())
            if self.gradient_accumulation_steps not in (1, derived):  # 1: TrainingArguments' default, i.e. unset
                raise ValueError(
                    f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) and global_batch_size "
                    f"({self.global_batch_size}, which needs {derived} here): set one of them"
                )
            self.gradient_accumulation_steps = derived
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples: must be >= 1 (or unset for all), got {self.max_examples}")
        if self.max_length is not None and self.max_prompt_length is not None:
            if self.max_prompt_length >= self.max_length:
                raise ValueError(
                    f"max_prompt_length ({self.max_prompt_length}) must be below max_length ({self.max_length})"
                )
        drop_missing_tensorboard(self)
        # No GPU: bf16 mixed precision is not available (TRL configs would refuse to build), and
        # several processes must meet on the CPU (gloo) rather than look for a device.
        if not torch.cuda.is_available():
            if self.bf16 is None:
                self.bf16 = False
            if not torch.backends.mps.is_available():
                self.use_cpu = True
        # transformers 5 renamed gradient_checkpointing to activation_checkpointing; TRL's configs still default
        # the old name, which warns on every run. Resolve it here under the new name (same value, no warning).
        if getattr(self, "activation_checkpointing", False) is None and self.gradient_checkpointing is not None:
            self.activation_checkpointing, self.gradient_checkpointing = self.gradient_checkpointing, None
        super().__post_init__()


@dataclass
class GeneratingArguments(HarnessArguments):
    """Fields of the methods that generate while training (SAPO's segments, SPIN's answers)."""

    cpu_fast_decoding: bool = field(
        default=False,
        metadata={
            "help": "SAPO's segments and SPIN's answers on a CPU: compute the linear layers of decoding steps of 2-8 "
            "rows weight-first (W @ x.T), where MKL's standard product is slow: steps 1.3-2.7x faster "
            "(results/bench/NOTES.md). The sums run in another order (logits move by ~1e-5), so a seeded run is "
            "no longer bit-identical to one without it; off by default. No effect on a GPU."
        },
    )


@dataclass
class SAPOConfig(GeneratingArguments, DPOConfig):
    r"""Configuration of a SAPO run (Yin et al. 2024, arXiv 2405.20830).

    Beyond ``DPOConfig`` and the shared fields (``HarnessArguments``, ``GeneratingArguments``): the generator
    (EMA decay, sampling, segment length), the replay buffer, and the reference model.
    ``beta`` is DPO's beta for ``sapo_loss="dpo"`` and ORPO's lambda for ``sapo_loss="orpo"``;
    TRL's ``loss_type`` list applies to the DPO objective, so SAPO with IPO or hinge needs no
    extra code.

    Defaults that differ from ``DPOConfig``: ``bf16`` is switched off on a machine without a
    GPU, and ``max_length`` is 2048 as in the paper's recipes.
    """

    # SAPO objective
    sapo_loss: str = field(
        default="dpo",
        metadata={
            "help": "Preference objective on (real, regenerated) pairs: 'dpo' or 'orpo'.",
            "choices": list(SAPO_LOSSES),
        },
    )
    orpo_nll_on_prompt: bool = field(
        default=False,
        metadata={
            "help": "ORPO's NLL term over prompt and answer tokens (reference code) instead of answer tokens only "
            "(ORPO paper; our default)."
        },
    )
    # Generator (the model that rewrites segments)
    generator: str = field(
        default="ema",
        metadata={
            "help": "Who rewrites the segment: 'ema' (SAPO) or 'policy' (on-policy ablation).",
            "choices": list(GENERATORS),
        },
    )
    ema_decay: float = field(
        default=0.5,
        metadata={
            "help": "EMA decay d in ema = d*ema + (1-d)*policy, in [0, 1). Paper recipes: 0.5 (the code's own "
            "default: 0.992)."
        },
    )
    ema_update_steps: int = field(
        default=1,
        metadata={
            "help": "Update the EMA every this many optimizer steps. Reference code: 1; the paper text (per its "
            "reviewers) says every 2."
        },
    )
    segment: bool = field(
        default=True,
        metadata={
            "help": "Rewrite a random segment (SAPO). False: regenerate the whole answer from the prompt, at most "
            "segment_max_new_tokens tokens, with no real tail (the paper's 'no segment' ablation)."
        },
    )
    segment_max_new_tokens: int = field(
        default=256, metadata={"help": "Segment length L: most tokens the generator writes (reference: 256)."}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of the generator (reference: 0.7)."}
    )
    top_k: int = field(default=50, metadata={"help": "Top-k of the generator; 0 disables (reference: 50)."})
    top_p: float = field(default=0.95, metadata={"help": "Top-p of the generator; 1.0 disables (reference: 0.95)."})
    # Replay buffer
    use_buffer: bool = field(
        default=True,
        metadata={"help": "Sample training pairs from the replay buffer; False trains on the fresh batch."},
    )
    buffer_size: int = field(
        default=2000,
        metadata={
            "help": "FIFO replay buffer capacity, per process (reference recipes: 2000; its code default 20000)."
        },
    )
    # Reference model (DPO objective only)
    ref_update: str = field(
        default="ema",
        metadata={
            "help": "How the DPO reference model changes: 'ema' (copied from the EMA model, SAPO), 'policy' "
            "(copied from the policy) or 'fixed'.",
            "choices": list(REF_UPDATES),
        },
    )
    ref_update_steps: int = field(
        default=108,
        metadata={"help": "Copy into the reference model every this many steps (reference: a literal 108)."},
    )

    def __post_init__(self):
        for name, choices in (("sapo_loss", SAPO_LOSSES), ("generator", GENERATORS), ("ref_update", REF_UPDATES)):
            check_choice(self, name, choices)
        if not 0.0 <= self.ema_decay < 1.0:  # 1 never moves the EMA: generator and reference stay the initial model
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not self.beta > 0:  # DPO's beta / ORPO's lambda: 0 or less turns the preference term off or around
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        for name in ("ema_update_steps", "buffer_size", "segment_max_new_tokens", "ref_update_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0 (0 disables), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.use_buffer and self.buffer_size < self.per_device_train_batch_size:
            raise ValueError(
                f"buffer_size ({self.buffer_size}) must hold at least one batch "
                f"(per_device_train_batch_size={self.per_device_train_batch_size})"
            )
        if self.precompute_ref_log_probs:
            # The reference changes during SAPO training, so precomputed log-probs would go stale.
            raise ValueError("precompute_ref_log_probs: not supported by SAPO, whose rejected answers are made online")
        if self.sync_ref_model:
            raise ValueError("sync_ref_model: TR-DPO's policy mixing is not SAPO's update; use ref_update instead")
        super().__post_init__()
