"""Answers for the judged benchmarks (MT-Bench, AlpacaEval): batched, with the model's chat template.

FastChat's ``gen_model_answer`` assumes CUDA and decodes one question at a time; we render
every conversation with the model's own chat template (the one it was trained with), sort by
length so a batch wastes little padding, and decode a batch at once with a KV cache through
the same ``sample_continuations`` that SAPO's generator uses. Greedy unless a temperature is
given (MT-Bench's per-category temperatures), then sampled from a seeded generator. Every benchmark's
prompts plus its answer budget must fit the model's context (``check_context``): ``sapo eval`` checks what it can
before loading the model, and ``generate_chat`` checks each set of prompts before decoding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sapo.chat import generation_prompt_ids, resolve_chat_template
from sapo.errors import RecipeError
from sapo.generation import sample_continuations, stop_token_ids, weight_major_applies
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
    weight_major: bool = False  # --cpu-fast-decoding (sapo.generation.weight_major_linears)

    @property
    def decoding(self) -> dict:
        """What stored answers must have been made with besides weights and settings: ``{"cpu_fast_decoding":
        True}`` when the opt-in is in effect, else nothing (so files written before the option still match)."""
        return {"cpu_fast_decoding": True} if weight_major_applies(self.weight_major, self.device) else {}

    @property
    def model_id(self) -> str:
        """The short id upstream files carry (FastChat's ``model_id``, AlpacaEval's ``generator``): a local
        folder's own name, else the name as given (a hub id, ``embedded``), never a machine's full path."""
        return Path(self.name).name if Path(self.name).exists() else self.name


def load_for_eval(name: str, *, dtype: str = "float32", device: str = "cpu", chat_template: str | None = None,
                  weight_major: bool = False):  # fmt: skip
    """Load ``name`` (hub name, folder, ``embedded`` or ``tiny``) for generation; ``weight_major``: decode with
    ``sapo.generation.weight_major_linears`` (a CPU-only opt-in that changes numerics)."""
    path = str(resolve_model_path(name))
    tokenizer = load_tokenizer(path)
    if chat_template:
        tokenizer.chat_template = resolve_chat_template(chat_template)
    if tokenizer.chat_template is None:
        raise RecipeError(f"{name}: the tokenizer has no chat template; pass --chat-template (chatml, zephyr, llama3)")
    model = load_causal_lm(path, dtype=getattr(torch, dtype)).to(device).eval()
    return LoadedModel(name, path, model, tokenizer, dtype, device, weights_fingerprint(path), weight_major)


# Where a config states its context, in lm-eval's order (lm_eval.models.utils.resolve_max_length).
CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")


def model_context(config) -> tuple[int, str] | None:
    """(positions, the config field that says so) of a model's config (or its folder), or None when it states none.
    A multimodal config's ``text_config`` comes first, as in lm-eval."""
    if isinstance(config, (str, Path)):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(config))
    for part in (getattr(config, "text_config", None), config):
        for name in CONTEXT_FIELDS:
            if isinstance(getattr(part, name, None), int):
                return getattr(part, name), name
    return None


def check_context(benchmark: str, budget: int, context: tuple[int, str] | None, longest_prompt: int | None = None,
                  flag: str | None = "--max-new-tokens") -> None:  # fmt: skip
    """Refuse a benchmark whose answer budget (plus its longest prompt, when known) does not fit the model's context:
    past it a model with learned positions fails mid-run (lm-eval with an AssertionError) and others decode garbage.
    """
    if context is None:
        return
    positions, field_name = context
    used = budget + (longest_prompt or 0)
    if used < positions or longest_prompt is not None and used == positions:
        return
    prompt = f"the longest prompt ({longest_prompt} tokens) + " if longest_prompt is not None else ""
    room = positions - (longest_prompt or 1)
    fix = f"pass {flag} {room} or less" if flag and room > 0 else "leave it out of --suite for this model"
    raise RecipeError(f"{benchmark}: {prompt}the answer budget of {budget} new tokens does not fit the model's "
                      f"context of {positions} positions ({field_name} in its config); {fix}")  # fmt: skip


def lm_eval_budgets(benchmark: str) -> dict[str, int]:
    """``{task: max_gen_toks}`` of a benchmark's generating lm-eval tasks, read from lm-eval's task YAML."""
    import yaml

    from sapo.evaluate.lm_eval_suite import _lm_eval_tasks_dir, load_benchmark

    class Loader(yaml.SafeLoader):  # lm-eval's YAML holds !function tags
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    budgets = {}
    for key, spec in load_benchmark(benchmark)["tasks"].items():
        task = yaml.load((_lm_eval_tasks_dir() / spec["builtin"]).read_text(), Loader=Loader)  # noqa: S506
        if task.get("output_type") == "generate_until":  # 256: lm-eval's HFLM.max_gen_toks when the task sets none
            budgets[key] = (task.get("generation_kwargs") or {}).get("max_gen_toks", 256)
    return budgets


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

    if batch_size < 1:  # the CLI checks its flag; a library caller would otherwise loop forever (start += 0)
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    tok = loaded.tokenizer
    temps = temperatures or [0.0] * len(conversations)
    prompts = [generation_prompt_ids(tok, messages) for messages in conversations]
    if prompts:  # MT-Bench's second turns are known only now
        check_context(
            desc, max_new_tokens, model_context(getattr(loaded.model, "config", None)), max(map(len, prompts))
        )
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
                                           top_p=1.0, generator=generator, do_sample=t > 0,
                                           weight_major=loaded.weight_major)  # fmt: skip
            for i, ids in zip(batch, outputs, strict=True):
                answers[i] = tok.decode([x for x in ids if x not in eos], skip_special_tokens=True).strip()
            start += len(batch)
            bar.update(len(batch))
    return answers
