"""SAPOTrainer end to end on real (tiny) models: EMA closed form, reference sync, replay buffer,
exact resume, ORPO, ablation switches, config validation, the CLI and every recipe.

Expensive runs are module-scoped fixtures and feed several tests. Every weight comparison
names the first tensor that fails. Tied embeddings: ``save_pretrained`` writes no
``lm_head.weight``, so saved files are compared on the keys they hold.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import DPOTrainer

from sapo.errors import CheckpointError
from sapo.train.config import SAPOConfig
from sapo.train.data import load_examples, to_dataset

REPO = Path(__file__).resolve().parents[1]
BUFFER_KEYS = {
    "prompt_ids",
    "chosen_ids",
    "rejected_ids",
    "segment_start",
    "segment_end",
    "generated_len",
    "ended_early",
    "times_sampled",
    "step_added",
}
BATCH = 2
# Resuming replays the same float operations: bit-identical on CPU; GPU kernels may reorder sums.
RESUME_ATOL = 1e-6 if torch.cuda.is_available() else 0.0


# --------------------------------------------------------------------------- helpers


def tiny_config(output_dir, **overrides) -> SAPOConfig:
    """A config for a few fast CPU steps; bf16 is left to SAPOConfig to resolve."""
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=BATCH,
        max_steps=4,
        segment_max_new_tokens=6,
        max_length=256,
        max_prompt_length=192,
        report_to="none",
        gradient_checkpointing=False,
        learning_rate=0.1,
        logging_steps=1,
        save_strategy="no",
        ema_decay=0.5,
        ema_update_steps=1,
        ref_update_steps=2,
        seed=0,
    )
    values.update(overrides)
    if "save_steps" in overrides:
        values["save_strategy"] = "steps"
    return SAPOConfig(**values)


def load_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def make_trainer(model_dir, config, dataset, tokenizer):
    from sapo.train.trainer import SAPOTrainer

    return SAPOTrainer(model=load_model(model_dir), args=config, train_dataset=dataset, processing_class=tokenizer)


def saved(folder) -> dict[str, torch.Tensor]:
    """The tensors save_pretrained wrote into ``folder``."""
    return load_file(str(Path(folder) / "model.safetensors"))


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def assert_same_weights(actual: dict, expected: dict, what: str, atol: float = 0.0) -> None:
    """Every tensor of ``expected`` is in ``actual`` and equal (exactly, or within ``atol``)."""
    missing = sorted(set(expected) - set(actual))
    assert not missing, f"{what}: tensors missing: {missing[:5]}"
    for name, want in expected.items():
        got = actual[name].to(want.dtype)
        diff = (got - want).abs().max().item()
        assert diff <= atol, f"{what}: {name} differs by {diff:.3g} (allowed {atol})"


def assert_all_changed(model, initial: dict, what: str) -> None:
    """Every trainable parameter differs from its initial value somewhere."""
    unchanged = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and torch.equal(p.detach().cpu(), initial[name])
    ]
    assert not unchanged, f"{what}: parameters unchanged by training: {unchanged}"


def assert_ema_closed_form(out, initial: dict, decay: float, steps: int) -> dict:
    """checkpoint-k/ema == decay * ema_{k-1} + (1 - decay) * policy_k for k = 1..steps, ema_0 = initial.
    Returns the last EMA."""
    previous = initial
    for k in range(1, steps + 1):
        ema = saved(out / f"checkpoint-{k}" / "ema")
        policy = saved(out / f"checkpoint-{k}")
        expected = {name: decay * previous[name] + (1 - decay) * policy[name] for name in ema}
        what = f"checkpoint-{k}/ema vs {decay}*ema_{k - 1} + {1 - decay}*policy_{k}"
        assert_same_weights(ema, expected, what, atol=1e-6)
        previous = ema
    return previous


def read_buffer(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def step_logs(trainer) -> list[dict]:
    """The per-step training logs (those with a loss), in order."""
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def eos_ids(model_dir, tokenizer) -> set[int]:
    from transformers import AutoConfig

    ids = AutoConfig.from_pretrained(model_dir).eos_token_id
    ids = {ids} if isinstance(ids, int) else set(ids or [])
    return ids | {tokenizer.eos_token_id}


class SpyGenerator:
    """Wraps sapo.train.trainer.sample_continuations and records which model generated, and the
    torch.Generator each random draw got (token sampling, segment starts, buffer picks)."""

    def __init__(self, real):
        self.real, self.models, self.weight_major = real, [], []
        self.rngs: dict[str, list[torch.Generator]] = {"sampling": [], "segment": [], "buffer": []}

    def __call__(self, model, *args, **kwargs):
        self.models.append(model)
        self.rngs["sampling"].append(kwargs["generator"])
        self.weight_major.append(kwargs.get("weight_major", False))
        return self.real(model, *args, **kwargs)


def run(model_dir, dataset, tokenizer, output_dir, **overrides):
    """Build and train a trainer with spies on the generator and the RNG draws; return (trainer, spy)."""
    import sapo.train.trainer as trainer_module
    from sapo.train.buffer import ReplayBuffer

    spy = SpyGenerator(trainer_module.sample_continuations)
    real_bounds, real_sample = trainer_module.segment_bounds, ReplayBuffer.sample

    def bounds(answer_len, max_new_tokens, room, generator):
        spy.rngs["segment"].append(generator)
        return real_bounds(answer_len, max_new_tokens, room, generator)

    def sample(buffer, batch_size, generator):
        spy.rngs["buffer"].append(generator)
        return real_sample(buffer, batch_size, generator)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "sample_continuations", spy)
        mp.setattr(trainer_module, "segment_bounds", bounds)
        mp.setattr(ReplayBuffer, "sample", sample)
        trainer = make_trainer(model_dir, tiny_config(output_dir, **overrides), dataset, tokenizer)
        trainer.train()
    return trainer, spy


# --------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def dataset(tokenizer):
    examples, _ = load_examples("embedded", tokenizer, max_length=256, max_prompt_length=192, limit=16)
    return to_dataset(examples)


@pytest.fixture(scope="module")
def initial(tiny_model_dir):
    """The tiny model's weights before any training, by parameter name."""
    return weights_of(load_model(tiny_model_dir))


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, dataset, tokenizer, tmp_path_factory):
    """4 SAPO-DPO steps, a checkpoint after each: ema_decay 0.5 every step, reference sync every 2."""
    out = tmp_path_factory.mktemp("dpo")
    trainer, spy = run(tiny_model_dir, dataset, tokenizer, out, save_steps=1)
    return trainer, spy, out


