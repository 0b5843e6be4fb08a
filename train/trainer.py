"""``SAPOTrainer``: TRL's ``DPOTrainer`` with rejected answers made during training.

Per step (Yin et al. 2024, Alg. 1; reference code yinyueqin/SAPO):
1. cut each real answer into A | B | C and let the generator (EMA model) write B' after
   prompt + A (``segment.py``); rejected = A + B' (+ C unless B' ended with EOS);
2. push the pairs into the FIFO replay buffer and draw the training batch from it with
   weights 1/(1 + times drawn) (``buffer.py``);
3. DPO loss through TRL's own ``_compute_loss`` (so every TRL ``loss_type`` works), or ORPO;
4. after the optimizer step, ``SAPOCallback`` updates the EMA and, every
   ``ref_update_steps``, copies it into the reference model (``ema.py``).

Overridden hooks only: ``_prepare_dataset`` (our pipeline tokenizes), ``compute_loss``,
``_save_checkpoint`` / ``_load_optimizer_and_scheduler`` (EMA, reference, buffer and generator
RNG travel with every checkpoint; rotation waits until a checkpoint is complete: ``checkpoints.py``).
A non-finite loss or weights stop the run before the step is saved (``health.py``).
``ModelCardMixin`` adds the model card to the final save.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import DPOTrainer
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.dpo_trainer import DataCollatorForPreference

from sapo.errors import CheckpointError
from sapo.files import atomic_write_json
from sapo.generation import sample_continuations, stop_token_ids
from sapo.train.buffer import BufferEntry, ReplayBuffer, mean_age
from sapo.train.checkpoints import SAPO_STATE, SAPO_WRITING, load_weights, resume_point, rotate_checkpoints
from sapo.train.config import SAPOConfig
from sapo.train.copies import frozen_copy
from sapo.train.ema import copy_weights_, ema_update_, paired_parameters
from sapo.train.health import FiniteWeightsCallback, StuckLossCallback, check_finite
from sapo.train.losses import orpo_loss
from sapo.train.model_card import ModelCardMixin
from sapo.train.segment import segment_bounds, splice


class SapoRNG(NamedTuple):
    """The generators of one SAPO stream. ``cpu`` draws segment starts and replay-buffer picks (CPU tensors);
    ``sampling`` draws tokens on the accelerator (PyTorch refuses a generator of another device). On a CPU
    device both are the same object: one stream, so seeded CPU runs keep the numbers of the one-generator code."""

    cpu: torch.Generator
    sampling: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device | str) -> SapoRNG:
        device = torch.device(device)
        cpu = torch.Generator(device="cpu").manual_seed(seed)
        sampling = cpu if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
        return cls(cpu, sampling)

    @property
    def shared(self) -> bool:
        return self.sampling is self.cpu

    def state(self) -> dict:
        # None marks the shared CPU stream; the device type lets a resume on other hardware fail clearly.
        sampling = None if self.shared else self.sampling.get_state()
        return {"cpu": self.cpu.get_state(), "sampling": sampling, "sampling_device": self.sampling.device.type}

    def load_state(self, state, where: Path) -> None:
        if isinstance(state, torch.Tensor):  # written before the split: one generator, so only a CPU run had one
            state = {"cpu": state, "sampling": None, "sampling_device": "cpu"}
        saved_shared = state["sampling"] is None
        if saved_shared != self.shared:
            raise CheckpointError(
                f"{where}: its token-sampling RNG was on {state['sampling_device']}, this run samples on "
                f"{self.sampling.device.type}; resume on the same kind of device"
            )
        self.cpu.set_state(state["cpu"])
        if not saved_shared:
            self.sampling.set_state(state["sampling"])


def _local_tensors(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors to update in place. Under ZeRO-3 each rank holds the same slice of two
    identically built models (``ds_tensor``), so EMA and copies work shard by shard."""
    return [getattr(p, "ds_tensor", p.data) for p in params]


class SAPOCallback(TrainerCallback):
    """EMA update every ``ema_update_steps`` and reference refresh every ``ref_update_steps``
    optimizer steps; run after the step, never inside the loss (unlike the reference code)."""

    def __init__(self, trainer: SAPOTrainer):
        self.trainer = trainer
        self.ref_update_log: list[int] = []  # global steps at which the reference was overwritten

    def on_train_begin(self, args: SAPOConfig, state, control, **kwargs):
        self.trainer.pair_parameters()

    def on_step_end(self, args: SAPOConfig, state, control, **kwargs):
        t = self.trainer
        step = state.global_step
        if step % args.ema_update_steps == 0:
            ema_update_(t._ema_pairs[0], t._ema_pairs[1], args.ema_decay)
        if t._ref_pairs is not None and step % args.ref_update_steps == 0:
            copy_weights_(*t._ref_pairs)
            self.ref_update_log.append(step)


