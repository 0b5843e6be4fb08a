"""Launched by test_distributed.py under `accelerate launch` with 2 processes: trains the tiny
model a few SAPO steps and writes, per rank, digests of its policy, EMA and reference weights."""

import hashlib
import json
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from sapo.train.config import SAPOConfig
from sapo.train.data import load_examples, to_dataset
from sapo.train.trainer import SAPOTrainer


def digest(model) -> str:
    h = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(param.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main(model_dir: str, out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=16)
    args = SAPOConfig(
        output_dir=out, max_steps=3, per_device_train_batch_size=2, learning_rate=0.1, report_to="none",
        segment_max_new_tokens=4, gradient_checkpointing=False, ref_update_steps=2, buffer_size=8,
        max_length=256, max_prompt_length=192, save_strategy="no",
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    initial = digest(model)
    trainer = SAPOTrainer(model=model, args=args, train_dataset=to_dataset(examples), processing_class=tokenizer)
    trainer.train()
    unwrap = trainer.accelerator.unwrap_model
    result = {
        "world": trainer.accelerator.num_processes,
        "backend": str(trainer.accelerator.state.backend),
        "initial": initial,
        "policy": digest(unwrap(trainer.model)),
        "ema": digest(unwrap(trainer.ema_model)),
        "ref": digest(unwrap(trainer.ref_model)),
        "ref_updates": trainer.sapo_callback.ref_update_log,
        "rejected": [entry.rejected_ids for entry in trainer.buffer.entries],
    }
    with open(f"{out}/rank{trainer.accelerator.process_index}.json", "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