@pytest.fixture(scope="module")
def orpo_run(tiny_model_dir, dataset, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("orpo")
    # ema_decay 0.75, not 0.5: an update that swapped decay and 1 - decay would pass at 0.5.
    trainer, _ = run(
        tiny_model_dir, dataset, tokenizer, out, sapo_loss="orpo", beta=0.05, ema_decay=0.75, max_steps=3, save_steps=1
    )
    return trainer, out


# --------------------------------------------------------------------------- 1. SAPO-DPO: EMA and reference


def test_dpo_changes_every_parameter(dpo_run, initial):
    trainer, _, _ = dpo_run
    assert trainer.state.global_step == 4
    assert_all_changed(trainer.model, initial, "SAPO-DPO policy after 4 steps")
    # Step 1: policy == reference, so every margin is 0 and the DPO loss is -log sigmoid(0) = log 2 = 0.6931...
    first = step_logs(trainer)[0]
    assert first["step"] == 1 and first["loss"] == pytest.approx(math.log(2), abs=1e-5), first


def test_ema_follows_closed_form_at_every_checkpoint(dpo_run, initial):
    # ema_k = 0.5 * ema_{k-1} + 0.5 * p_k, ema_0 = the initial policy, p_k = the policy after step k.
    _, _, out = dpo_run
    previous = assert_ema_closed_form(out, initial, decay=0.5, steps=4)
    # Not vacuous: after 4 steps the EMA has moved away from the initial weights.
    moved = [name for name in previous if not torch.equal(previous[name], initial[name])]
    assert moved, "the EMA never moved"


def test_reference_is_synced_from_ema_every_two_steps(dpo_run, initial):
    trainer, _, out = dpo_run
    ckpt = {k: out / f"checkpoint-{k}" for k in range(1, 5)}
    ref_1 = saved(ckpt[1] / "ref")
    assert_same_weights(ref_1, {n: initial[n] for n in ref_1}, "checkpoint-1/ref vs the initial weights")
    assert_same_weights(saved(ckpt[2] / "ref"), saved(ckpt[2] / "ema"), "checkpoint-2/ref vs checkpoint-2/ema")
    assert_same_weights(saved(ckpt[3] / "ref"), saved(ckpt[2] / "ref"), "checkpoint-3/ref vs checkpoint-2/ref")
    assert_same_weights(saved(ckpt[4] / "ref"), saved(ckpt[4] / "ema"), "checkpoint-4/ref vs checkpoint-4/ema")
    # Between syncs the EMA moves on while the reference stays: checkpoint-3's EMA is not its reference.
    ema_3, ref_3 = saved(ckpt[3] / "ema"), saved(ckpt[3] / "ref")
    assert any(not torch.equal(ema_3[n], ref_3[n]) for n in ema_3), "checkpoint-3: reference equals the EMA"
    assert trainer.sapo_callback.ref_update_log == [2, 4]
    assert json.loads((ckpt[4] / "sapo_state.json").read_text())["ref_updates"] == [2, 4]


def test_generator_is_the_ema_model(dpo_run):
    trainer, spy, _ = dpo_run
    assert not any(spy.weight_major), "the default run decoded weight-first"
    ema = trainer.accelerator.unwrap_model(trainer.ema_model)
    assert len(spy.models) == 4, f"expected one generation call per step, got {len(spy.models)}"
    assert all(model is ema for model in spy.models), "segments were not generated by the EMA model"


def test_cpu_draws_get_a_cpu_generator_and_tokens_the_device_one(dpo_run):
    # segment_bounds (torch.randint) and the buffer (torch.multinomial on CPU weights) draw CPU tensors;
    # PyTorch refuses a generator of another device, so they must never get the accelerator's.
    trainer, spy, _ = dpo_run
    rng = trainer.sapo_rng
    assert len(spy.rngs["segment"]) == 4 * BATCH and len(spy.rngs["buffer"]) == 4, spy.rngs
    for kind in ("segment", "buffer"):
        assert all(g is rng.cpu and g.device.type == "cpu" for g in spy.rngs[kind]), f"{kind}: not the CPU generator"
    device = trainer.accelerator.device.type
    assert all(g is rng.sampling and g.device.type == device for g in spy.rngs["sampling"]), "sampling generator"
    # On a CPU device one generator serves both: the seeded stream, and so every number, is the one-generator one.
    assert (rng.sampling is rng.cpu) == (device == "cpu")


class _FakeAcceleratorGenerator(torch.Generator):
    """A CPU generator that reports a CUDA device: this CPU-only torch cannot build a real one."""

    @property
    def device(self):
        return torch.device("cuda")


def _fake_accelerator_rng(monkeypatch, seed=7):
    from sapo.train.trainer import SapoRNG

    real = torch.Generator

    def generator(device="cpu"):
        return real(device="cpu") if torch.device(device).type == "cpu" else _FakeAcceleratorGenerator(device="cpu")

    monkeypatch.setattr(torch, "Generator", generator)
    return SapoRNG.seeded(seed, torch.device("cuda", 0))


def test_an_accelerator_gets_two_generators_seeded_alike(monkeypatch):
    rng = _fake_accelerator_rng(monkeypatch)
    assert rng.cpu.device.type == "cpu" and rng.sampling.device.type == "cuda" and not rng.shared
    assert torch.equal(rng.cpu.get_state(), rng.sampling.get_state()), "both seeded from seed + process index"


def test_rng_state_round_trips_and_refuses_another_device(monkeypatch, tmp_path):
    from sapo.train.trainer import SapoRNG

    two = _fake_accelerator_rng(monkeypatch)
    torch.randint(0, 9, (3,), generator=two.sampling)  # the streams now differ
    saved_state = two.state()
    restored = _fake_accelerator_rng(monkeypatch, seed=1)
    restored.load_state(saved_state, tmp_path)
    assert torch.equal(restored.cpu.get_state(), two.cpu.get_state())
    assert torch.equal(restored.sampling.get_state(), two.sampling.get_state())
    one = SapoRNG.seeded(7, "cpu")
    with pytest.raises(CheckpointError, match="same kind of device"):
        one.load_state(saved_state, tmp_path)
    with pytest.raises(CheckpointError, match="same kind of device"):  # an old one-state file is a CPU run's
        restored.load_state(one.cpu.get_state(), tmp_path)
    old = SapoRNG.seeded(7, "cpu")
    torch.randint(0, 9, (5,), generator=old.cpu)
    one.load_state(old.cpu.get_state(), tmp_path)  # the file format before the split: one bare state
    assert torch.equal(one.cpu.get_state(), old.cpu.get_state())


# --------------------------------------------------------------------------- 2. the replay buffer on disk


def assert_spliced(e: dict, at: str, eos: set[int], max_new_tokens: int) -> None:
    """One buffer entry is A + B' (+ C): A and C token-exact from the real answer, B' at most L tokens,
    cut right after its first EOS, and C spliced back only when B' did not end early."""
    assert set(e) == BUFFER_KEYS, f"{at}: keys {sorted(e)}"
    start, end, chosen, rejected = e["segment_start"], e["segment_end"], e["chosen_ids"], e["rejected_ids"]
    n = e["generated_len"]
    assert 0 <= start <= end <= len(chosen), f"{at}: segment [{start}, {end}) of {len(chosen)} tokens"
    assert end - start <= max_new_tokens, f"{at}: segment longer than segment_max_new_tokens={max_new_tokens}"
    assert rejected[:start] == chosen[:start], f"{at}: A not kept token-exact"
    assert 0 < n <= end - start, f"{at}: generated_len {n}"
    assert not eos & set(rejected[start : start + n - 1]), f"{at}: B' runs past an EOS"
    if e["ended_early"]:
        assert rejected[start + n - 1] in eos, f"{at}: ended early, but the last generated token is not an EOS"
        assert len(rejected) == start + n, f"{at}: C spliced back after an EOS"
    else:
        assert rejected[start + n - 1] not in eos, f"{at}: ends with EOS but ended_early is False"
        assert n == end - start, f"{at}: B' stopped short without an EOS"
        assert rejected[start + n :] == chosen[end:], f"{at}: C not kept token-exact"


def test_replay_buffer_entries_keep_a_and_c(dpo_run, dataset, tokenizer, tiny_model_dir):
    _, _, out = dpo_run
    eos = eos_ids(tiny_model_dir, tokenizer)
    rows = {(tuple(p), tuple(c)) for p, c in zip(dataset["prompt_ids"], dataset["chosen_ids"], strict=True)}
    for k in range(1, 5):
        entries = read_buffer(out / f"checkpoint-{k}" / "replay_buffer.jsonl")
        where = f"checkpoint-{k}/replay_buffer.jsonl"
        # buffer_size 2000: nothing evicted yet; 2 fresh pairs per step, and every step draws 2.
        assert len(entries) == min(2000, BATCH * k), f"{where}: {len(entries)} entries"
        assert sum(e["times_sampled"] for e in entries) == BATCH * k, f"{where}: draw counts"
        # FIFO, oldest first: the pairs made during step j (global_step j-1 while generating).
        assert [e["step_added"] for e in entries] == [j for j in range(k) for _ in range(BATCH)], where
        for i, e in enumerate(entries):
            assert (tuple(e["prompt_ids"]), tuple(e["chosen_ids"])) in rows, f"{where} entry {i}: not a data set row"
            assert_spliced(e, f"{where} entry {i}", eos, max_new_tokens=6)


def test_splice_of_a_scripted_generation(tiny_model_dir, dataset, tokenizer, tmp_path, monkeypatch):
    # Row 0 writes [1000, EOS]: rejected = A + [1000, EOS], no C. Row 1 writes its whole budget L of 1001s:
    # rejected = A + [1001] * L + C. The random tiny model never samples EOS, so script it.
    import sapo.train.trainer as trainer_module

    eos = tokenizer.eos_token_id
    calls = []

    def scripted(model, contexts, budgets, **kwargs):
        calls.append((contexts, budgets))
        return [[1000, eos][: budgets[0]]] + [[1001] * b for b in budgets[1:]]

    monkeypatch.setattr(trainer_module, "sample_continuations", scripted)
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path, max_steps=1), dataset, tokenizer)
    trainer.train()
    ((contexts, budgets),) = calls
    first, second = trainer.buffer.state_dict()["entries"]
    for e, context, budget in zip((first, second), contexts, budgets, strict=True):
        start, end = e["segment_start"], e["segment_end"]
        assert context == e["prompt_ids"] + e["chosen_ids"][:start], "the generator was not given prompt + A"
        assert budget == end - start == min(6, len(e["chosen_ids"])), f"budget {budget} for [{start}, {end})"
    assert first["ended_early"] and first["generated_len"] == 2
    assert first["rejected_ids"] == first["chosen_ids"][: first["segment_start"]] + [1000, eos]
    # L = min(6, answer length): an answer shorter than 6 tokens is rewritten whole.
    start, end = second["segment_start"], second["segment_end"]
    assert not second["ended_early"] and second["generated_len"] == end - start
    assert second["rejected_ids"] == second["chosen_ids"][:start] + [1001] * (end - start) + second["chosen_ids"][end:]


