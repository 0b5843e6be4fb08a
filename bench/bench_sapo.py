"""Speed ratios measured side by side in one run (never a timed test; these machines are noisy).

1. SAPO step without generation / plain TRL DPO step, same model, same pairs (goal <= 1.15):
   what SAPO adds besides generation (buffer, collation, EMA update, reference sync).
2. Fused EMA update (one foreach lerp) vs a Python loop over parameters (goal >= 5x faster).
3. Batched segment generation vs one prompt at a time (information: the main speed lever).

Usage: python bench/bench_sapo.py [--model embedded|tiny|PATH] [--steps N]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from sapo.models import load_tokenizer, resolve_model_path
from sapo.train.config import SAPOConfig
from sapo.train.data import load_examples, to_dataset
from sapo.train.ema import ema_update_, paired_parameters
from sapo.train.segment import sample_continuations
from sapo.train.trainer import SAPOTrainer


class _FixedPairsSAPO(SAPOTrainer):
    """SAPO with generation replaced by a fixed rejected answer per example: isolates the rest."""

    def make_pairs(self, inputs, generator):
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


def bench_step(model_path: str, steps: int, rounds: int = 2) -> dict[str, float]:
    """Seconds per optimizer step, best of ``rounds`` alternating runs (the first pays warm-up).

    Every batch is the same example twice, so the trainers see sequences of identical length
    and the ratio measures overhead, not data. ``dpo_copied_ref`` is TRL's DPO with its reference
    deep-copied in memory as SAPO's is: on CPU a reference loaded from the same safetensors file
    shares page-cache memory with nothing written, and that alone changes step time.
    """
    from datasets import Dataset

    tokenizer = load_tokenizer(model_path)
    (example,), _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=1)
    examples = [example] * (2 * steps)
    answer = example.answer_ids
    rejected = answer[: len(answer) // 2] + answer[len(answer) // 2 :][::-1]
    pairs = [{"prompt_ids": example.prompt_ids, "chosen_ids": answer, "rejected_ids": rejected}] * (2 * steps)
    times: dict[str, list[float]] = {"dpo": [], "dpo_copied_ref": [], "sapo": []}
    for _ in range(rounds):
        for name in times:
            model = AutoModelForCausalLM.from_pretrained(model_path)
            with tempfile.TemporaryDirectory() as out:
                if name.startswith("dpo"):
                    ref = (
                        copy.deepcopy(model)
                        if name == "dpo_copied_ref"
                        else AutoModelForCausalLM.from_pretrained(model_path)
                    )
                    trainer = _PretokenizedDPO(model=model, ref_model=ref,
                                               args=DPOConfig(**_common(out, steps)), train_dataset=Dataset.from_list(pairs),
                                               processing_class=tokenizer)  # fmt: skip
                else:
                    args = SAPOConfig(
                        **_common(out, steps), max_prompt_length=192, buffer_size=2 * steps, ref_update_steps=2
                    )
                    trainer = _FixedPairsSAPO(
                        model=model, args=args, train_dataset=to_dataset(examples), processing_class=tokenizer
                    )
                began = time.perf_counter()
                trainer.train()
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
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed run")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    path = resolve_model_path(args.model)
    step = bench_step(path, args.steps)
    sapo, dpo, dpo_copy = step["sapo"], step["dpo"], step["dpo_copied_ref"]
    rows.append(("SAPO step w/o generation / TRL DPO step", sapo / dpo, "<= 1.15", f"{sapo:.2f} s vs {dpo:.2f} s"))
    rows.append(
        ("  same, TRL DPO with a deep-copied reference", sapo / dpo_copy, "", f"{sapo:.2f} s vs {dpo_copy:.2f} s")
    )
    for name in (args.model, "tiny"):  # a real model, and one whose many small tensors expose per-call overhead
        ema = bench_ema(resolve_model_path(name))
        for loop in ("reference_loop", "inplace_loop"):
            label = f"EMA {loop.replace('_', ' ')} / fused foreach ({name})"
            rows.append(
                (label, ema[loop] / ema["fused"], ">= 5", f"{ema[loop] * 1e3:.1f} ms vs {ema['fused'] * 1e3:.1f} ms")
            )
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
