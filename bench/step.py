"""A SAPO optimizer step against TRL's DPO step on the same batch, with and without generation.

Up to four trainers live in one process and take turns (``measure.take_turns``) on batches of one shape:
- ``dpo``: plain ``trl.DPOTrainer`` on ready-made pairs (chosen = the real answer, rejected = the same
  answer with its segment reversed: one length, so both sides pad alike);
- ``sapo``: ``SAPOTrainer`` whose pairs are made as in training: the EMA model writes a segment of
  ``segment`` tokens into each real answer (the bench's answers are long enough for a full segment, and
  its segments never end early at EOS: the step's worst case, and the same work every turn), then the
  buffer, collation, loss, and the EMA/reference callback;
- ``sapo_no_gen``: the same without generation (a fixed rejected answer): what SAPO adds besides it.
- ``sapo_fast``: ``sapo`` with ``cpu_fast_decoding`` (the opt-in weight-first decoding products; numerics
  differ from ``sapo`` by float rounding, so its segments are not ``sapo``'s bit for bit). CPU only: on a GPU
  the option does nothing, and the trainer would only cost memory.

Each timed call is ``training_step`` + optimizer step + the step-end callbacks, as Trainer's loop
runs them. The counted FLOPs of a training step (``training_flops``) and the bytes a decoding step
reads (``decode_bytes``) are closed forms of the model config, tested on their own.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from sapo.bench.measure import device, synchronize
from sapo.models import load_tokenizer
from sapo.train.buffer import BufferEntry
from sapo.train.config import SAPOConfig
from sapo.train.data import ChatExample, load_examples, to_dataset
from sapo.train.trainer import SAPOTrainer


@dataclass(frozen=True)
class StepShape:
    """The batch a step bench runs on. Defaults: the paper's segment length (256) on answers that hold it."""

    batch: int = 2  # per_device_train_batch_size
    prompt_tokens: int = 64
    answer_tokens: int = 320  # >= segment + 3: the reference keeps 3 real tokens after the segment
    segment: int = 256  # segment_max_new_tokens
    buffer_size: int = 8
    sapo_loss: str = "dpo"

    @property
    def max_length(self) -> int:
        return self.prompt_tokens + self.answer_tokens