# --------------------------------------------------------------------------- 3. exact resume


def test_resume_from_checkpoint_is_exact(dpo_run, tiny_model_dir, dataset, tokenizer, tmp_path):
    run_a, _, out_a = dpo_run
    trainer_b = make_trainer(tiny_model_dir, tiny_config(tmp_path / "b", save_steps=1), dataset, tokenizer)
    trainer_b.train(resume_from_checkpoint=str(out_a / "checkpoint-2"))
    assert trainer_b.state.global_step == 4
    a4 = out_a / "checkpoint-4"
    unwrap = trainer_b.accelerator.unwrap_model
    assert_same_weights(weights_of(trainer_b.model), saved(a4), "resumed policy vs run A step 4", atol=RESUME_ATOL)
    assert_same_weights(weights_of(unwrap(trainer_b.ema_model)), saved(a4 / "ema"), "resumed EMA", atol=RESUME_ATOL)
    assert_same_weights(
        weights_of(unwrap(trainer_b.ref_model)), saved(a4 / "ref"), "resumed reference", atol=RESUME_ATOL
    )
    losses_a = {e["step"]: e["loss"] for e in step_logs(run_a)}
    losses_b = {e["step"]: e["loss"] for e in step_logs(trainer_b)}
    for step in (3, 4):
        assert losses_b[step] == pytest.approx(losses_a[step], abs=RESUME_ATOL), f"loss at step {step}"
    assert trainer_b.buffer.state_dict()["entries"] == read_buffer(a4 / "replay_buffer.jsonl")
    assert read_buffer(tmp_path / "b" / "checkpoint-4" / "replay_buffer.jsonl") == read_buffer(
        a4 / "replay_buffer.jsonl"
    )
    assert trainer_b.sapo_callback.ref_update_log == [2, 4]


