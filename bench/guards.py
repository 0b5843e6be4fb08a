"""Regression guards: the ratios earlier work met, measured again so that a change cannot lose them quietly.

- fused EMA update (one ``torch._foreach_lerp_``) vs the reference code's per-parameter copy and an in-place
  loop, on the embedded model and on the tiny model (many small tensors: per-call overhead shows);
- SAPO's segments for 4 prompts batched vs one prompt at a time;
- benchmark answers (``generate_chat``) batched by 8 vs one at a time, FastChat's way;
- ``run_openllm`` vs lm-eval's own entry point on the same fixture tasks (``guards_openllm.py``).
"""

from __future__ import annotations

from functools import partial

import torch
from transformers import AutoModelForCausalLM

from sapo.bench.measure import best, device, memory_bytes_per_s, take_turns
from sapo.bench.step import sampling_settings
from sapo.generation import sample_continuations
from sapo.models import load_tokenizer, resolve_model_path
from sapo.train.data import load_examples
from sapo.train.ema import ema_update_, paired_parameters


def _ema_sides(model_path: str) -> tuple[dict, int]:
    """The three EMA updates, and the bytes of the EMA's tensors (each update reads the EMA and the policy and
    writes the EMA: 3 times this)."""
    policy = AutoModelForCausalLM.from_pretrained(model_path)
    ema = AutoModelForCausalLM.from_pretrained(model_path)
    ema_tensors, policy_tensors = ([p.data for p in params] for params in paired_parameters(ema, policy))

    def reference_loop():  # yinyueqin/SAPO: ema.copy_((1 - d) * p + d * ema) per parameter
        with torch.no_grad():
            for e, p in zip(ema_tensors, policy_tensors, strict=True):
                e.copy_((1 - 0.5) * p + 0.5 * e)

    def inplace_loop():
        with torch.no_grad():
            for e, p in zip(ema_tensors, policy_tensors, strict=True):
                e.mul_(0.5).add_(p, alpha=0.5)

    sides = {"reference_loop": reference_loop, "inplace_loop": inplace_loop,
             "fused": partial(ema_update_, ema_tensors, policy_tensors, 0.5)}  # fmt: skip
    return sides, sum(t.numel() * t.element_size() for t in ema_tensors)


def ema_group(ctx) -> dict[str, dict]:
    """The fused update against two per-parameter loops (embedded and tiny model), and against the copy bandwidth:
    it reads the EMA and the policy and writes the EMA, 3 bytes moved per parameter byte."""
    found = {}
    for name in ("embedded", "tiny"):
        path = resolve_model_path(name)
        sides, ema_bytes = _ema_sides(path)
        times = take_turns(sides, rounds=5)
        fused = best(times["fused"])
        for loop in ("reference_loop", "inplace_loop"):
            slow = best(times[loop])
            found[f"ema_{loop}_{name}"] = {"ours": fused, "baseline": slow, "value": slow / fused, "model": name,
                                           "detail": f"{slow * 1e3:.1f} ms vs {fused * 1e3:.1f} ms"}  # fmt: skip
        if name == "embedded":
            moved = 3 * ema_bytes
            memory, kernel = memory_bytes_per_s()
            found["ema_bandwidth_embedded"] = {"ours": moved / fused, "baseline": memory, "model": name,
                                               "value": moved / fused / memory,
                                               "detail": f"{moved / fused / 1e9:.1f} GB/s ({moved / 2**20:.0f} MiB "
                                               f"moved) vs {memory / 1e9:.1f} GB/s (512 MiB {kernel}, STREAM-style)"}  # fmt: skip
    return found


def generation_group(ctx, n: int = 4, new_tokens: int = 16) -> dict[str, dict]:
    """SAPO's segments for ``n`` prompts: one batch, or one prompt at a time (same sampler, same budget)."""
    tokenizer = load_tokenizer(ctx.model_path)
    model = AutoModelForCausalLM.from_pretrained(ctx.model_path).to(device())
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=n)
    contexts = [e.prompt_ids for e in examples]
    kwargs = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=None, **sampling_settings())

    def run(batch: int) -> None:
        for i in range(0, n, batch):
            sample_continuations(model, contexts[i : i + batch], new_tokens, generator=torch.Generator().manual_seed(0),
                                 **kwargs)  # fmt: skip

    times = take_turns({"batched": partial(run, n), "single": partial(run, 1)}, ctx.rounds)
    batched, single = best(times["batched"]), best(times["single"])
    return {"segment_batching": {"ours": batched, "baseline": single, "value": single / batched,
                                 "detail": f"{single:.2f} s vs {batched:.2f} s, {new_tokens} tokens each"}}  # fmt: skip


def eval_generation_group(ctx, prompts: int = 16, max_new_tokens: int = 64, batch_size: int = 8) -> dict[str, dict]:
    """Benchmark answers: ``generate_chat`` batched (length-sorted batches, one KV cache each) vs one prompt at a
    time, FastChat's ``gen_model_answer`` way; same prompts (the AlpacaEval and MT-Bench fixtures), greedy."""
    from sapo.evaluate.alpacaeval import load_alpacaeval_data
    from sapo.evaluate.generation import generate_chat, load_for_eval
    from sapo.evaluate.mtbench import load_mtbench_data

    if ctx.quick:
        prompts, max_new_tokens = 8, 16
    texts = [row["instruction"] for row in load_alpacaeval_data("fixtures").rows]
    texts += [q["turns"][0] for q in load_mtbench_data("fixtures").questions]
    conversations = [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(prompts)]
    loaded = load_for_eval(ctx.model, device=device())
    answers: dict[int, list[str]] = {}

    def run(size: int) -> None:
        answers[size] = generate_chat(loaded, conversations, max_new_tokens=max_new_tokens, batch_size=size,
                                      desc=f"batch_size {size}")  # fmt: skip

    times = take_turns({"batched": partial(run, batch_size), "single": partial(run, 1)}, rounds=1)
    batched, single = best(times["batched"]), best(times["single"])
    same = sum(a == b for a, b in zip(answers[batch_size], answers[1], strict=True))
    return {"eval_batching": {"ours": batched, "baseline": single, "value": single / batched,
                              "detail": f"{single:.2f} s vs {batched:.2f} s, {prompts} prompts x {max_new_tokens} "
                              f"tokens; greedy answers identical {same}/{prompts} (padding can flip near-ties)"}}  # fmt: skip
