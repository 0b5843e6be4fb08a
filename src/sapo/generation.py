"""Batched decoding, the one loop every generator in the harness runs: SAPO's EMA segments,
SPIN's opponent answers, MT-Bench and AlpacaEval answers.

Left-padded rows with a KV cache; each row stops after its first end-of-sequence token or at
its own budget. Sampling goes through transformers' own logits warpers (temperature, top-k,
top-p, the order ``generate`` applies them in) and draws from an explicit ``torch.Generator``,
never the global RNG, so a resumed SAPO run continues the same stream bit for bit.

``weight_major=True`` (``cpu_fast_decoding`` in configs and ``sapo eval``) is the one opt-in that trades bits for
speed: see ``weight_major_linears``.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from sapo.log import get_logger

logger = get_logger(__name__)


def eos_set(eos_token_id: int | Iterable[int] | None) -> frozenset[int]:
    """Normalise one end-of-sequence id, several (some models have more than one), or None."""
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset({eos_token_id})
    return frozenset(int(i) for i in eos_token_id)


def stop_token_ids(model: torch.nn.Module, tokenizer) -> tuple[list[int], int]:
    """(end-of-sequence ids, pad id) for generating with ``model``: the generation config's EOS ids plus the
    tokenizer's (chat models end a turn with a token the base config may not list); pad falls back to EOS."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ids, pad


def sampling_warpers(temperature: float, top_k: int | None, top_p: float) -> LogitsProcessorList:
    """transformers' warpers for ``temperature``, ``top_k`` (0 or None: off) and ``top_p`` (1.0: off)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to sample, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        warpers.append(TopKLogitsWarper(int(top_k)))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(float(top_p)))
    return warpers


_WARNED_NO_LINEAR: set[str] = set()  # model classes told once that the option does little for them

# Rows (batch x positions of one forward) for which the weight-first product is used: where it was measured
# faster (results/bench/NOTES.md, a whole decoding step of the 135M model on 2 CPU cores, rows 1, 2, 3, 4, 6, 8,
# 12: 0.97x, 2.6x, 2.7x, 2.0x, 1.4x, 1.3x, 0.89x). One row, 9 or more (a prefill of a batch or of a longer
# prompt) take the standard product, bit for bit as without the option; a prefill of 2-8 positions is rows too.
WEIGHT_MAJOR_ROWS = range(2, 9)


def weight_major_applies(enabled: bool, device: str | torch.device) -> bool:
    """Whether ``cpu_fast_decoding`` changes anything for a model on ``device``: on a CPU only. What records of the
    option (results.json, stored answers, SPIN's settings) say, and what ``weight_major_linears`` does."""
    return bool(enabled) and torch.device(device).type == "cpu"


def _weight_major_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] not in WEIGHT_MAJOR_ROWS:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    out = torch.matmul(self.weight, flat.T).T.contiguous()
    if self.bias is not None:
        out = out + self.bias
    return out.reshape(*x.shape[:-1], self.out_features)


@contextmanager
def weight_major_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """While open, each plain ``nn.Linear`` of a CPU model computes a few rows as ``W @ x.T`` instead of
    ``x @ W.T``; yields how many layers it changed (0 when off, or on another device).

    Why: MKL's sgemm (torch's CPU BLAS) takes a slow path for inputs of 2-3 rows, reading the weights at a third of
    the speed of the same product with the weight on the left (bench notes: a decoding step of 2 rows on the
    135M model 100 ms -> 39 ms). The sums run in another order, so logits move by ~1e-5 relative and a sampled or
    greedy sequence can take another token at a near tie: seeded runs are not bit-identical to the default, which
    is why this is opt-in. Only rows in ``WEIGHT_MAJOR_ROWS`` take it. Layers with their own forward (accelerate
    hooks) and subclasses of ``nn.Linear`` (quantized layers) are left alone; a LoRA layer's base is a plain
    ``nn.Linear`` and is changed. A model whose decoder layers have none (GPT-2's ``Conv1D``: only its output layer
    would change) gets a warning, once per model class."""
    if not weight_major_applies(enabled, next(model.parameters()).device):
        yield 0
        return
    changed = [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in vars(m)]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not [m for m in changed if m is not head] and type(model).__name__ not in _WARNED_NO_LINEAR:
        _WARNED_NO_LINEAR.add(type(model).__name__)
        logger.warning(f"cpu_fast_decoding: {type(model).__name__}'s layers are no plain nn.Linear (changed: "
                       f"{'its output layer only' if changed else 'none'}); it decodes about as fast as without the "
                       "option")  # fmt: skip
    for module in changed:
        module.forward = types.MethodType(_weight_major_forward, module)
    try:
        yield len(changed)
    finally:
        for module in changed:
            del module.forward