def test_resume_from_a_one_generator_checkpoint_is_exact(dpo_run, tiny_model_dir, dataset, tokenizer, tmp_path):
    # Checkpoints written before the CPU/device split hold one bare generator state: still resumable.
    _, _, out_a = dpo_run
    old = shutil.copytree(out_a / "checkpoint-2", tmp_path / "checkpoint-2")
    state = torch.load(old / "sapo_rng.pt", weights_only=True)
    assert state["sampling"] is None or torch.cuda.is_available(), "a CPU run keeps one shared stream"
    torch.save(state["cpu"], old / "sapo_rng.pt")
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path / "b", max_steps=3), dataset, tokenizer)
    if torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="same kind of device"):
            trainer.train(resume_from_checkpoint=str(old))
        return
    trainer.train(resume_from_checkpoint=str(old))
    assert_same_weights(weights_of(trainer.model), saved(out_a / "checkpoint-3"), "resumed policy vs run A step 3")


@pytest.mark.gpu
def test_two_sapo_steps_and_a_resume_on_cuda(tiny_model_dir, dataset, tokenizer, tmp_path):
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path / "a", max_steps=2, save_steps=1), dataset, tokenizer)
    assert trainer.accelerator.device.type == "cuda"
    trainer.train()
    assert trainer.state.global_step == 2
    assert trainer.sapo_rng.cpu.device.type == "cpu" and trainer.sapo_rng.sampling.device.type == "cuda"
    resumed = make_trainer(tiny_model_dir, tiny_config(tmp_path / "b", max_steps=2), dataset, tokenizer)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"))
    a2 = tmp_path / "a" / "checkpoint-2"
    assert resumed.buffer.state_dict()["entries"] == read_buffer(a2 / "replay_buffer.jsonl")
    assert torch.equal(resumed.sapo_rng.cpu.get_state(), trainer.sapo_rng.cpu.get_state())
    assert torch.equal(resumed.sapo_rng.sampling.get_state(), trainer.sapo_rng.sampling.get_state())


