"""The segment step of SAPO: cut the real answer y+ into A | B | C, let the EMA model write B'
in place of B, and splice the rejected answer y- back together.

The cut and the splice are pure functions on token-id lists. ``sample_continuations`` is the
one place that runs a model: batched left-padded decoding with a KV cache, sampling from an
explicit ``torch.Generator`` (never the global RNG).
"""

import inspect
from collections.abc import Iterable

import torch
from transformers import DynamicCache


def _eos_set(eos_token_id: int | Iterable[int] | None) -> frozenset[int]:
    """Normalise one end-of-sequence id, several (some models have more than one), or None."""
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset({eos_token_id})
    return frozenset(int(i) for i in eos_token_id)


def segment_bounds(answer_len: int, max_new_tokens: int, room: int, generator: torch.Generator) -> tuple[int, int]:
    """Choose where the segment B starts in an answer of ``answer_len`` tokens, and its length.

    The length is L = min(max_new_tokens, answer_len). The latest start is
    ``answer_len - 3 - L``, so that at least 3 real tokens (the last is the EOS the reference
    appends to the answer) follow the segment. If it is positive the start is uniform over the
    integers 0..min(latest, room) *inclusive*, else 0. The "-3" and the inclusive upper bound
    are the reference code's (``random.randint(0, k)`` in ``tokenize_batch_element``).

    ``room`` is how many answer tokens fit before the segment under the length limit:
    ``max_length - min(prompt_len, max_prompt_length) - L`` in the reference. A negative room
    (the reference's ``randint`` would raise) gives start 0.
    """
    if answer_len < 0 or max_new_tokens < 0:
        raise ValueError(f"answer_len and max_new_tokens must be >= 0, got {answer_len}, {max_new_tokens}")
    length = min(max_new_tokens, answer_len)
    max_start = answer_len - 3 - length
    if max_start <= 0:
        return 0, length
    hi = max(0, min(max_start, room))
    start = int(torch.randint(0, hi + 1, (1,), generator=generator).item())
    return start, length


def splice(
    answer_ids: list[int],
    start: int,
    length: int,
    generated_ids: list[int],
    eos_token_id: int | Iterable[int] | None,
) -> tuple[list[int], bool, int]:
    """Build the rejected answer from the real one and the generated segment.

    With A = answer[:start] and C = answer[start + length:], the generated B' is first cut to
    ``length`` tokens and then right after its first EOS (the EOS is kept). If B' ended with EOS
    the rejected answer is A + B' and the real tail C is dropped (the reference code's choice;
    the paper only describes A + B' + C); otherwise it is A + B' + C.

    A B' shorter than ``length`` without EOS is spliced as A + B' + C with C still starting at
    ``start + length``, as the reference does: the answer then comes out shorter.

    Returns ``(rejected_ids, ended_early, generated_len)``, ``generated_len = len(B')``.
    """
    if not 0 <= start <= len(answer_ids) or length < 0:
        raise ValueError(f"bad segment start={start} length={length} for an answer of {len(answer_ids)} tokens")
    eos = _eos_set(eos_token_id)
    segment = list(generated_ids[:length])
    ended_early = False
    for i, token in enumerate(segment):
        if token in eos:
            segment, ended_early = segment[: i + 1], True
            break
    prefix = list(answer_ids[:start])
    tail = [] if ended_early else list(answer_ids[start + length :])
    return prefix + segment + tail, ended_early, len(segment)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering over the last dimension; removed entries become -inf.

    Same rule as transformers' ``TopKLogitsWarper`` then ``TopPLogitsWarper``: top-k keeps
    every token scoring at least the k-th largest; top-p keeps the smallest set of most likely
    tokens whose probability sums to at least ``top_p`` (always at least one token).
    ``top_k`` 0 or None and ``top_p`` 1.0 switch the filter off. No temperature is applied.
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k:
        k = min(int(top_k), logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the more likely ones before it already reach top_p; the first stays.
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _forward_kwarg_names(model: torch.nn.Module) -> tuple[str, bool]:
    """The cache keyword of the model class's forward (transformers 5.2x renamed
    ``past_key_values`` to ``cache``), and whether it takes ``logits_to_keep``. Read from the
    class, since trainers may patch the instance's ``forward``."""
    params = inspect.signature(type(model).forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    return cache_name, "logits_to_keep" in params


def stop_token_ids(model: torch.nn.Module, tokenizer) -> tuple[list[int], int]:
    """(end-of-sequence ids, pad id) for generating with ``model``: the generation config's EOS ids plus the
    tokenizer's (chat models end a turn with a token the base config may not list); pad falls back to EOS."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ids, pad


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
) -> list[list[int]]:
    """Continue each context by up to its own ``max_new_tokens``; return the new tokens per row.

    A row stops after its first EOS (kept in its output) or at its budget. Contexts are left
    padded; the attention mask comes from the context lengths, never from ``ids != pad``
    (SmolLM2's pad equals its EOS), and position ids from the mask, so a batched row decodes
    as it would alone. Sampling is ``multinomial(softmax(filter_logits(logits / temperature)))``
    in float32 on ``generator``'s device; ``do_sample=False`` takes the argmax.
    """
    n = len(contexts)
    budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != n or any(b < 0 for b in budgets):
        raise ValueError(f"max_new_tokens must be >= 0, one per context; got {max_new_tokens!r} for {n} contexts")
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token")
    if do_sample and (temperature <= 0 or generator is None):
        raise ValueError(f"sampling needs temperature > 0 and a generator, got {temperature}, {generator}")
    outputs: list[list[int]] = [[] for _ in range(n)]
    if n == 0 or max(budgets) == 0:
        return outputs

    device = next(model.parameters()).device
    eos = torch.tensor(sorted(_eos_set(eos_token_id)), dtype=torch.long, device=device)
    lengths = torch.tensor([len(c) for c in contexts], device=device)
    width = int(lengths.max())
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for i, context in enumerate(contexts):
        input_ids[i, width - len(context) :] = torch.tensor(context, dtype=torch.long)
        attention_mask[i, width - len(context) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    budget = torch.tensor(budgets, device=device)
    done = budget == 0
    cache_name, has_logits_to_keep = _forward_kwarg_names(model)
    extra = {"logits_to_keep": 1} if has_logits_to_keep else {}

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            for step in range(max(budgets)):
                out = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=True,
                    **{cache_name: cache},
                    **extra,
                )
                logits = out.logits[:, -1, :].float()
                if do_sample:
                    logits = filter_logits(logits / temperature, top_k, top_p)
                    probs = logits.softmax(dim=-1).to(generator.device)
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