def _forward_kwarg_names(model: torch.nn.Module) -> tuple[str, bool]:
    """The cache keyword of the model class's forward (transformers 5.2x renamed ``past_key_values`` to
    ``cache``), and whether it takes ``logits_to_keep``. Read from the class: trainers patch the instance."""
    params = inspect.signature(type(model).forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    return cache_name, "logits_to_keep" in params


def _left_padded(contexts: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask, the mask built from the lengths: never from ``ids != pad``
    (SmolLM2's pad equals its EOS)."""
    width = max(len(c) for c in contexts)
    input_ids = torch.full((len(contexts), width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(contexts), width), dtype=torch.long, device=device)
    for i, context in enumerate(contexts):
        input_ids[i, width - len(context) :] = torch.tensor(context, dtype=torch.long)
        attention_mask[i, width - len(context) :] = 1
    return input_ids, attention_mask


def sample_continuations(
    model: torch.nn.Module,
    contexts: list[list[int]],
    max_new_tokens: list[int] | int,
    *,
    pad_token_id: int,
    eos_token_id: int | Iterable[int] | None,
    temperature: float,
    top_k: int | None,
    top_p: float,
    generator: torch.Generator | None,
    do_sample: bool = True,
    weight_major: bool = False,
) -> list[list[int]]:
    """Continue each context by up to its own ``max_new_tokens``; return the new tokens per row.

    A row stops after its first EOS (kept in its output) or at its budget. Position ids come
    from the mask, so a batched row decodes as it would alone. Sampling draws
    ``multinomial(softmax(warpers(logits)))`` in float32 on ``generator``'s device;
    ``do_sample=False`` takes the argmax. ``weight_major``: the opt-in CPU product of ``weight_major_linears``.
    """
    n = len(contexts)
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != n or any(b < 0 for b in budgets):
        raise ValueError(f"max_new_tokens must be >= 0, one per context; got {max_new_tokens!r} for {n} contexts")
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    if do_sample and generator is None:
        raise ValueError("sampling needs a generator (an explicit torch.Generator)")
    warpers = sampling_warpers(temperature, top_k, top_p) if do_sample else None
    outputs: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max(budgets) == 0:
        return outputs

    device = next(model.parameters()).device
    eos = torch.tensor(sorted(eos_set(eos_token_id)), dtype=torch.long, device=device)
    lengths = torch.tensor([len(c) for c in contexts], device=device)
    input_ids, attention_mask = _left_padded(contexts, pad_token_id, device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    budget = torch.tensor(budgets, device=device)
    done = budget == 0
    cache_name, has_logits_to_keep = _forward_kwarg_names(model)
    extra = {"logits_to_keep": 1} if has_logits_to_keep else {}

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), weight_major_linears(model, weight_major):
            cache = DynamicCache(config=model.config)
            for step in range(max(budgets)):
                out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=True, **{cache_name: cache}, **extra)  # fmt: skip
                logits = out.logits[:, -1, :].float()
                if do_sample:
                    probs = warpers(input_ids, logits).softmax(dim=-1).to(generator.device)
                    token = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
                else:
                    token = logits.argmax(dim=-1)
                for row, t, finished in zip(outputs, token.tolist(), done.tolist(), strict=True):
                    if not finished:
                        row.append(t)
                done = done | torch.isin(token, eos) | (budget <= step + 1)
                if bool(done.all()):
                    break
                # Finished rows keep decoding filler; their outputs are no longer read.
                input_ids = token.masked_fill(done, pad_token_id).unsqueeze(-1)
                attention_mask = torch.cat([attention_mask, torch.ones_like(input_ids)], dim=-1)
                position_ids = (lengths + step).unsqueeze(-1)
    finally:
        model.train(was_training)
    return outputs
