"""Speed ratios measured side by side in one run (never a timed test; these machines are noisy).

1. SAPO step without generation / plain TRL DPO step, same model, same pairs (goal <= 1.15):
   what SAPO adds besides generation (buffer, collation, EMA update, reference sync).
2. Fused EMA update (one foreach lerp) vs a Python loop over parameters (goal >= 5x faster).
3. Batched segment generation vs one prompt at a time (information: the main speed lever).

Usage: python bench/bench_sapo.py [--model embedded|tiny|PATH] [--steps N]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from sapo.generation import sample_continuations
from sapo.models import load_tokenizer, resolve_model_path
from sapo.train.config import SAPOConfig
from sapo.train.data import load_examples, to_dataset
from sapo.train.ema import ema_update_, paired_parameters
from sapo.train.trainer import SAPOTrainer


class _FixedPairsSAPO(SAPOTrainer):
    """SAPO with generation replaced by a fixed rejected answer per example: isolates the rest."""

    def make_pairs(self, inputs, rng):
        from sapo.train.buffer import BufferEntry

        return [
            BufferEntry(
                list(p),
                list(c),
                list(c[: len(c) // 2]) + list(reversed(c[len(c) // 2 :])),
                len(c) // 2,
                len(c),
                0,
                False,
            )
            for p, c in zip(inputs["prompt_ids"], inputs["chosen_ids"], strict=True)
        ]


class _PretokenizedDPO(DPOTrainer):
    """Plain TRL DPO; the pairs arrive tokenized, so TRL's own tokenization is skipped."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


def _common(out: str, steps: int) -> dict:
    return dict(output_dir=out, max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-6, report_to="none",
                gradient_checkpointing=False, save_strategy="no", logging_steps=10**6, bf16=False, use_cpu=True,
                max_length=256, disable_tqdm=True, seed=0)  # fmt: skip


def bench_step(model_path: str, steps: int, rounds: int = 3) -> dict[str, float]:
    """Seconds per optimizer step (forward, backward, optimizer step, and for SAPO the buffer,
    collation and EMA/reference callback), for TRL's DPO and for SAPO without generation.

    Both trainers live in one process and take turns on identical batches (the same example
    twice), best of ``rounds``: separate runs differ by more than the effect measured, because
    the process's memory state (a third model copy for SAPO) changes CPU step times by ~20%.
    """
    from datasets import Dataset

    tokenizer = load_tokenizer(model_path)
    (example,), _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=1)
    answer = example.answer_ids
    rejected = answer[: len(answer) // 2] + answer[len(answer) // 2 :][::-1]
    pairs = [{"prompt_ids": example.prompt_ids, "chosen_ids": answer, "rejected_ids": rejected}] * 2
    out = tempfile.mkdtemp()
    load = AutoModelForCausalLM.from_pretrained
    dpo = _PretokenizedDPO(model=load(model_path), ref_model=load(model_path), args=DPOConfig(**_common(out, steps)),
                           train_dataset=Dataset.from_list(pairs), processing_class=tokenizer)  # fmt: skip
    sapo_args = SAPOConfig(**_common(out, steps), max_prompt_length=192, buffer_size=8, ref_update_steps=2)
    sapo = _FixedPairsSAPO(model=load(model_path), args=sapo_args, train_dataset=to_dataset([example] * 2),
                           processing_class=tokenizer)  # fmt: skip
    batches = {
        "dpo": dpo._prepare_inputs(dpo.data_collator(pairs)),
        "sapo": {"prompt_ids": [example.prompt_ids] * 2, "chosen_ids": [answer] * 2},
    }
    trainers = {"dpo": dpo, "sapo": sapo}
    for trainer in trainers.values():
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's own loop, which we bypass
        trainer.model.train()
    sapo.pair_parameters()
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            began = time.perf_counter()
            for _ in range(steps):
                trainer.training_step(trainer.model, batches[name])
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()
                trainer.state.global_step += 1
                trainer.callback_handler.on_step_end(trainer.args, trainer.state, trainer.control)
            times[name].append((time.perf_counter() - began) / steps)
    return {name: min(values) for name, values in times.items()}


def bench_ema(model_path: str, repeats: int = 5) -> dict[str, float]:
    """Seconds per EMA update: ours (one foreach lerp), an in-place per-parameter loop, and the
    reference code's loop (``ema.copy_((1 - d) * p + d * ema)`` per parameter)."""
    policy = AutoModelForCausalLM.from_pretrained(model_path)
    ema = AutoModelForCausalLM.from_pretrained(model_path)
    ema_params, policy_params = paired_parameters(ema, policy)
    ema_tensors = [p.data for p in ema_params]
    policy_tensors = [p.data for p in policy_params]

    def reference_loop():
        with torch.no_grad():
            for e, p in zip(ema_tensors, policy_tensors, strict=True):
                e.copy_((1 - 0.5) * p + 0.5 * e)

    def inplace_loop():
        with torch.no_grad():
            for e, p in zip(ema_tensors, policy_tensors, strict=True):
                e.mul_(0.5).add_(p, alpha=0.5)

    def fused():
        ema_update_(ema_tensors, policy_tensors, 0.5)

    timings = {}
    for name, fn in (("reference_loop", reference_loop), ("inplace_loop", inplace_loop), ("fused", fused)):
        fn()  # warm-up
        began = time.perf_counter()
        for _ in range(repeats):
            fn()
        timings[name] = (time.perf_counter() - began) / repeats
    return timings


def bench_generation(model_path: str, n: int = 4, new_tokens: int = 16) -> tuple[float, float]:
    tokenizer = load_tokenizer(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=n)
    contexts = [e.prompt_ids for e in examples]
    kwargs = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=None, temperature=0.7, top_k=50, top_p=0.95)

    def run(batch):
        began = time.perf_counter()
        for i in range(0, n, batch):
            sample_continuations(
                model, contexts[i : i + batch], new_tokens, generator=torch.Generator().manual_seed(0), **kwargs
            )
        return time.perf_counter() - began

    run(n)
    return run(n), run(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, tiny or a checkpoint folder")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per timed turn")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    path = resolve_model_path(args.model)
    for name in (args.model, "tiny"):  # a real model, and one whose many small tensors expose per-call overhead
        ema = bench_ema(resolve_model_path(name))
        for loop in ("reference_loop", "inplace_loop"):
            label = f"EMA {loop.replace('_', ' ')} / fused foreach ({name})"
            rows.append(
                (label, ema[loop] / ema["fused"], ">= 5", f"{ema[loop] * 1e3:.1f} ms vs {ema['fused'] * 1e3:.1f} ms")
            )
    step = bench_step(path, args.steps)
    gc.collect()  # free the five model copies before timing generation
    sapo, dpo = step["sapo"], step["dpo"]
    rows.insert(0, ("SAPO step w/o generation / TRL DPO step", sapo / dpo, "<= 1.15", f"{sapo:.2f} s vs {dpo:.2f} s"))
    batched, single = bench_generation(path)
    rows.append(
        ("generation one-at-a-time / batched (4 prompts)", single / batched, "", f"{single:.2f} s vs {batched:.2f} s")
    )
    device = "cuda" if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nmodel: {args.model}; device: {device}")
    print(f"{'measure':<56}{'ratio':>8}{'goal':>10}   detail")
    for label, ratio, goal, detail in rows:
        print(f"{label:<56}{ratio:>7.2f}x{goal:>10}   {detail}")


if __name__ == "__main__":
    main()