class SAPOTrainer(ModelCardMixin, DPOTrainer):
    """Self-Augmented Preference Optimization on top of ``trl.DPOTrainer``.

    ``train_dataset`` is a ``datasets.Dataset`` with ``prompt_ids`` and ``chosen_ids`` (answer
    tokens) as our data pipeline makes them (``sapo.train.data``); it needs no rejected column.
    """

    _tag_names = ["trl", "sapo"]

    def __init__(self, model, args: SAPOConfig, train_dataset: Dataset, processing_class, callbacks=None, **kwargs):
        if not isinstance(args, SAPOConfig):
            raise TypeError(f"args: expected a SAPOConfig, got {type(args).__name__}")
        # Copies first: DPOTrainer patches model.forward, and a later deepcopy would carry the
        # patched forward bound to the policy.
        ema_model = frozen_copy(model)
        ref_model = frozen_copy(model) if args.sapo_loss == "dpo" else ema_model
        super().__init__(
            model=model,
            ref_model=ref_model,  # for ORPO the EMA stands in, so TRL loads no spare reference
            args=args,
            data_collator=_pass_through,
            train_dataset=train_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        if args.sapo_loss == "dpo":
            self.ema_model = self._prepare_frozen(ema_model)
        else:
            self.ema_model = self.ref_model
        self.ref_model.requires_grad_(False)
        self.ema_model.requires_grad_(False)
        self._ema_pairs = self._ref_pairs = None  # built at train begin: wrapping may reallocate parameters
        self.buffer = ReplayBuffer(args.buffer_size)
        self.sapo_rng = SapoRNG.seeded(args.seed + self.accelerator.process_index, self.accelerator.device)
        self._collate_pairs = DataCollatorForPreference(pad_token_id=self._stop_ids()[1])
        self.add_callback(FiniteWeightsCallback())  # before SAPOCallback: a bad step must not reach the EMA
        self.sapo_callback = SAPOCallback(self)
        self.add_callback(self.sapo_callback)
        self.add_callback(StuckLossCallback())

    # ------------------------------------------------------------------ set-up hooks

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        missing = {"prompt_ids", "chosen_ids"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"{dataset_name} dataset: SAPOTrainer needs tokenized columns, missing {sorted(missing)}")
        return dataset  # tokenized by sapo.train.data, which renders each conversation once

    def pair_parameters(self) -> None:
        """Pair EMA/reference tensors with their sources by name. Called when training begins,
        after the policy was wrapped: DDP and DeepSpeed may move its parameters to new storage."""
        unwrap = self.accelerator.unwrap_model
        self._ema_pairs = [_local_tensors(p) for p in paired_parameters(unwrap(self.ema_model), unwrap(self.model))]
        self._ref_pairs = None
        if self.args.sapo_loss == "dpo" and self.args.ref_update != "fixed":
            source = self.ema_model if self.args.ref_update == "ema" else self.model
            self._ref_pairs = [_local_tensors(p) for p in paired_parameters(unwrap(self.ref_model), unwrap(source))]

    def _prepare_frozen(self, model):
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(model, self.accelerator)
        return self.accelerator.prepare_model(model, evaluation_mode=True)

    def _stop_ids(self) -> tuple[list[int], int]:
        return stop_token_ids(self.accelerator.unwrap_model(self.model), self.processing_class)

    # ------------------------------------------------------------------ the SAPO step

    def make_pairs(self, inputs: dict, rng: SapoRNG) -> list[BufferEntry]:
        """Regenerate a segment of each real answer with the generator model; one entry per example."""
        args: SAPOConfig = self.args
        eos, pad = self._stop_ids()
        plans, contexts, budgets = [], [], []
        for prompt, answer in zip(inputs["prompt_ids"], inputs["chosen_ids"], strict=True):
            if args.segment:
                prompt_budget = min(len(prompt), args.max_prompt_length or len(prompt))
                room = (args.max_length or 10**9) - prompt_budget - min(args.segment_max_new_tokens, len(answer))
                start, length = segment_bounds(len(answer), args.segment_max_new_tokens, room, rng.cpu)
                budget = length
            else:  # the 'no segment' ablation: a whole new answer of at most L tokens
                start, length = 0, len(answer)
                budget = min(args.segment_max_new_tokens, (args.max_length or 10**9) - len(prompt))
            plans.append((prompt, answer, start, length, budget))
            contexts.append(prompt + answer[:start])
            budgets.append(budget)
        source = self.ema_model if args.generator == "ema" else self.model_wrapped
        began = time.perf_counter()
        with unwrap_model_for_generation(source, self.accelerator) as model:
            generated = sample_continuations(
                model,
                contexts,
                budgets,
                pad_token_id=pad,
                eos_token_id=eos,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                generator=rng.sampling,
                weight_major=args.cpu_fast_decoding,
            )
        seconds = time.perf_counter() - began
        entries = []
        for (prompt, answer, start, length, budget), new in zip(plans, generated, strict=True):
            if args.segment:
                rejected, ended_early, n = splice(answer, start, length, new, eos)
            else:
                rejected, ended_early, n = splice([], 0, budget, new, eos)
            entries.append(
                BufferEntry(
                    prompt_ids=list(prompt),
                    chosen_ids=list(answer),
                    rejected_ids=rejected,
                    segment_start=start,
                    segment_end=start + length,
                    generated_len=n,
                    ended_early=ended_early,
                    step_added=self.state.global_step,
                )
            )
        metrics = self._metrics["train" if self.model.training else "eval"]
        metrics["sapo/segment_len"].append(sum(e.generated_len for e in entries) / len(entries))
        metrics["sapo/ended_early"].append(sum(e.ended_early for e in entries) / len(entries))
        metrics["sapo/gen_tokens_per_s"].append(sum(e.generated_len for e in entries) / max(seconds, 1e-9))
        return entries

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = self.model.training
        if training:
            fresh = self.make_pairs(inputs, self.sapo_rng)
            if self.args.use_buffer:
                self.buffer.add(fresh)
                batch_entries = self.buffer.sample(len(fresh), self.sapo_rng.cpu)
            else:
                batch_entries = fresh
            metrics = self._metrics["train"]
            metrics["sapo/buffer_size"].append(len(self.buffer))
            metrics["sapo/sample_age"].append(mean_age(batch_entries, self.state.global_step))
            metrics["sapo/ref_updates"] = [len(self.sapo_callback.ref_update_log)]
        else:  # evaluation must not touch the buffer or the training RNG stream
            batch_entries = self.make_pairs(inputs, SapoRNG.seeded(self.args.seed, self.accelerator.device))
        pairs = [
            {"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}
            for e in batch_entries
        ]
        batch = self._prepare_inputs(self._collate_pairs(pairs))
        if self.args.sapo_loss == "orpo":
            result = self._orpo_compute_loss(model, batch, return_outputs)
        else:
            result = super().compute_loss(model, batch, return_outputs=return_outputs)
        step = self.state.global_step + (1 if training else 0)  # the optimizer step this loss is for
        check_finite(result[0] if return_outputs else result, pairs, self.processing_class, self.args.output_dir, step)
        return result

    def _orpo_compute_loss(self, model, batch, return_outputs):
        """ORPO (Hong et al. 2024) on [chosen; rejected]: NLL(chosen) - beta * log sigmoid(log odds ratio)."""
        mode = "train" if self.model.training else "eval"
        completion = batch["completion_mask"]
        label_mask = completion.clone()
        n = completion.size(0) // 2
        if self.args.orpo_nll_on_prompt:  # reference code: the NLL covers the prompt too
            label_mask[:n] = batch["attention_mask"][:n]
        labels = batch["input_ids"].masked_fill(label_mask == 0, -100)
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                        fused_lm_head=True, use_cache=False)  # fmt: skip
        per_token = outputs.log_probs.float()  # (2n, T-1), zero where the label is masked
        response = completion[:, 1:].float()
        mean_logps = (per_token * response).sum(1) / response.sum(1).clamp(min=1)
        # One token-mean over the batch's chosen answers, as the reference code and TRL's ORPOTrainer
        # compute it (CrossEntropyLoss over the flattened batch), broadcast to every example.
        nll_mask = label_mask[:n, 1:].float()
        chosen_nll = (-(per_token[:n] * nll_mask).sum() / nll_mask.sum().clamp(min=1)).expand(n)
        losses, chosen_rewards, rejected_rewards, log_odds = orpo_loss(mean_logps[:n], mean_logps[n:], chosen_nll,
                                                                       self.args.beta)  # fmt: skip
        loss = losses.mean()
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["logps/chosen"].append(gather(mean_logps[:n].detach()).mean().item())
        metrics["logps/rejected"].append(gather(mean_logps[n:].detach()).mean().item())
        metrics["nll_loss"].append(gather(chosen_nll.detach()).mean().item())
        metrics["log_odds_ratio"].append(gather(log_odds).mean().item())
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial):
        # HF rotates (save_total_limit) at the end of its save, before SAPO_STATE marks this checkpoint complete:
        # a crash in between could leave no complete one. Rotate only once it is complete.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:  # first: a resume knows an incomplete folder here is SAPO's own (checkpoints.py)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / SAPO_WRITING).touch()
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self._save_sapo_state(folder)
        if self.args.should_save:
            rotate_checkpoints(folder.parent, limit, self.state.best_model_checkpoint)

    def _frozen_models(self) -> list[tuple[str, torch.nn.Module]]:
        """The models a checkpoint carries besides the policy, by folder name."""
        return [("ema", self.ema_model)] + ([("ref", self.ref_model)] if self.args.sapo_loss == "dpo" else [])

    def _per_process_files(self, folder: Path) -> tuple[Path, Path]:
        """Replay buffer and generator-state files of this process (one set per rank when several)."""
        suffix = "" if self.accelerator.num_processes == 1 else f"_rank{self.accelerator.process_index}"
        return folder / f"replay_buffer{suffix}.jsonl", folder / f"sapo_rng{suffix}.pt"

    def _save_sapo_state(self, folder: Path) -> None:
        for name, model in self._frozen_models():
            state_dict = self.accelerator.get_state_dict(model)  # collective under ZeRO-3: every rank calls it
            if self.accelerator.is_main_process:
                self.accelerator.unwrap_model(model).save_pretrained(folder / name, state_dict=state_dict)
        # Each process has its own buffer and generator stream (the reference's buffer is per rank too).
        buffer_path, rng_path = self._per_process_files(folder)
        self.buffer.save_jsonl(buffer_path)
        torch.save(self.sapo_rng.state(), rng_path)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            state = {"global_step": self.state.global_step, "ref_updates": self.sapo_callback.ref_update_log,
                     "num_processes": self.accelerator.num_processes}  # fmt: skip
            atomic_write_json(folder / SAPO_STATE, state)  # never half-written: its presence means complete

    def _check_resumable(self, folder: Path) -> dict:
        if not (folder / SAPO_STATE).is_file():
            raise CheckpointError(
                f"{folder}: incomplete SAPO checkpoint (no {SAPO_STATE}); resume from an earlier one"
            )
        state = json.loads((folder / SAPO_STATE).read_text())
        if state["num_processes"] != self.accelerator.num_processes:
            raise CheckpointError(
                f"{folder} was written by {state['num_processes']} processes; resume with the same number "
                f"(now {self.accelerator.num_processes}): each holds its own buffer and RNG stream"
            )
        return state

    def _load_optimizer_and_scheduler(self, checkpoint):
        # The one resume hook transformers calls on every path (plain, DDP, DeepSpeed, FSDP), after the
        # models are prepared: the SAPO state is restored here too.
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        folder = Path(checkpoint)
        state = self._check_resumable(folder)
        for name, model in self._frozen_models():
            load_weights(self.accelerator.unwrap_model(model), folder / name, self.is_deepspeed_enabled)
        buffer_path, rng_path = self._per_process_files(folder)
        self.buffer = ReplayBuffer.load_jsonl(buffer_path, self.args.buffer_size)
        self.sapo_rng.load_state(torch.load(rng_path, weights_only=True), rng_path)
        self.sapo_callback.ref_update_log = list(state["ref_updates"])

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:  # the newest *complete* checkpoint, not merely the newest folder
            resume_from_checkpoint = resume_point(self.args.output_dir, True, SAPO_STATE,
                                                  main_process=self.accelerator.is_main_process)  # fmt: skip
        if resume_from_checkpoint:
            self._check_resumable(Path(resume_from_checkpoint))  # fail before any work is done
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    @property
    def card_method(self) -> str:
        return f"SAPO-{self.args.sapo_loss.upper()}"


def _pass_through(examples: list[dict]) -> dict:
    """Keep token lists as lists: pairs are built (and padded) only after generation."""
    return {key: [example[key] for example in examples] for key in ("prompt_ids", "chosen_ids")}
