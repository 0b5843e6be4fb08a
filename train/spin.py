"""SPIN (Chen et al. 2024, "Self-Play Fine-Tuning", arXiv 2401.01335; code uclaml/SPIN), a baseline.

TRL has no SPIN trainer (trl PR#1344 and #3011 were closed), so the iteration driver lives
here; the loss is TRL's DPO sigmoid loss, which is SPIN's logistic loss
``-log sigmoid(beta * [(log p(y) - log p_t(y)) - (log p(y') - log p_t(y'))])`` with y the real
answer and y' the opponent's. Iteration t:

1. the opponent (the base model for t = 0, else iteration t-1's model) answers every prompt
   greedily, at most ``spin_max_new_tokens`` tokens, batched with a KV cache; each answer is
   appended to ``iteration-t/generated.jsonl`` as soon as its batch is done, so a crash
   loses at most one batch and a rerun generates only the missing rows;
2. DPO on (prompt, real answer, generated answer) with the opponent frozen as reference and
   as the starting policy, at the iteration's learning rate and beta;
3. the model is saved to ``iteration-t/`` with ``manifest.json`` written last (what it started
   from, which data, the decoding settings): a finished iteration is never redone.

The final iteration's files are also linked into ``output_dir`` with the model card, the
same layout as every other method. Deviations from uclaml/SPIN, each deliberate: answers
are generated with the run's chat template (SPIN's generate.py used an "### Instruction:"
prompt unlike its SFT template, SPIN#9); by default an iteration trains on its own
generations only (``spin_mix_previous`` adds the previous iteration's, as SPIN's
iteration-1+ configs do).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from trl import DPOConfig

from sapo.errors import RecipeError
from sapo.files import append_rows, atomic_write_json, drop_partial_last_line, read_complete_rows
from sapo.log import get_logger, progress_disabled
from sapo.train.baselines import PairedDPOTrainer, paired_dpo_trainer
from sapo.train.checkpoints import AUTO, resume_point
from sapo.train.config import GeneratingArguments
from sapo.train.copies import gathered
from sapo.train.data import ChatExample, TokenLayout

logger = get_logger(__name__)
SPIN_REJECTED_FORMATS = ("retemplate", "raw")
MANIFEST = "manifest.json"  # written last into an iteration folder: its presence marks the iteration done


@dataclass
class SPINConfig(GeneratingArguments, DPOConfig):
    """Iterated self-play DPO. ``learning_rate`` and ``beta`` are replaced per iteration by
    ``spin_learning_rates`` / ``spin_betas``; every other trainer field applies to each iteration."""

    spin_iterations: int = field(
        default=3, metadata={"help": "Number of SPIN iterations (the SAPO paper's SPIN runs: 3)."}
    )
    spin_learning_rates: list[float] = field(
        default_factory=lambda: [5.0e-7, 1.0e-7, 1.0e-7],
        metadata={
            "help": "Learning rate of each iteration (SPIN paper: 5e-7 at iteration 0, 1e-7 later; its repo "
            "configs keep 5e-7 throughout)."
        },
    )
    spin_betas: list[float] = field(
        default_factory=lambda: [0.1, 0.1, 5.0],
        metadata={"help": "Beta of each iteration (SPIN paper: 0.1, and 5.0 at the last iteration)."},
    )
    spin_max_new_tokens: int = field(
        default=256, metadata={"help": "Most tokens the opponent writes per answer (SPIN's generate.py: 256)."}
    )
    spin_generation_batch_size: int = field(
        default=16, metadata={"help": "Prompts generated together (SPIN's generate.py default: 16)."}
    )
    spin_rejected_format: str = field(
        default="retemplate",
        metadata={
            "help": "How a generated answer becomes the rejected side. 'retemplate' (uclaml/SPIN generate.py:106 "
            "and alignment/data.py:35): its text, EOS dropped and leading whitespace stripped, rendered as an "
            "assistant turn by the chat template, so it ends with the template's end-of-turn marker even when "
            "generation was cut at spin_max_new_tokens, as the real answer does. 'raw': the generated tokens as "
            "they are (a cut-off answer then has no end marker).",
            "choices": list(SPIN_REJECTED_FORMATS),
        },
    )
    spin_mix_previous: bool = field(
        default=False,
        metadata={
            "help": "Train iteration t on iteration t-1's generated pairs too (SPIN repo, iteration 1 onwards); "
            "default: the current iteration's only."
        },
    )

    def __post_init__(self):
        if self.spin_iterations < 1:
            raise ValueError(f"spin_iterations: must be >= 1, got {self.spin_iterations}")
        for name in ("spin_learning_rates", "spin_betas"):
            values = getattr(self, name)
            if len(values) != self.spin_iterations:
                raise ValueError(f"{name}: needs one value per iteration ({self.spin_iterations}), got {values}")
            if any(v <= 0 for v in values):
                raise ValueError(f"{name}: values must be > 0, got {values}")
        if self.spin_rejected_format not in SPIN_REJECTED_FORMATS:
            raise ValueError(
                f"spin_rejected_format: expected 'retemplate' or 'raw', got {self.spin_rejected_format!r}"
            )
        for name in ("spin_max_new_tokens", "spin_generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        super().__post_init__()


class SPINIterationTrainer(PairedDPOTrainer):
    """One SPIN iteration: DPO with the opponent's answers as the rejected side."""

    card_method = "SPIN"
    _tag_names = ["trl", "spin", "sapo-harness"]


