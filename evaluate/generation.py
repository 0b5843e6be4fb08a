"""Answers for the judged benchmarks (MT-Bench, AlpacaEval): batched, with the model's chat template.

FastChat's ``gen_model_answer`` assumes CUDA and decodes one question at a time; we render
every conversation with the model's own chat template (the one it was trained with), sort by
length so a batch wastes little padding, and decode a batch at once with a KV cache through
the same ``sample_continuations`` that SAPO's generator uses. Greedy unless a temperature is
given (MT-Bench's per-category temperatures), then sampled from a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sapo.chat import generation_prompt_ids, resolve_chat_template
from sapo.errors import RecipeError
from sapo.generation import sample_continuations, stop_token_ids
from sapo.log import progress_disabled
from sapo.models import load_causal_lm, load_tokenizer, resolve_model_path, weights_fingerprint


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, with what results record about them."""

    name: str  # as the user gave it
    path: str  # the local folder it was loaded from
    model: torch.nn.Module
    tokenizer: object
    dtype: str
    device: str
    fingerprint: str | None = None  # sha256 of the weights (results.weights_fingerprint)

    @property
    def model_id(self) -> str:
        """The short id upstream files carry (FastChat's ``model_id``, AlpacaEval's ``generator``): a local
        folder's own name, else the name as given (a hub id, ``embedded``), never a machine's full path."""
        return Path(self.name).name if Path(self.name).exists() else self.name


def load_for_eval(name: str, *, dtype: str = "float32", device: str = "cpu", chat_template: str | None = None):
    """Load ``name`` (hub name, folder, ``embedded`` or ``tiny``) for generation."""
    path = str(resolve_model_path(name))
    tokenizer = load_tokenizer(path)
    if chat_template:
        tokenizer.chat_template = resolve_chat_template(chat_template)
    if tokenizer.chat_template is None:
        raise RecipeError(f"{name}: the tokenizer has no chat template; pass --chat-template (chatml, zephyr, llama3)")
    model = load_causal_lm(path, dtype=getattr(torch, dtype)).to(device).eval()
    return LoadedModel(name, path, model, tokenizer, dtype, device, weights_fingerprint(path))


def generate_chat(
    loaded: LoadedModel,
    conversations: list[list[dict]],
    *,
    max_new_tokens: int = 1024,
    batch_size: int = 8,
    temperatures: list[float] | None = None,
    seed: int = 0,
    desc: str = "generating",
) -> list[str]:
    """One assistant reply per conversation (each ends with a user turn), in input order.

    ``temperatures``: one per conversation; 0 (or None for all) decodes greedily. Rows with
    different temperatures never share a batch.
    """
    from tqdm.auto import tqdm

    tok = loaded.tokenizer
    temps = temperatures or [0.0] * len(conversations)
    prompts = [generation_prompt_ids(tok, messages) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: (temps[i], -len(prompts[i])))
    generator = torch.Generator(device=loaded.device).manual_seed(seed)
    eos, pad = stop_token_ids(loaded.model, tok)
    answers: list[str | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, disable=progress_disabled()) as bar:
        start = 0
        while start < len(order):
            t = temps[order[start]]
            batch = [i for i in order[start : start + batch_size] if temps[i] == t]
            outputs = sample_continuations(loaded.model, [prompts[i] for i in batch], max_new_tokens,
                                           pad_token_id=pad, eos_token_id=eos, temperature=t or 1.0, top_k=0,
                                           top_p=1.0, generator=generator, do_sample=t > 0)  # fmt: skip
            for i, ids in zip(batch, outputs, strict=True):
                answers[i] = tok.decode([x for x in ids if x not in eos], skip_special_tokens=True).strip()
            start += len(batch)
            bar.update(len(batch))
    return answers