def test_resume_refuses_an_incomplete_checkpoint(dpo_run, tiny_model_dir, dataset, tokenizer, tmp_path):
    _, _, out_a = dpo_run
    broken = shutil.copytree(out_a / "checkpoint-2", tmp_path / "checkpoint-2")
    (broken / "sapo_state.json").unlink()
    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path / "out"), dataset, tokenizer)
    with pytest.raises(CheckpointError, match="incomplete"):
        trainer.train(resume_from_checkpoint=str(broken))


class _Stop(Exception):
    pass


def test_resume_true_picks_newest_complete_checkpoint(dpo_run, tiny_model_dir, dataset, tokenizer, tmp_path):
    _, _, out_a = dpo_run
    out = shutil.copytree(out_a, tmp_path / "run")
    shutil.rmtree(out / "checkpoint-3")  # as if save_steps were 2
    (out / "checkpoint-4" / "sapo_state.json").unlink()  # step 4's save was cut short
    trainer = make_trainer(tiny_model_dir, tiny_config(out), dataset, tokenizer)
    loaded = []
    real_load = trainer._load_optimizer_and_scheduler  # the resume hook SAPO restores its state in

    def spy(folder):
        real_load(folder)
        loaded.append(Path(folder))
        raise _Stop  # enough is known: no need to train

    trainer._load_optimizer_and_scheduler = spy
    with pytest.raises(_Stop):
        trainer.train(resume_from_checkpoint=True)
    assert loaded == [out / "checkpoint-2"]
    assert trainer.sapo_callback.ref_update_log == [2]  # restored from checkpoint-2's SAPO state