# --------------------------------------------------------------------------- resumable generation


def _read_generated(folder: Path) -> dict[int, list[int]]:
    """Rows already generated in ``folder`` (all ranks' files), by example index. A line cut
    short by a crash is ignored (and later overwritten)."""
    return {row["index"]: row["rejected_ids"] for path in sorted(folder.glob("generated*.jsonl"))
            for row in read_complete_rows(path)}  # fmt: skip


def retemplate(generated: list[int], tokenizer, layout: TokenLayout, eos: list[int], room: int | None,
               frame: tuple[str, str] | None = None) -> list[int]:  # fmt: skip
    """A generated answer as uclaml/SPIN trains on it (generate.py:106, alignment/data.py:35): the text before
    its first EOS, leading whitespace stripped, rendered as an assistant turn in ``layout``. Over ``room`` tokens
    (what ``max_length`` leaves after the prompt) the text is cut, never the end-of-turn marker after it."""
    cut = next((i for i, token in enumerate(generated) if token in eos), len(generated))
    before, after = frame or layout.answer_frame(tokenizer)  # ``frame``: answer_frame computed once by the caller
    ids = layout.answer_tokens(tokenizer, before + tokenizer.decode(generated[:cut]).lstrip() + after)
    if room is None or len(ids) <= room:
        return ids
    tail = len(layout.answer_tokens(tokenizer, after))  # the marker (and the extra EOS) as tokenized alone
    return ids[: max(room - tail, 0)] + ids[-tail:] if tail < room else ids[-room:]


