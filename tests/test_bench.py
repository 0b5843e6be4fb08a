"""`sapo bench`: the closed forms it counts with, its goals and results files, and one real quick run.

Timings are never asserted (these machines are noisy): the bench prints ratios, the tests check what
they are computed from.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sapo.bench import report
from sapo.bench.cli import GROUPS, ON_REQUEST, chosen_groups
from sapo.bench.measure import device, machine_slug, spread, take_turns
from sapo.bench.step import StepBench, StepShape, bench_examples, decode_bytes, forward_flops, training_flops
from sapo.errors import RecipeError

# A made-up LLaMA-style config small enough to count by hand.
CONFIG = SimpleNamespace(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=16, vocab_size=10, head_dim=None)  # fmt: skip


def test_counted_flops_by_hand():
    # per layer: q 8x8 + o 8x8 = 128, k and v 8x4 each (1 KV head of dim 4) = 64, MLP 3 x 8 x 16 = 384 -> 576;
    # two layers 1152, LM head 8 x 10 = 80: 1232 weights in matmuls.
    # per token of a 5-token row: 2 x 1232 + attention 2 x 2 x 5 x (2 heads x 4) x 2 layers = 2464 + 320 = 2784
    assert forward_flops(CONFIG, sequences=3, length=5) == 3 * 5 * 2784
    # 2 pairs -> 4 rows; policy forward + backward (3 forwards) and the reference's forward: 4 forwards
    assert training_flops(CONFIG, pairs=2, length=5, reference=True) == 4 * forward_flops(CONFIG, 4, 5)
    assert training_flops(CONFIG, pairs=2, length=5, reference=False) == 3 * forward_flops(CONFIG, 4, 5)


def test_decode_bytes_by_hand():
    import torch

    model = torch.nn.Linear(6, 5)  # 35 float32 parameters
    model.config = CONFIG
    # weights 35 x 4 bytes; KV: 2 (k, v) x 2 layers x 1 KV head x 4 dims x 4 bytes x 3 rows x 7 tokens
    assert decode_bytes(model, batch=3, context=7) == 35 * 4 + 2 * 2 * 1 * 4 * 4 * 3 * 7


def test_take_turns_alternates_and_warms_up():
    calls = []
    times = take_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-first, b-first, a-first
    assert [len(t) for t in times.values()] == [3, 3] and spread([1.0, 1.5]) == 0.5


def test_machine_slug_names_the_machine_class():
    assert machine_slug({"cpu_cores": 2}) == "cpu-2-cores"
    assert machine_slug({"gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 1}) == "cuda-1x-nvidia-h100-80gb-hbm3"


def test_every_goal_parses_and_belongs_to_a_group():
    goals = report.load_goals()
    assert {g["group"] for g in goals.values()} == set(GROUPS) - {"growth", "growth_memory"}  # those two: fits, plots
    assert goals["full_step"]["goal"] == "<= 1.5" and report.judge(goals["full_step"], 1.5) is True
    assert (
        report.judge(goals["training_flops"], 0.59) is False and report.judge(goals["generation_share"], 0.9) is None
    )
    # the default run is every group but the ones run on request; --only takes entries and groups
    assert {"reproduce", "growth_memory"} <= set(ON_REQUEST) and not set(ON_REQUEST) & set(chosen_groups(None, goals))
    assert chosen_groups("growth_memory", goals) == ["growth_memory"]
    assert chosen_groups("full_step,ema", goals) == ["step", "ema"]
    with pytest.raises(RecipeError, match="'ful_step' is no bench entry or group .did you mean 'full_step'"):
        chosen_groups("ful_step", goals)


def test_results_file_keeps_entries_not_run_and_readme_renders(tmp_path):
    goals = report.load_goals()
    machine = {"cpu": "test cpu", "cpu_cores": 2, "torch_threads": 2, "memory_gib": 24, "python": "3.11",
               "packages": {"torch": "2.13.0"}}  # fmt: skip
    path, stamp = tmp_path / "cpu-2-cores.json", (machine["packages"], "abc1234")
    first = report.record({"full_step": {"value": 3.0, "detail": "d"}}, goals, "m", *stamp)
    report.update_results(path, machine, first, {"group_seconds": {"step": 400.0}, "group_commits": {"step": "a"}})
    second = report.record({"openllm_overhead": {"value": 1.01}}, goals, "m", *stamp)
    report.update_results(
        path, machine, second, {"group_seconds": {"openllm": 230.0}, "group_commits": {"openllm": "b"}}
    )
    body = json.loads(path.read_text())
    assert body["group_seconds"] == {"step": 400.0, "openllm": 230.0} and body["group_commits"] == {
        "step": "a",
        "openllm": "b",
    }  # a run of some groups keeps the others'
    assert body["entries"]["full_step"]["commit"] == "abc1234"  # the commit read when the run began
    assert body["entries"]["full_step"]["met"] is False and body["entries"]["openllm_overhead"]["met"] is True
    (tmp_path / "NOTES.md").write_text("## Notes\nfull step: generation dominates")
    text = report.render_readme(tmp_path).read_text()
    assert "| SAPO full step (generation at segment 256) / TRL DPO step | 3.00x | <= 1.5 | NO | d |" in text
    assert "test cpu, 2 cores" in text and text.rstrip().endswith("generation dominates")


def test_bench_examples_have_the_shape_asked(tiny_model_dir):
    from sapo.models import load_tokenizer
    from sapo.train.data import load_examples

    tokenizer = load_tokenizer(tiny_model_dir)
    shape = StepShape(batch=3, prompt_tokens=20, answer_tokens=40)
    examples = bench_examples(tokenizer, shape)
    assert [(len(e.prompt_ids), len(e.answer_ids)) for e in examples] == [(20, 40)] * 3
    assert all(tokenizer.decode(e.prompt_ids).endswith("<|im_end|>\n<|im_start|>assistant\n") for e in examples)
    assert len({tuple(e.prompt_ids) for e in examples}) == 3  # three different rows
    (real,), _ = load_examples("embedded", tokenizer, limit=1)
    assert all(e.answer_ids[-1] == real.answer_ids[-1] for e in examples)  # ends as a real answer ends


def test_full_step_writes_whole_segments_and_trains(tiny_model_dir):
    """The bench's SAPO step is the real one: every segment has the full length, the policy moves, the buffer
    fills, and the DPO and no-generation sides step too."""
    import torch

    shape = StepShape(batch=2, prompt_tokens=12, answer_tokens=24, segment=8, buffer_size=4)
    bench = StepBench(str(tiny_model_dir), shape)
    sapo = bench.trainers["sapo"]
    before = {n: p.detach().clone() for n, p in sapo.model.named_parameters()}
    for kind in bench.trainers:
        bench.step(kind)
    assert [e.generated_len for e in sapo.buffer.entries] == [8, 8] and not any(
        e.ended_early for e in sapo.buffer.entries
    )
    assert sapo.generation_seconds > 0
    assert ("sapo_fast" in bench.trainers) == (device() == "cpu")  # the option does nothing on a GPU
    if device() == "cpu":
        fast = bench.trainers["sapo_fast"]  # the opt-in decoding: the same whole segments, and only there
        assert fast.args.cpu_fast_decoding and not sapo.args.cpu_fast_decoding
        assert [e.generated_len for e in fast.buffer.entries] == [8, 8] and fast.generation_seconds > 0
    unchanged = [n for n, p in sapo.model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


def test_quick_bench_runs_end_to_end(tiny_model_dir, capsys):
    """`sapo bench --quick` on the tiny model: every entry of the step group is printed with its goal."""
    from sapo.cli import main

    assert main(["bench", "--quick", "--model", str(tiny_model_dir), "--only", "step", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("SAPO full step", "training step FLOP/s", "segment decoding bytes/s", "nothing written"):
        assert label in out
    assert ("with cpu_fast_decoding" in out) == (device() == "cpu")


def test_a_child_reads_its_own_peak_not_its_parents():
    """The memory entries measure in child processes of the (large) bench process: a child's peak must be its own.
    getrusage's ru_maxrss carries the parent's peak across exec, which read 0 bytes above every child's baseline."""
    import subprocess
    import sys

    held = bytearray(400 * 2**20)  # the parent's peak: 400 MiB more than the child will reach
    held[::4096] = b"x" * len(held[::4096])  # touch every page, so it is resident
    script = ("from sapo.bench.measure import peak_rss_bytes; b = peak_rss_bytes(); x = bytearray(100 * 2**20); "
              "x[::4096] = b'y' * len(x[::4096]); print(peak_rss_bytes() - b)")  # fmt: skip
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert 90 * 2**20 < grown < 200 * 2**20, grown
    del held