# --------------------------------------------------------------------------- 4. SAPO-ORPO


def test_orpo_trains_every_parameter_without_a_reference(orpo_run, initial):
    trainer, out = orpo_run
    assert_all_changed(trainer.model, initial, "SAPO-ORPO policy after 3 steps")
    logs = step_logs(trainer)
    assert [e["step"] for e in logs] == [1, 2, 3]
    for entry in logs:
        assert math.isfinite(entry["loss"]), f"step {entry['step']}: loss {entry['loss']}"
        for key in ("nll_loss", "log_odds_ratio"):
            assert key in entry and math.isfinite(entry[key]), f"step {entry['step']}: {key} missing or not finite"
    for k in range(1, 4):
        assert not (out / f"checkpoint-{k}" / "ref").exists(), f"checkpoint-{k} has a ref folder under ORPO"
        assert (out / f"checkpoint-{k}" / "ema" / "model.safetensors").is_file()
    assert trainer.sapo_callback.ref_update_log == []


def test_orpo_ema_follows_closed_form(orpo_run, initial):
    # ema_k = 0.75 * ema_{k-1} + 0.25 * p_k; under ORPO the EMA also stands in for TRL's ref_model slot.
    _, out = orpo_run
    assert_ema_closed_form(out, initial, decay=0.75, steps=3)


# --------------------------------------------------------------------------- 5. ablation switches


def test_fixed_reference_never_changes(tiny_model_dir, dataset, tokenizer, tmp_path, initial):
    trainer, _ = run(tiny_model_dir, dataset, tokenizer, tmp_path, ref_update="fixed")
    assert trainer.state.global_step == 4
    unwrap = trainer.accelerator.unwrap_model
    assert_same_weights(weights_of(unwrap(trainer.ref_model)), initial, "fixed reference after 4 steps")
    ema = weights_of(unwrap(trainer.ema_model))
    assert any(not torch.equal(ema[n], initial[n]) for n in initial), "the EMA did not move"
    assert trainer.sapo_callback.ref_update_log == []


def test_reference_copied_from_policy(tiny_model_dir, dataset, tokenizer, tmp_path):
    trainer, _ = run(tiny_model_dir, dataset, tokenizer, tmp_path, ref_update="policy", max_steps=2, save_steps=2)
    ckpt = tmp_path / "checkpoint-2"
    ref, policy, ema = saved(ckpt / "ref"), saved(ckpt), saved(ckpt / "ema")
    assert_same_weights(ref, policy, "checkpoint-2/ref vs checkpoint-2 policy")
    assert any(not torch.equal(ref[n], ema[n]) for n in ref), "ref_update='policy' copied the EMA"
    assert trainer.sapo_callback.ref_update_log == [2]


def test_policy_as_generator(tiny_model_dir, dataset, tokenizer, tmp_path, initial):
    trainer, spy = run(tiny_model_dir, dataset, tokenizer, tmp_path, generator="policy", max_steps=2)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert len(spy.models) == 2
    assert all(model is policy for model in spy.models), "generator='policy' did not generate with the policy"
    assert_all_changed(trainer.model, initial, "generator='policy'")


def test_cpu_fast_decoding_reaches_the_generator_and_still_trains(
    tiny_model_dir, dataset, tokenizer, tmp_path, initial
):
    trainer, spy = run(tiny_model_dir, dataset, tokenizer, tmp_path, cpu_fast_decoding=True, max_steps=2)
    assert spy.weight_major == [True, True]
    assert_all_changed(trainer.model, initial, "cpu_fast_decoding=True")
    assert all("forward" not in vars(m) for m in trainer.ema_model.modules()), "the EMA model kept a patched forward"


def test_no_segment_regenerates_whole_answer(tiny_model_dir, dataset, tokenizer, tmp_path):
    trainer, _ = run(tiny_model_dir, dataset, tokenizer, tmp_path, segment=False, max_steps=2)
    entries = trainer.buffer.state_dict()["entries"]
    assert len(entries) == 2 * BATCH
    for i, e in enumerate(entries):
        assert e["segment_start"] == 0, f"entry {i}: segment_start {e['segment_start']}"
        assert 0 < len(e["rejected_ids"]) <= 6, f"entry {i}: rejected has {len(e['rejected_ids'])} tokens, L = 6"
        assert len(e["rejected_ids"]) == e["generated_len"], f"entry {i}: rejected is not just the generated tokens"


