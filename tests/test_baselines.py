"""The baselines (SFT, DPO, ORPO) through `sapo train`: they train on the tiny model, write the
same output layout as SAPO, and compute TRL's own losses on the pipeline's tokens.

The loss checks use a batch that holds the whole (2-row) data set, so the first logged loss
is the loss of known rows whatever order the sampler draws them in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sapo.train.embedded_data import build_embedded_examples
from sapo.train.embedded_preferences import add_rejected_answers

RECIPE = """\
method: {method}
dataset_name: embedded
max_examples: {rows}
max_length: 256
max_prompt_length: 192
bf16: false
gradient_checkpointing: false
learning_rate: {lr}
logging_steps: 1
per_device_train_batch_size: {batch}
report_to: none
save_strategy: "no"
max_steps: {steps}
seed: 0
"""


def train_cli(tmp_path, model_dir, method, *, rows=8, batch=2, steps=2, lr=0.01, extra=()) -> Path:
    from sapo.cli import main

    recipe = tmp_path / f"{method}.yaml"
    recipe.write_text(RECIPE.format(method=method, rows=rows, batch=batch, steps=steps, lr=lr))
    out = tmp_path / f"out-{method}"
    argv = ["train", str(recipe), "--model_name_or_path", str(model_dir), "--output_dir", str(out), *extra]
    assert main(argv) == 0
    return out


def log_history(out: Path) -> list[dict]:
    return [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]


def changed_and_unchanged(before_dir: Path, after_dir: Path) -> list[str]:
    before, after = load_file(before_dir / "model.safetensors"), load_file(after_dir / "model.safetensors")
    return [k for k in before if torch.equal(before[k], after[k])]


# --------------------------------------------------------------------------- every method, end to end


@pytest.mark.parametrize(("method", "card"), [("sft", "SFT"), ("dpo", "DPO"), ("orpo", "ORPO")])
def test_baseline_trains_every_parameter_and_loads(tiny_model_dir, tmp_path, method, card):
    from transformers import AutoModelForCausalLM

    out = train_cli(tmp_path, tiny_model_dir, method)
    assert changed_and_unchanged(tiny_model_dir, out) == []  # every saved tensor moved
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False).shape == (1, 5)
    assert f"# {card} on" in (out / "README.md").read_text()
    saved = json.loads((out / "sapo_config.json").read_text())
    assert saved["method"] == card and saved["max_steps"] == 2 and saved["dataset_name"] == "embedded"
    assert (out / "tokenizer.json").is_file() and len(log_history(out)) == 2


# --------------------------------------------------------------------------- the losses are TRL's own


def _plain_logps(model_dir, rows, with_prompt: bool = False):
    """Summed log-probs of the answer tokens (or of every predicted token, prompt included) of
    (prompt, answer) rows and their token counts, from a plain forward, one row at a time."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sums, counts = [], []
    with torch.no_grad():
        for prompt, answer in rows:
            ids = torch.tensor([prompt + answer])
            logps = model(ids).logits[0, :-1].float().log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            first = 0 if with_prompt else len(prompt) - 1
            sums.append(logps[first:].sum())
            counts.append(len(logps) - first)
    return torch.stack(sums), torch.tensor(counts, dtype=torch.float32)


def _examples(tokenizer, rows: int, rejected: bool):
    from sapo.train.data import load_examples

    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=rows,
                                rejected_field="rejected" if rejected else None)  # fmt: skip
    return examples


