"""Batched answer generation vs one prompt at a time, measured side by side in one run (goal >= 3x).

Generating answers is most of the time MT-Bench and AlpacaEval take. ``generate_chat`` with
``batch_size`` 8 (length-sorted batches, one KV cache per batch) is timed against the same call
with ``batch_size`` 1, which is FastChat's ``gen_model_answer`` way (one prompt at a time, also
with a KV cache): same prompts, same greedy decoding, same ``max_new_tokens``. The prompts are
the project's AlpacaEval and MT-Bench fixture instructions, repeated up to ``--prompts``.

Usage: python bench/bench_eval_generation.py [--model embedded|tiny|PATH] [--prompts 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from sapo.evaluate.alpacaeval import load_alpacaeval_data
from sapo.evaluate.generation import generate_chat, load_for_eval
from sapo.evaluate.mtbench import load_mtbench_data


def prompts(n: int) -> list[list[dict]]:
    texts = [row["instruction"] for row in load_alpacaeval_data("fixtures").rows]
    texts += [q["turns"][0] for q in load_mtbench_data("fixtures").questions]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n)]


def timed(loaded, conversations, batch_size: int, max_new_tokens: int) -> tuple[float, list[str]]:
    began = time.perf_counter()
    answers = generate_chat(loaded, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            desc=f"batch_size {batch_size}")  # fmt: skip
    return time.perf_counter() - began, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, tiny or a checkpoint folder")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_for_eval(args.model, device=device)
    conversations = prompts(args.prompts)
    timed(loaded, conversations[:2], 2, 4)  # warm-up: first-call allocations and kernel choices
    batched, batched_answers = timed(loaded, conversations, args.batch_size, args.max_new_tokens)
    single, single_answers = timed(loaded, conversations, 1, args.max_new_tokens)
    tokens = sum(len(loaded.tokenizer(a, add_special_tokens=False).input_ids) for a in batched_answers)
    same = sum(a == b for a, b in zip(batched_answers, single_answers, strict=True))
    where = f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nmodel: {args.model}; device: {where}; {args.prompts} prompts, max_new_tokens {args.max_new_tokens}")
    print(f"{'measure':<52}{'ratio':>8}{'goal':>8}   detail")
    label = f"one prompt at a time / batched ({args.batch_size})"
    print(f"{label:<52}{single / batched:>7.2f}x{'>= 3':>8}   {single:.2f} s vs {batched:.2f} s")
    print(f"(batched: {tokens / batched:.0f} answer tokens/s; greedy answers identical either way: "
          f"{same}/{args.prompts}, padding can flip near-ties)")  # fmt: skip


if __name__ == "__main__":
    main()