def bench_examples(tokenizer, shape: StepShape) -> list[ChatExample]:
    """``shape.batch`` examples of exactly the shape's lengths, made of the embedded data's real tokens: each
    prompt is the last ``prompt_tokens`` of several prompts run together (so it ends with the assistant
    header), each answer the first ``answer_tokens`` of several answers (ending with the last one's EOS)."""
    examples, _ = load_examples("embedded", tokenizer, max_length=None, max_prompt_length=None, limit=400)
    answers = [t for e in examples for t in e.answer_ids]
    answers = answers * (shape.batch * shape.answer_tokens // len(answers) + 1)
    made = []
    for i in range(shape.batch):
        prompts = [t for e in examples[: len(examples) - i] for t in e.prompt_ids]  # ends where a prompt ends
        prompts = prompts * (shape.prompt_tokens // len(prompts) + 1)
        answer = answers[i * shape.answer_tokens : (i + 1) * shape.answer_tokens - 1] + [examples[0].answer_ids[-1]]
        made.append(ChatExample(prompts[-shape.prompt_tokens :], answer, where=f"bench example {i}"))
    return made


class _TimedSAPO(SAPOTrainer):
    """SAPO as trained, with two bench-only changes to one hook each: segments never end at EOS (the same
    ``segment`` tokens every turn), and the time spent making pairs (generation) is kept."""

    generation_seconds = 0.0

    def _stop_ids(self):
        _, pad = super()._stop_ids()
        return [], pad

    def make_pairs(self, inputs, rng):
        began = time.perf_counter()
        entries = super().make_pairs(inputs, rng)
        synchronize()
        self.generation_seconds += time.perf_counter() - began
        return entries


class _FixedPairsSAPO(SAPOTrainer):
    """SAPO with generation replaced by a fixed rejected answer per example: isolates the rest."""

    def make_pairs(self, inputs, rng):
        return [BufferEntry(list(p), list(c), _reversed_segment(c), len(c) // 2, len(c), 0, False)
                for p, c in zip(inputs["prompt_ids"], inputs["chosen_ids"], strict=True)]  # fmt: skip


class _PretokenizedDPO(DPOTrainer):
    """Plain TRL DPO; the pairs arrive tokenized, so TRL's own tokenization is skipped."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def _reversed_segment(answer: list[int]) -> list[int]:
    return list(answer[: len(answer) // 2]) + list(reversed(answer[len(answer) // 2 :]))


def _common(out: str, shape: StepShape) -> dict:
    return dict(output_dir=out, max_steps=10**6, per_device_train_batch_size=shape.batch, learning_rate=1e-6,
                report_to="none", activation_checkpointing=False, save_strategy="no", logging_steps=10**6,
                bf16=device() == "cuda", use_cpu=device() == "cpu", max_length=shape.max_length,
                disable_tqdm=True, seed=0)  # fmt: skip


class StepBench:
    """The trainers of one shape, ready to step. ``kinds``: which of dpo, sapo, sapo_no_gen, sapo_fast to build
    (default: all, sapo_fast on a CPU only)."""

    def __init__(self, model_path: str, shape: StepShape, kinds: tuple[str, ...] | None = None):
        from datasets import Dataset

        if kinds is None:
            kinds = ("dpo", "sapo", "sapo_no_gen") + (("sapo_fast",) if device() == "cpu" else ())
        self.shape = shape
        tokenizer = load_tokenizer(model_path)
        examples = bench_examples(tokenizer, shape)
        out = tempfile.mkdtemp(prefix="sapo-bench-")
        load = AutoModelForCausalLM.from_pretrained
        sapo_kwargs = dict(**_common(out, shape), max_prompt_length=shape.prompt_tokens, sapo_loss=shape.sapo_loss,
                           segment_max_new_tokens=shape.segment, buffer_size=shape.buffer_size, ref_update_steps=2)  # fmt: skip
        self.trainers: dict[str, SAPOTrainer | DPOTrainer] = {}
        self.batches: dict[str, dict] = {}
        sapo_batch = {"prompt_ids": [e.prompt_ids for e in examples], "chosen_ids": [e.answer_ids for e in examples]}
        for kind in kinds:
            if kind == "dpo":
                pairs = [{"prompt_ids": e.prompt_ids, "chosen_ids": e.answer_ids,
                          "rejected_ids": _reversed_segment(e.answer_ids)} for e in examples]  # fmt: skip
                trainer = _PretokenizedDPO(model=load(model_path), ref_model=load(model_path),
                                           args=DPOConfig(**_common(out, shape)), train_dataset=Dataset.from_list(pairs),
                                           processing_class=tokenizer)  # fmt: skip
                self.batches[kind] = trainer._prepare_inputs(trainer.data_collator(pairs))
            else:
                cls = _FixedPairsSAPO if kind == "sapo_no_gen" else _TimedSAPO
                args = SAPOConfig(**sapo_kwargs, cpu_fast_decoding=kind == "sapo_fast")
                trainer = cls(model=load(model_path), args=args, train_dataset=to_dataset(examples),
                              processing_class=tokenizer)  # fmt: skip
                self.batches[kind] = sapo_batch
            trainer.create_optimizer()
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which we bypass
            trainer.model.train()
            if isinstance(trainer, SAPOTrainer):
                trainer.pair_parameters()
            self.trainers[kind] = trainer

    def step(self, kind: str) -> None:
        """One optimizer step as Trainer's loop runs it: loss and backward, optimizer, step-end callbacks."""
        trainer = self.trainers[kind]
        trainer.training_step(trainer.model, self.batches[kind])
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        trainer.state.global_step += 1
        trainer.callback_handler.on_step_end(trainer.args, trainer.state, trainer.control)
        synchronize()

    @property
    def model(self) -> torch.nn.Module:
        return next(iter(self.trainers.values())).accelerator.unwrap_model(next(iter(self.trainers.values())).model)


def attention_dims(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dimension) of a LLaMA-style config (GQA: fewer key/value heads)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return heads, kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


def sampling_settings() -> dict:
    """SAPO's generator sampling (temperature, top-k, top-p): SAPOConfig's defaults, the reference code's."""
    fields = SAPOConfig.__dataclass_fields__
    return {name: fields[name].default for name in ("temperature", "top_k", "top_p")}


def matmul_params(config) -> int:
    """Weights that take part in a matmul for every token: the decoder layers' linear layers and the LM head
    (a tied embedding counts once, as the head; the input lookup is no matmul)."""
    d, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads, head_dim = attention_dims(config)
    attention = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * d * config.intermediate_size  # gate, up, down (LLaMA-style)
    return layers * (attention + mlp) + d * config.vocab_size


def forward_flops(config, sequences: int, length: int) -> float:
    """Counted FLOPs of one forward pass over ``sequences`` rows of ``length`` tokens: 2 per weight per token,
    plus attention's scores and weighted sum over the whole row (2 * 2 * length * heads * head_dim per token
    and layer; the causal half is counted as computed, as the PaLM paper's appendix B counts it)."""
    heads, _, head_dim = attention_dims(config)
    tokens = sequences * length
    per_token = 2 * matmul_params(config) + 2 * 2 * length * heads * head_dim * config.num_hidden_layers
    return float(tokens * per_token)


def training_flops(config, pairs: int, length: int, reference: bool) -> float:
    """A DPO-style step on ``pairs`` (chosen and rejected rows of ``length`` tokens): the policy's forward and
    backward (backward counted as twice the forward) and, with a reference model, its forward."""
    rows = 2 * pairs
    return forward_flops(config, rows, length) * (3 + (1 if reference else 0))


def decode_bytes(model: torch.nn.Module, batch: int, context: int) -> int:
    """Bytes one decoding step reads: every weight once (the LM head reads the whole embedding matrix), and
    the KV cache of ``batch`` rows of ``context`` tokens (keys and values of every layer)."""
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    _, kv_heads, head_dim = attention_dims(config)
    element = next(model.parameters()).element_size()
    kv = 2 * config.num_hidden_layers * kv_heads * head_dim * element * batch * context
    return weights + kv