def test_no_buffer_trains_on_fresh_pairs(tiny_model_dir, dataset, tokenizer, tmp_path, initial):
    trainer, _ = run(tiny_model_dir, dataset, tokenizer, tmp_path, use_buffer=False, max_steps=2)
    assert len(trainer.buffer) == 0
    logs = step_logs(trainer)
    assert [e["step"] for e in logs] == [1, 2]
    assert [e["sapo/buffer_size"] for e in logs] == [0, 0]
    assert_all_changed(trainer.model, initial, "use_buffer=False")


# --------------------------------------------------------------------------- 6. config validation


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sapo_loss": "kto"}, "sapo_loss"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"ref_update_steps": 0}, "ref_update_steps"),
        ({"top_p": 0.0}, "top_p"),
        ({"buffer_size": 1, "per_device_train_batch_size": 2}, "buffer_size"),
        ({"max_prompt_length": 256, "max_length": 256}, "max_prompt_length"),
        ({"precompute_ref_log_probs": True}, "precompute_ref_log_probs"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_config_rejects_bad_values(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=field):
        SAPOConfig(output_dir=str(tmp_path), **overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU default")
def test_config_turns_bf16_off_without_a_gpu(tmp_path):
    assert SAPOConfig(output_dir=str(tmp_path)).bf16 is False


@pytest.mark.parametrize(
    ("method", "bf16", "model_dtype", "expected"),
    [
        ("sapo", False, None, torch.float32),
        ("sapo", True, None, torch.float32),  # bf16 is mixed precision: the master weights stay fp32
        ("sapo", False, "bfloat16", torch.bfloat16),
        ("spin", True, None, torch.float32),
        ("spin", False, "bfloat16", torch.bfloat16),
    ],
)
def test_policy_loads_in_model_dtype(tiny_model_dir, tmp_path, monkeypatch, method, bf16, model_dtype, expected):
    # bf16 weights round away updates below ~1/256 of a weight (lr 5e-7): bf16 alone must not set the load dtype.
    import sapo.models
    from sapo.train.cli import run_training
    from sapo.train.spin import SPINConfig

    loaded = []
    real_load = sapo.models.load_causal_lm

    def load(name, **kwargs):
        loaded.append(next(real_load(name, **kwargs).parameters()).dtype)
        raise _Stop  # the dtype is known: no need to train

    monkeypatch.setattr(sapo.models, "load_causal_lm", load)
    fields = dict(output_dir=str(tmp_path), model_name_or_path=str(tiny_model_dir), dataset_name="embedded",
                  max_examples=2, max_length=256, max_prompt_length=192, report_to="none", bf16=bf16)  # fmt: skip
    if model_dtype:
        fields["model_dtype"] = model_dtype
    config = (SAPOConfig if method == "sapo" else SPINConfig)(**fields)
    with pytest.raises(_Stop):
        run_training(method, config)
    assert loaded == [expected]


def test_config_rejects_a_bad_model_dtype(tmp_path):
    with pytest.raises(ValueError, match="model_dtype"):
        SAPOConfig(output_dir=str(tmp_path), model_dtype="fp8")


# --------------------------------------------------------------------------- 7. the embedded model


def answer_logps(model, entries, side: str) -> torch.Tensor:
    """Summed log-prob of each entry's ``side`` answer tokens given its prompt, by a plain forward."""
    out = []
    with torch.no_grad():
        for e in entries:
            prompt, answer = e["prompt_ids"], e[side]
            ids = torch.tensor([prompt + answer])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            out.append(logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None]).sum())
    return torch.stack(out)


