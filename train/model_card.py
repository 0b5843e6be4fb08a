"""A model card every trainer writes next to its final weights: method, base model, data, config.

Every method (SFT, DPO, ORPO, SPIN, SAPO) writes the same two files, so ``sapo eval`` and
``sapo reproduce`` read any run alike: ``README.md`` (the card) and ``sapo_config.json`` (the
full configuration plus ``method``).
"""

from __future__ import annotations

import json
from pathlib import Path

from sapo import __version__
from sapo.files import atomic_write_text

_CARD = """---
library_name: transformers
tags: [sapo-harness, {tag}]
base_model: {base}
---
# {method} on {base}

Trained with the SAPO harness {version} (Self-Augmented Preference Optimization, Yin et al. 2024,
arXiv 2405.20830; not Soft Adaptive Policy Optimization).

| | |
|---|---|
| method | {method} |
| base model | `{base}` |
| data | `{data}` |
| chat template | {template} |
| steps / epochs | max_steps={max_steps}, num_train_epochs={epochs} |
| learning rate | {lr} ({scheduler}, {optim}) |
| beta | {beta} |
| seed | {seed} |

The full configuration is in `sapo_config.json`. {scale_note}
"""


def _base_name(name: str) -> str:
    from sapo.models import EMBEDDED, EMBEDDED_HUB_NAME

    return f"{EMBEDDED_HUB_NAME} (embedded GGUF copy)" if name == EMBEDDED else name


def _plain(value) -> str:
    return str(getattr(value, "value", value))  # enums (scheduler, optimizer) by their value


def write_model_card(folder: Path, args, method: str) -> Path:
    """Write README.md and sapo_config.json into ``folder`` (the final-policy folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"method": method, **args.to_dict()}  # TrainingArguments.to_dict() already redacts *_token fields
    atomic_write_text(folder / "sapo_config.json", json.dumps(config, indent=1, sort_keys=True, default=str))
    embedded = getattr(args, "model_name_or_path", "") in ("embedded", "tiny") or args.dataset_name == "embedded"
    card = _CARD.format(
        tag=method.lower(),
        method=method,
        base=_base_name(getattr(args, "model_name_or_path", "unknown")),
        data=args.dataset_name,
        template=getattr(args, "chat_template", None) or "the tokenizer's own",
        version=__version__,
        max_steps=args.max_steps,
        epochs=args.num_train_epochs,
        lr=args.learning_rate,
        scheduler=_plain(args.lr_scheduler_type),
        optim=_plain(args.optim),
        beta=getattr(args, "beta", "n/a"),
        seed=args.seed,
        scale_note="Embedded-scale run: a pipeline check, not comparable with the paper's numbers."
        if embedded
        else "",
    )
    return atomic_write_text(folder / "README.md", card)


class ModelCardMixin:
    """Mixed in before a TRL trainer: the final ``save_model`` also writes the model card.

    ``card_method`` names the method on the card (a property where it depends on the config).
    """

    card_method = "unknown"

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        super().save_model(output_dir, _internal_call)
        if self.accelerator.is_main_process and not _internal_call:  # checkpoints carry no card
            write_model_card(Path(output_dir or self.args.output_dir), self.args, method=self.card_method)