def test_sft_loss_is_answer_token_nll(tiny_model_dir, smol_tokenizer, tmp_path):
    out = train_cli(tmp_path, tiny_model_dir, "sft", rows=2, batch=2, steps=1)
    examples = _examples(smol_tokenizer, 2, rejected=False)
    sums, counts = _plain_logps(tiny_model_dir, [(e.prompt_ids, e.answer_ids) for e in examples])
    expected = -sums.sum() / counts.sum()  # one token-mean over the batch's answers; prompts not trained
    assert log_history(out)[0]["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_orpo_loss_is_the_orpo_formula(tiny_model_dir, smol_tokenizer, tmp_path):
    from sapo.train.losses import orpo_loss

    out = train_cli(tmp_path, tiny_model_dir, "orpo", rows=2, batch=2, steps=1, extra=["--beta", "0.5"])
    examples = _examples(smol_tokenizer, 2, rejected=True)
    chosen, n_chosen = _plain_logps(tiny_model_dir, [(e.prompt_ids, e.answer_ids) for e in examples])
    rejected, n_rejected = _plain_logps(tiny_model_dir, [(e.prompt_ids, e.rejected_ids) for e in examples])
    # TRL's ORPO NLL: one token-mean over every predicted token of the chosen rows, prompt included
    # (padding excluded), like the reference code; the SAPO-ORPO recipes set orpo_nll_on_prompt to match.
    full, n_full = _plain_logps(tiny_model_dir, [(e.prompt_ids, e.answer_ids) for e in examples], with_prompt=True)
    nll = (-full.sum() / n_full.sum()).expand(2)
    expected = orpo_loss(chosen / n_chosen, rejected / n_rejected, nll, beta=0.5)[0].mean()
    assert log_history(out)[0]["loss"] == pytest.approx(expected.item(), rel=1e-4)


def test_dpo_via_cli_matches_trl_dpo_trainer_on_text(tiny_model_dir, tmp_path):
    """Our pipeline's tokens + TRL's DPOTrainer == TRL's DPOTrainer tokenizing the same conversations.
    Three steps, so that after the first update policy and reference differ and the loss is not ln 2."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = train_cli(tmp_path, tiny_model_dir, "dpo", rows=6, batch=2, steps=3, lr=0.05)
    ours = log_history(out)

    rows = add_rejected_answers(build_embedded_examples())[:6]
    text = Dataset.from_list([{"chosen": r["messages"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(output_dir=str(tmp_path / "trl"), max_length=256, bf16=False, use_cpu=True,
                     gradient_checkpointing=False, learning_rate=0.05, logging_steps=1, per_device_train_batch_size=2,
                     report_to="none", save_strategy="no", max_steps=3, seed=0)  # fmt: skip
    load = lambda: AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # noqa: E731
    trl_trainer = DPOTrainer(model=load(), ref_model=load(), args=args, train_dataset=text,
                             processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip
    trl_trainer.train()
    theirs = [e for e in trl_trainer.state.log_history if "loss" in e]
    assert len(ours) == len(theirs) == 3
    assert ours[0]["loss"] == pytest.approx(0.6931, abs=1e-4)  # policy == reference before the first update
    for mine, trl_log in zip(ours, theirs, strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert mine[key] == pytest.approx(trl_log[key], rel=1e-4, abs=1e-6), (mine["step"], key)
    assert ours[-1]["loss"] != pytest.approx(0.6931, abs=1e-3)


# --------------------------------------------------------------------------- embedded preference pairs


def test_embedded_rejected_answers_share_the_prompt_and_family():
    examples = build_embedded_examples(120)
    rows = add_rejected_answers(examples)
    assert rows == add_rejected_answers(examples)  # deterministic
    answers = {e["messages"][-1]["content"]: e["source"] for e in examples}
    for row in rows:
        chosen, rejected = row["messages"], row["rejected"]
        assert rejected[:-1] == chosen[:-1] and rejected[-1]["role"] == "assistant"
        assert rejected[-1]["content"] != chosen[-1]["content"]
        assert answers[rejected[-1]["content"]] == row["source"]  # a real answer from the same family


def test_paired_methods_read_the_rejected_side(smol_tokenizer):
    examples = _examples(smol_tokenizer, 4, rejected=True)
    assert all(e.rejected_ids and e.rejected_ids != e.answer_ids for e in examples)


# --------------------------------------------------------------------------- live curves


def test_report_to_tensorboard_writes_events_or_warns_when_it_is_missing(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")  # the dev extra installs it
    out = train_cli(tmp_path, tiny_model_dir, "dpo", extra=["--report_to", "tensorboard", "--logging_steps", "1"])
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = EventAccumulator(str(events[0].parent)).Reload()
    assert {"train/loss", "train/rewards/margins"} <= set(logged.Tags()["scalars"])
    assert [e.step for e in logged.Scalars("train/loss")] == [1, 2]

    import sapo.train.config as config_module

    monkeypatch.setattr("transformers.integrations.is_tensorboard_available", lambda: False)
    warned = []
    monkeypatch.setattr(config_module.logger, "warning", warned.append)
    from sapo.train.baselines import DPORunConfig

    args = DPORunConfig(output_dir=str(tmp_path / "x"), report_to="tensorboard")
    assert args.report_to == []  # transformers' spelling of "none"
    assert warned and "tensorboard is not installed" in warned[0]