def generate_rejected(
    model,
    tokenizer,
    examples: list[ChatExample],
    folder: Path,
    settings: dict,
    *,
    rank: int = 0,
    world: int = 1,
    layout: TokenLayout | None = None,
) -> int:
    """Greedy answers of ``model`` for this rank's share of ``examples`` not yet in ``folder``.

    ``settings`` (max_new_tokens, batch_size, max_length, rejected_format) are written to
    ``generation.json``; a folder generated with other settings is refused rather than mixed.
    With ``settings["rejected_format"] == "retemplate"`` each answer is re-templated in ``layout``
    (``retemplate``). Returns the number of rows generated by this call.
    """
    from tqdm.auto import tqdm

    from sapo.generation import sample_continuations, stop_token_ids

    if settings.get("rejected_format") == "retemplate" and layout is None:
        raise ValueError("generate_rejected: rejected_format 'retemplate' needs the run's token layout")
    folder.mkdir(parents=True, exist_ok=True)
    settings_path = folder / "generation.json"
    stored = json.loads(settings_path.read_text()) if settings_path.is_file() else None
    if stored is not None and "rejected_format" in settings:
        stored.setdefault("rejected_format", "raw")  # written before the field existed: raw tokens
    if stored is not None and stored != settings:
        raise RecipeError(f"{folder}: generated with other settings ({settings_path}); delete the folder to redo it")
    if rank == 0:
        atomic_write_json(settings_path, settings)
    done = _read_generated(folder)
    todo = [i for i in range(len(examples)) if i not in done and i % world == rank]
    todo.sort(key=lambda i: -len(examples[i].prompt_ids))  # similar lengths share a batch: less padding
    path = folder / ("generated.jsonl" if world == 1 else f"generated_rank{rank}.jsonl")
    drop_partial_last_line(path)  # this rank's own file only
    eos, pad = stop_token_ids(model, tokenizer)
    frame = layout.answer_frame(tokenizer) if settings.get("rejected_format") == "retemplate" else None
    batch_size = settings["batch_size"]
    bar = tqdm(total=len(todo), desc=f"SPIN generation {folder.name}", disable=rank != 0 or progress_disabled())
    with gathered(model), path.open("a", encoding="utf-8") as out, bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [examples[i].prompt_ids for i in batch]
            budgets = [min(settings["max_new_tokens"], (settings["max_length"] or 10**9) - len(p)) for p in prompts]
            answers = sample_continuations(model, prompts, budgets, pad_token_id=pad, eos_token_id=eos,
                                           temperature=1.0, top_k=0, top_p=1.0, generator=None, do_sample=False,
                                           weight_major=settings.get("backend", "").endswith("+weight-major"))  # fmt: skip
            if settings.get("rejected_format") == "retemplate":
                room = [settings["max_length"] - len(p) if settings["max_length"] else None for p in prompts]
                answers = [retemplate(a, tokenizer, layout, eos, r, frame) for a, r in zip(answers, room, strict=True)]
            append_rows(out, [{"index": i, "where": examples[i].where, "rejected_ids": answer,
                               "text": tokenizer.decode(answer)} for i, answer in zip(batch, answers, strict=True)])  # fmt: skip
            bar.update(len(batch))
    return len(todo)


# --------------------------------------------------------------------------- the iteration driver


def iteration_folder(config: SPINConfig, t: int) -> Path:
    return Path(config.output_dir) / f"iteration-{t}"


def _pairs(examples: list[ChatExample], generated: dict[int, list[int]]) -> list[ChatExample]:
    return [dataclasses.replace(e, rejected_ids=generated[i]) for i, e in enumerate(examples)]


