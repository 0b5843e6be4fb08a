"""SPIN: iterations chain through saved files, generation resumes after a crash, the loss is
SPIN's logistic loss, and the config refuses schedules that do not fit the iteration count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sapo.errors import RecipeError
from sapo.generation import sample_continuations
from sapo.models import weights_fingerprint
from sapo.train.spin import SPINConfig, generate_rejected, retemplate

RECIPE = """\
method: spin
dataset_name: embedded
max_examples: 6
max_length: 256
max_prompt_length: 192
bf16: false
gradient_checkpointing: false
logging_steps: 1
per_device_train_batch_size: 2
report_to: none
save_strategy: "no"
max_steps: 2
seed: 0
spin_iterations: 2
spin_learning_rates: [0.05, 0.02]
spin_betas: [0.1, 0.5]
spin_max_new_tokens: 6
spin_generation_batch_size: 4
"""


def greedy(model_dir, tokenizer, prompts, max_new_tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return sample_continuations(model, prompts, max_new_tokens, pad_token_id=tokenizer.eos_token_id,
                                eos_token_id=tokenizer.eos_token_id, temperature=1.0, top_k=0, top_p=1.0,
                                generator=None, do_sample=False)  # fmt: skip


def generated_rows(folder: Path) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in (folder / "generated.jsonl").read_text().splitlines()]
    return {row["index"]: row["rejected_ids"] for row in rows}


@pytest.fixture(scope="module")
def spin_run(tiny_model_dir, tmp_path_factory):
    from sapo.cli import main

    tmp = tmp_path_factory.mktemp("spin")
    (tmp / "spin.yaml").write_text(RECIPE)
    out = tmp / "out"
    assert main(["train", str(tmp / "spin.yaml"), "--model_name_or_path", str(tiny_model_dir),
                 "--output_dir", str(out)]) == 0  # fmt: skip
    return out


def test_each_iteration_generates_with_the_previous_model(spin_run, tiny_model_dir, smol_tokenizer):
    from sapo.train.data import TokenLayout, load_examples

    examples, _ = load_examples("embedded", smol_tokenizer, max_length=256, max_prompt_length=192, limit=6)
    prompts = [e.prompt_ids for e in examples]
    eos = [smol_tokenizer.eos_token_id]
    for t, opponent in enumerate([tiny_model_dir, spin_run / "iteration-0"]):
        folder = spin_run / f"iteration-{t}"
        assert sorted(generated_rows(folder)) == list(range(6))
        expected = [retemplate(answer, smol_tokenizer, TokenLayout(), eos, 256 - len(prompt))
                    for answer, prompt in zip(greedy(opponent, smol_tokenizer, prompts, 6), prompts, strict=True)]  # fmt: skip
        assert [generated_rows(folder)[i] for i in range(6)] == expected, f"iteration {t}"
    # The test means something only if the two opponents answer differently.
    assert generated_rows(spin_run / "iteration-0") != generated_rows(spin_run / "iteration-1")


def test_second_iteration_starts_from_and_is_referenced_to_the_first(spin_run):
    first, second = spin_run / "iteration-0", spin_run / "iteration-1"
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["opponent"] == manifest["reference"] == str(first)
    assert manifest["reference_weights_sha256"] == weights_fingerprint(first)
    assert (manifest["learning_rate"], manifest["beta"]) == (0.02, 0.5)
    logs = [e for e in json.loads((second / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    # Before its first update the policy equals the frozen reference: zero rewards, loss ln 2.
    assert logs[0]["rewards/chosen"] == 0 and logs[0]["rewards/rejected"] == 0
    assert logs[0]["loss"] == pytest.approx(0.6931, abs=1e-4)
    assert logs[-1]["rewards/margins"] != 0
    # The policy moved away from iteration 0, and the final model is iteration 1's.
    start, end = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert all(not torch.equal(start[k], end[k]) for k in start)
    final = load_file(spin_run / "model.safetensors")
    assert all(torch.equal(final[k], end[k]) for k in end)


def test_final_output_has_the_common_layout(spin_run):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(spin_run)
    assert "# SPIN on" in (spin_run / "README.md").read_text()
    saved = json.loads((spin_run / "sapo_config.json").read_text())
    assert saved["method"] == "SPIN" and saved["spin_iterations"] == 2
    assert (spin_run / "tokenizer.json").is_file()


def test_a_rerun_skips_finished_iterations(spin_run, tiny_model_dir, monkeypatch):
    from sapo.cli import main

    stamps = {p: p.stat().st_mtime_ns for p in spin_run.glob("iteration-*/model.safetensors")}
    monkeypatch.setattr("sapo.train.spin.generate_rejected", lambda *a, **k: pytest.fail("regenerated"))
    assert main(["train", str(spin_run.parent / "spin.yaml"), "--model_name_or_path", str(tiny_model_dir),
                 "--output_dir", str(spin_run)]) == 0  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_a_rerun_with_other_settings_is_refused(spin_run, tiny_model_dir, capsys):
    from sapo.cli import main

    argv = ["train", str(spin_run.parent / "spin.yaml"), "--model_name_or_path", str(tiny_model_dir),
            "--output_dir", str(spin_run), "--spin_learning_rates", "0.05", "0.03"]  # fmt: skip
    assert main(argv) == 2
    assert "iteration-1 was made with other settings" in capsys.readouterr().err


def test_interrupted_generation_resumes_without_regenerating(tiny_model_dir, smol_tokenizer, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from sapo.train.data import load_examples

    examples, _ = load_examples("embedded", smol_tokenizer, max_length=256, max_prompt_length=192, limit=7)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    settings = {"max_new_tokens": 5, "batch_size": 3, "max_length": 256, "decoding": "greedy"}
    asked: list[list[list[int]]] = []

    def crash_on_second_batch(model, contexts, *args, **kwargs):
        asked.append(contexts)
        if len(asked) == 2:
            raise KeyboardInterrupt("killed mid-generation")
        return sample_continuations(model, contexts, *args, **kwargs)

    monkeypatch.setattr("sapo.generation.sample_continuations", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        generate_rejected(model, smol_tokenizer, examples, tmp_path, settings)
    first = generated_rows(tmp_path)
    assert len(first) == 3
    with (tmp_path / "generated.jsonl").open("a") as handle:
        handle.write('{"index": 99, "rejected_ids": [1, 2')  # a line cut short by the crash

    asked.clear()
    monkeypatch.setattr("sapo.generation.sample_continuations", lambda m, c, *a, **k: asked.append(c) or
                        sample_continuations(m, c, *a, **k))  # fmt: skip
    assert generate_rejected(model, smol_tokenizer, examples, tmp_path, settings) == 4
    resumed_prompts = [p for batch in asked for p in batch]
    assert sorted(map(tuple, resumed_prompts)) == sorted(tuple(examples[i].prompt_ids) for i in range(7)
                                                         if i not in first)  # fmt: skip
    rows = generated_rows(tmp_path)
    assert sorted(rows) == list(range(7)) and all(rows[i] == first[i] for i in first)
    assert generate_rejected(model, smol_tokenizer, examples, tmp_path, settings) == 0  # nothing left
    with pytest.raises(RecipeError, match="other settings"):
        generate_rejected(model, smol_tokenizer, examples, tmp_path, {**settings, "max_new_tokens": 9})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"spin_iterations": 2, "spin_learning_rates": [1e-7], "spin_betas": [0.1, 0.1]}, "spin_learning_rates"),
        ({"spin_iterations": 1, "spin_learning_rates": [1e-7], "spin_betas": [0.0]}, "spin_betas"),
        ({"spin_iterations": 0, "spin_learning_rates": [], "spin_betas": []}, "spin_iterations"),
        ({"spin_max_new_tokens": 0}, "spin_max_new_tokens"),
    ],
)
def test_config_names_the_bad_field(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        SPINConfig(output_dir=str(tmp_path), **overrides)


def test_iteration_loss_is_spins_logistic_loss(tiny_model_dir, smol_tokenizer, tmp_path):
    """SPIN (Chen et al. 2024, Eq. 4.7, logistic loss):
    log(1 + exp(-beta * [(log p(y) - log p_t(y)) - (log p(y') - log p_t(y'))])), y real, y' generated."""
    import dataclasses

    from transformers import AutoModelForCausalLM
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from sapo.train.data import load_examples
    from sapo.train.spin import _iteration_trainer

    examples, _ = load_examples("embedded", smol_tokenizer, max_length=256, max_prompt_length=192, limit=3)
    generated = greedy(tiny_model_dir, smol_tokenizer, [e.prompt_ids for e in examples], 5)
    pairs = [dataclasses.replace(e, rejected_ids=g) for e, g in zip(examples, generated, strict=True)]
    config = SPINConfig(output_dir=str(tmp_path), spin_iterations=1, spin_learning_rates=[0.1], spin_betas=[0.7],
                        beta=0.7, report_to="none", gradient_checkpointing=False)  # fmt: skip
    opponent = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = _iteration_trainer(config, opponent, smol_tokenizer, pairs)
    with torch.no_grad():  # the policy moves away from the frozen opponent
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    rows = [{"prompt_ids": p.prompt_ids, "chosen_ids": p.answer_ids, "rejected_ids": p.rejected_ids} for p in pairs]
    batch = trainer._prepare_inputs(DataCollatorForPreference(pad_token_id=smol_tokenizer.eos_token_id)(rows))
    trainer.model.train()
    got = trainer.compute_loss(trainer.model, batch).item()

    def logp(weights, prompt, answer):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        model.load_state_dict(weights, strict=False)
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        return logps[len(prompt) - 1 :].sum().item()

    policy = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    reference = load_file(tiny_model_dir / "model.safetensors")
    losses = []
    for p in pairs:
        real = logp(policy, p.prompt_ids, p.answer_ids) - logp(reference, p.prompt_ids, p.answer_ids)
        fake = logp(policy, p.prompt_ids, p.rejected_ids) - logp(reference, p.prompt_ids, p.rejected_ids)
        losses.append(math.log1p(math.exp(-0.7 * (real - fake))))
    assert got == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_generated_answers_are_retemplated_like_the_real_one(smol_tokenizer):
    """uclaml/SPIN re-renders every generated answer as an assistant turn, so one cut at the length limit ends
    with the end-of-turn marker too, and text after an EOS is dropped; 'raw' keeps the tokens as generated."""
    from sapo.train.data import TokenLayout, load_examples

    tok, layout = smol_tokenizer, TokenLayout()
    assert layout.answer_frame(tok) == ("", "<|im_end|>\n")
    eos = [tok.eos_token_id]
    cut = tok("  Water boils at", add_special_tokens=False).input_ids  # stopped by the budget: no EOS
    assert tok.decode(retemplate(cut, tok, layout, eos, None)) == "Water boils at<|im_end|>\n"
    stopped = tok("Yes.", add_special_tokens=False).input_ids + eos + tok("junk", add_special_tokens=False).input_ids
    assert tok.decode(retemplate(stopped, tok, layout, eos, None)) == "Yes.<|im_end|>\n"
    short = retemplate(cut, tok, layout, eos, 4)  # max_length leaves room for 4 tokens: the text is cut, not the end
    assert len(short) == 4 and tok.decode(short) == "Water boils<|im_end|>\n"
    with_eos = TokenLayout(answer_eos=True)
    assert retemplate(cut, tok, with_eos, eos, None)[-1] == tok.eos_token_id
    real = load_examples("embedded", tok, limit=1)[0][0].answer_ids
    suffix = tok("<|im_end|>\n", add_special_tokens=False).input_ids
    assert real[-len(suffix) :] == suffix == retemplate(cut, tok, layout, eos, None)[-len(suffix) :]


def test_first_turn_keeps_only_the_first_reply(smol_tokenizer):
    from sapo.chat import render_conversation

    messages = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]  # fmt: skip
    prompt, answer = render_conversation(messages, smol_tokenizer, multi_turn="first_turn", system_prompt="")
    assert answer == "A1<|im_end|>\n" and prompt.endswith("<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n")
    assert "Q2" not in prompt + answer
    _, rest = render_conversation(messages, smol_tokenizer, multi_turn="first", system_prompt="")
    assert "Q2" in rest and "A2" in rest