def test_memory_parts_by_hand_and_a_real_dpo_step_measures_activations(tiny_model_dir):
    from sapo.bench import memory

    assert memory.parts(100, 7, "dpo") == {"policy": 100, "gradients": 100, "optimizer state (AdamW)": 200,
                                           "EMA model": 100, "one batch's activations": 7, "reference model": 100}  # fmt: skip
    assert sum(memory.parts(100, 7, "orpo").values()) == 507  # no reference: the EMA stands in
    shape = StepShape(batch=2, prompt_tokens=12, answer_tokens=24, segment=8, buffer_size=4)
    # TRL's real DPO step in a child process, less its weights and optimizer state: some activations, not zero
    assert memory.activations(str(tiny_model_dir), shape) > 0


def test_reproduce_step_seconds_are_read_from_its_output():
    from sapo.bench.entries import step_seconds

    log = (
        "== train embedded/smollm2-135m/sft\n   sapo train recipes/...\n{'loss': 1.0}\n   done in 41 s\n"
        "== evaluate embedded/smollm2-135m/sft on verifiable,ifeval\n   sapo eval ...\n   done in 152 s\n"
        "== train embedded/smollm2-135m/dpo\n   sapo train ...\n"
    )  # fmt: skip  (the last one never finished)
    assert step_seconds(log) == {"train embedded/smollm2-135m/sft": 41.0,
                                 "evaluate embedded/smollm2-135m/sft on verifiable,ifeval": 152.0}  # fmt: skip