def run_spin(config: SPINConfig, tokenizer, examples: list[ChatExample]) -> Path:
    """Run every unfinished SPIN iteration; return the folder of the final model."""
    from accelerate import PartialState

    from sapo.chat import fit_embeddings
    from sapo.log import engine_name
    from sapo.models import load_causal_lm, resolve_model_path, weights_dtype, weights_fingerprint

    _ = config.device  # sets up the process group as the trainers will (CPU/gloo when use_cpu)
    state = PartialState()
    dtype = weights_dtype(config.model_dtype)  # fp32 master weights unless asked: bf16 is mixed precision
    opponent = resolve_model_path(config.model_name_or_path)
    previous_generated: dict[int, list[int]] | None = None
    # Generated rows are matched to prompts by index: the prompts themselves must not have changed.
    prompts_hash = hashlib.sha256(json.dumps([e.prompt_ids for e in examples]).encode()).hexdigest()
    import torch

    from sapo.generation import weight_major_applies

    # Recorded only where it applies (a CPU), as sapo eval records it: on a GPU the option changes nothing.
    device = "cpu" if config.use_cpu or not torch.cuda.is_available() else "cuda"
    fast_decoding = weight_major_applies(config.cpu_fast_decoding, device)
    for t in range(config.spin_iterations):
        folder = iteration_folder(config, t)
        settings = {"opponent": str(opponent), "max_new_tokens": config.spin_max_new_tokens, "decoding": "greedy",
                    "batch_size": config.spin_generation_batch_size, "max_length": config.max_length,
                    "prompts_sha256": prompts_hash,
                    "backend": "transformers" + ("+weight-major" if fast_decoding else ""),
                    "rejected_format": config.spin_rejected_format}  # fmt: skip
        if (folder / MANIFEST).is_file():  # finished earlier: its model is the next opponent
            done = json.loads((folder / MANIFEST).read_text())
            now = {
                "learning_rate": config.spin_learning_rates[t],
                "beta": config.spin_betas[t],
                "generation": settings,
            }
            if {k: done.get(k) for k in now} != now:
                raise RecipeError(f"{folder} was made with other settings ({MANIFEST}); delete {config.output_dir} "
                                  "to retrain, or use another output_dir")  # fmt: skip
            logger.info(f"SPIN iteration {t}: done earlier ({folder})")
            previous_generated, opponent = _read_generated(folder), folder
            continue
        model = load_causal_lm(str(opponent), dtype=dtype)
        if config.chat_format:  # a base model whose vocabulary lacks ChatML's tokens (sapo.chat.setup_chat_format)
            fit_embeddings(model, tokenizer)
        model.to(state.device)
        generate_rejected(model, tokenizer, examples, folder, settings, rank=state.process_index,
                          world=state.num_processes, layout=TokenLayout.from_config(config))  # fmt: skip
        state.wait_for_everyone()
        generated = _read_generated(folder)
        missing = [i for i in range(len(examples)) if i not in generated]
        if missing:
            raise RuntimeError(f"{folder}: {len(missing)} prompts have no generated answer (first: {missing[0]})")
        pairs = _pairs(examples, generated)
        if config.spin_mix_previous and previous_generated is not None:
            pairs += _pairs(examples, previous_generated)
        args = dataclasses.replace(config, output_dir=str(folder), learning_rate=config.spin_learning_rates[t],
                                   beta=config.spin_betas[t])  # fmt: skip
        trainer = _iteration_trainer(args, model, tokenizer, pairs)
        logger.info(f"SPIN iteration {t}: {len(pairs)} pairs; engine: {engine_name(trainer.accelerator)}")
        # An iteration killed before its first complete checkpoint (or in generation) starts its training afresh.
        resume = resume_point(folder, AUTO if config.resume_from_checkpoint else None,
                              main_process=state.is_main_process)  # fmt: skip
        state.wait_for_everyone()
        trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(str(folder))
        trainer.save_state()
        if state.is_main_process:
            tokenizer.save_pretrained(folder)
            manifest = {"iteration": t, "opponent": str(opponent), "reference": str(opponent),
                        "reference_weights_sha256": weights_fingerprint(Path(opponent)),
                        "learning_rate": args.learning_rate, "beta": args.beta, "pairs": len(pairs),
                        "mixed_previous_iteration": bool(config.spin_mix_previous and previous_generated),
                        "generation": settings, "global_step": trainer.state.global_step}  # fmt: skip
            atomic_write_json(folder / MANIFEST, manifest)
        state.wait_for_everyone()
        del trainer, model
        previous_generated, opponent = generated, folder
    output = Path(config.output_dir)
    if state.is_main_process:
        _publish_final(Path(opponent), output, config)
    return output


def _iteration_trainer(args: SPINConfig, model, tokenizer, pairs: list[ChatExample]) -> SPINIterationTrainer:
    """DPO against the opponent, frozen as the reference (``model`` is the opponent too)."""
    return paired_dpo_trainer(args, model, tokenizer, pairs, trainer_cls=SPINIterationTrainer)


def _publish_final(last: Path, output: Path, config: SPINConfig) -> None:
    """Put the last iteration's model at ``output`` (hard links: no second copy of the weights)."""
    from sapo.train.model_card import write_model_card

    skip = {MANIFEST, "generation.json", "README.md", "sapo_config.json", "training_args.bin", "trainer_state.json"}
    for source in last.iterdir():
        if source.is_file() and source.name not in skip and not source.name.startswith("generated"):
            target = output / source.name
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system
                shutil.copy2(source, target)
    write_model_card(output, config, method="SPIN")