def test_embedded_model_learns_and_saves(embedded_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sapo.train.trainer import SAPOTrainer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    examples, _ = load_examples("embedded", tok, max_length=256, max_prompt_length=192, limit=8)
    # The reference stays the initial policy (no sync within 3 steps), so the margin below is what DPO optimizes.
    config = tiny_config(
        tmp_path / "out", max_steps=3, segment_max_new_tokens=8, learning_rate=1e-4, ref_update_steps=100
    )
    init_model = load_model(embedded_model_dir).eval()
    initial = weights_of(init_model)
    trainer = SAPOTrainer(
        model=load_model(embedded_model_dir), args=config, train_dataset=to_dataset(examples), processing_class=tok
    )
    trainer.train()
    assert_all_changed(trainer.model, initial, "embedded SmolLM2-135M after 3 steps")

    # DPO implicit reward margin on the pairs it trained on, against the initial policy.
    entries = trainer.buffer.state_dict()["entries"]
    assert len(entries) == 3 * BATCH
    eos = eos_ids(embedded_model_dir, tok)
    for i, e in enumerate(entries):  # a trained model may end a segment with EOS (seen here at step 1)
        assert_spliced(e, f"embedded buffer entry {i}", eos, max_new_tokens=8)
    final = trainer.accelerator.unwrap_model(trainer.model)
    final_model = load_model(embedded_model_dir)
    final_model.load_state_dict(final.state_dict())  # a plain copy: TRL patches the trained model's forward
    final_model.eval()
    chosen_gain = answer_logps(final_model, entries, "chosen_ids") - answer_logps(init_model, entries, "chosen_ids")
    rejected_gain = answer_logps(final_model, entries, "rejected_ids") - answer_logps(
        init_model, entries, "rejected_ids"
    )
    margin = (chosen_gain - rejected_gain).mean().item()
    assert margin > 0, f"implicit reward margin did not grow: {margin:.4g}"

    out = tmp_path / "final"
    trainer.save_model(str(out))
    tok.save_pretrained(out)
    readme = (out / "README.md").read_text()
    assert "SAPO-DPO" in readme
    assert (out / "sapo_config.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Name a primary colour."}], tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        new = reloaded.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id
        )[0, ids.size(1) :]
    assert [t for t in new.tolist() if t not in set(tok.all_special_ids)], f"only special tokens: {new.tolist()}"


# --------------------------------------------------------------------------- 8. CLI and recipes

CLI_RECIPE = """\
method: sapo
dataset_name: {data}
max_length: 256
max_prompt_length: 192
sapo_loss: dpo
segment_max_new_tokens: 4
ref_update_steps: 2
bf16: false
gradient_checkpointing: false
learning_rate: 0.1
logging_steps: 1
per_device_train_batch_size: 2
report_to: none
save_strategy: "no"
"""


def test_cli_train_writes_final_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from sapo.cli import main
    from sapo.train.embedded_data import write_embedded_dataset

    data = write_embedded_dataset(tmp_path / "data.jsonl", n=8)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLI_RECIPE.format(data=data))
    out = tmp_path / "out"
    argv = ["train", str(recipe), "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out)]
    assert main([*argv, "--max_steps", "2"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "SAPO-DPO" in (out / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(out)
    state = json.loads((out / "sapo_config.json").read_text())
    assert state["max_steps"] == 2 and state["segment_max_new_tokens"] == 4


def test_cli_unknown_recipe_key_exits_2(tiny_model_dir, tmp_path, capsys):
    from sapo.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(CLI_RECIPE.format(data="embedded") + "ema_betta: 0.5\n")
    assert main(["train", str(recipe), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ema_betta" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the loss TRL computes for us


def _answer_logps(model, batch) -> torch.Tensor:
    """Summed log-probs of the completion tokens, from a plain forward (no TRL patch)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logps * batch["completion_mask"][:, 1:]).sum(-1)


@pytest.mark.parametrize("loss", ["dpo", "orpo"])
def test_trainer_loss_equals_the_pure_formula(tiny_model_dir, dataset, tokenizer, tmp_path, loss):
    # Policy and reference must differ for the DPO check to mean anything: perturb the policy.
    from sapo.train.losses import dpo_sigmoid_loss, orpo_loss

    trainer = make_trainer(tiny_model_dir, tiny_config(tmp_path, sapo_loss=loss, beta=0.3), dataset, tokenizer)
    with torch.no_grad():
        for param in trainer.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    rows = dataset.select(range(3))
    pairs = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": c[: len(c) // 2] + c[len(c) // 2 :][::-1]}
             for p, c in zip(rows["prompt_ids"], rows["chosen_ids"], strict=True)]  # fmt: skip
    batch = trainer._prepare_inputs(trainer._collate_pairs(pairs))
    policy, reference = load_model(tiny_model_dir), load_model(tiny_model_dir)
    policy.load_state_dict(weights_of(trainer.model), strict=False)
    logps, ref_logps = _answer_logps(policy, batch), _answer_logps(reference, batch)
    n = len(pairs)
    trainer.model.train()
    if loss == "dpo":
        got = DPOTrainer.compute_loss(trainer, trainer.model, batch)
        expected = dpo_sigmoid_loss(logps[:n], logps[n:], ref_logps[:n], ref_logps[n:], beta=0.3)[0].mean()
    else:
        got = trainer._orpo_compute_loss(trainer.model, batch, return_outputs=False)
        lengths = batch["completion_mask"][:, 1:].sum(-1)
        mean = logps / lengths
        token_mean_nll = -logps[:n].sum() / lengths[:n].sum()  # over the batch's chosen tokens, as TRL's ORPO
        expected = orpo_loss(mean[:n], mean[n:], token_mean_nll.expand(n), beta=0.3)[0].mean()
    torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-5)
