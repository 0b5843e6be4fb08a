"""How cost grows (bench/growth.py) and what a recipe would cost (bench/predict.py).

The fit is checked on points made from known constants, the prediction on a made-up recipe and model whose
every count is written out below; one real sweep of the tiny model checks the structure only (times are never
asserted: these machines are noisy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sapo.bench import growth, predict
from sapo.bench.step import StepShape
from sapo.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPES = sorted((ROOT / "recipes" / "paper").rglob("*.yaml"))


def _point(kind, flops, decode_steps, bytes_per_step, seconds, axis="sequence", value=1):
    return {"kind": kind, "axis": axis, "value": value, "flops": flops, "decode_steps": decode_steps,
            "bytes_per_decode_step": bytes_per_step, "seconds": seconds}  # fmt: skip


def test_fit_recovers_known_constants():
    # t0 0.5 s, 1e10 FLOP/s, 1e9 bytes/s: seconds = 0.5 + flops / 1e10 + steps x bytes / 1e9
    points = [_point("dpo", 1e10, 0, 0, 1.5),  # 0.5 + 1
              _point("dpo", 3e10, 0, 0, 3.5),  # 0.5 + 3
              _point("sapo", 2e10, 10, 1e8, 3.5),  # 0.5 + 2 + 1
              _point("sapo", 2e10, 20, 1e8, 4.5),  # 0.5 + 2 + 2
              _point("sapo", 4e10, 10, 2e8, 6.5)]  # 0.5 + 4 + 2  # fmt: skip
    fit = growth.fit_cost_model(points)
    assert fit["t0_s"] == pytest.approx(0.5, rel=1e-9)
    assert fit["flops_per_s"] == pytest.approx(1e10, rel=1e-9)
    assert fit["bytes_per_s"] == pytest.approx(1e9, rel=1e-9)
    assert fit["predicted_s"] == pytest.approx([1.5, 3.5, 3.5, 4.5, 6.5], rel=1e-9)
    assert max(map(abs, fit["relative_error"])) < 1e-9 and fit["points"] == 5
    assert growth.predict_seconds(fit, 5e10, 3e9) == pytest.approx(0.5 + 5 + 3)
    assert "t0 0.50 s" in growth.format_fit(fit, points)


def test_a_point_shown_on_several_axes_weighs_once():
    """The base shape is one measurement listed on every axis: repeating it must not pull the fit toward it."""
    points = [_point("dpo", 1e10, 0, 0, 1.5), _point("dpo", 3e10, 0, 0, 3.5), _point("sapo", 2e10, 10, 1e8, 3.5),
              _point("sapo", 2e10, 20, 1e8, 4.5), _point("sapo", 4e10, 10, 2e8, 7.0)]  # fmt: skip
    repeated = points + [dict(points[4], axis=axis) for axis in ("batch", "segment", "buffer")]
    once, many = growth.fit_cost_model(points), growth.fit_cost_model(repeated)
    assert many["points"] == 5 and len(many["relative_error"]) == 8
    assert many["t0_s"] == pytest.approx(once["t0_s"]) and many["bytes_per_s"] == pytest.approx(once["bytes_per_s"])


def test_fit_keeps_every_constant_nonnegative():
    # 1, 2.5, 4 s at 1, 2, 3 x 1e10 FLOPs: the free line has intercept -0.5 s, not a cost: t0 is held at 0
    points = [_point("dpo", 1e10, 0, 0, 1.0), _point("dpo", 2e10, 0, 0, 2.5), _point("dpo", 3e10, 0, 0, 4.0)]
    fit = growth.fit_cost_model(points)
    assert fit["t0_s"] == 0.0 and fit["bytes_per_s"] is None  # no decoding in any point: no decode term
    # with t0 0, the relative fit of c = 1 / flops_per_s to x = flops / seconds = 1e10, 0.8e10, 0.75e10 minimizes
    # sum (c x - 1)^2: c = sum x / sum x^2, so flops_per_s = (1 + 0.64 + 0.5625) / 2.55 x 1e10
    assert fit["flops_per_s"] == pytest.approx((1 + 0.64 + 0.5625) / 2.55 * 1e10, rel=1e-9)
    with pytest.raises(ValueError, match="at least 3 points"):
        growth.fit_cost_model(points[:2])


def test_plan_varies_one_axis_at_a_time():
    base = StepShape(batch=1, prompt_tokens=16, answer_tokens=48, segment=16, buffer_size=4)
    assert growth.shape_at(base, "sequence", 128) == StepShape(1, 32, 96, 16, 4)  # prompt:answer stays 1:3
    assert growth.shape_at(base, "buffer", 8).buffer_size == 8 and growth.shape_at(base, "batch", 3).batch == 3
    with pytest.raises(ValueError, match="cannot hold a 46-token segment"):
        growth.shape_at(base, "segment", 46)  # 48 < 46 + 3
    with pytest.raises(ValueError, match="answer of 18 tokens"):
        growth.shape_at(base, "sequence", 24)  # 6 + 18: 18 < 16 + 3
    points = growth.plan(growth.BASE, growth.GRID)
    assert len(points) == sum(map(len, growth.GRID.values()))
    assert sum(shape == growth.BASE for _, _, shape in points) == 4  # the base sits on every axis


def test_plot_growth_writes_one_png(tmp_path):
    points = [_point("sapo", 1e10 * v, 8, 1e8, 1.0 + v, axis=a, value=v) for a in growth.GRID for v in (1, 2)]
    points += [_point("dpo", 1e10 * v, 0, 0, 0.5 + v, axis="batch", value=v) for v in (1, 2)]
    fit = growth.fit_cost_model(points)
    path = growth.plot_growth(points, fit, tmp_path / "plots" / "growth.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- predict: a made-up run by hand


@pytest.fixture
def made_up_run(tmp_path):
    """A LLaMA-style model small enough to count by hand, a SAPO-DPO recipe on it and a ZeRO-3 launch."""
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 2,
              "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 10,
              "tie_word_embeddings": False}  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump({"distributed_type": "DEEPSPEED",
                                                         "deepspeed_config": {"zero_stage": 3}}))  # fmt: skip
    recipe = {"method": "sapo", "model_name_or_path": str(model), "dataset_name": "made/up", "max_length": 6,
              "max_prompt_length": 4, "sapo_loss": "dpo", "segment_max_new_tokens": 2,
              "per_device_train_batch_size": 2, "global_batch_size": 8, "num_train_epochs": 2}  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text("# accelerate launch --config_file zero3.yaml -m sapo.cli train recipe.yaml\n"
                    + yaml.safe_dump(recipe))  # fmt: skip
    return path


def test_predict_by_hand(made_up_run):
    found = predict.predict(made_up_run, gpus=2, gpu_type="h100", rows=20, mfu=0.5, bandwidth_fraction=0.5)
    # Parameters: embedding 10x8 = 80; per layer q 64 + k 32 + v 32 + o 64 + MLP 3x8x16 = 384 + 2 norms x 8 = 592,
    # two layers 1184; final norm 8; LM head 80: 1352. Matmul weights (step.matmul_params): 1232.
    assert found["parameters"] == 1352
    # Training, per micro-step: 2 pairs -> 4 rows of 6 tokens, 4 forwards (policy x 3, reference x 1); a forward
    # costs per token 2 x 1232 + attention 2 x 2 x 6 x (2 heads x 4) x 2 layers = 2464 + 384 = 2848.
    training = 4 * (4 * 6 * 2848)
    # Prefill: 2 rows of 6 - 2 = 4 tokens, per token 2464 + 2 x 2 x 4 x 8 x 2 = 2720.
    prefill = 2 * 4 * 2720
    # Decoding: a 2-token segment is the prefill's token and 1 decoding step, reading the bf16 weights 1352 x 2
    # and the KV cache 2 (k, v) x 2 layers x 1 head x 4 dims x 2 bytes x 2 rows x 6 tokens = 384.
    decoding = 1 * (1352 * 2 + 384)
    # ZeRO-3: each of 2 GPUs receives the other half of the bf16 weights per generation call.
    gather = 1352 * 2 / 2
    flops_per_s, bytes_per_s, gather_per_s = 989e12 * 0.5, 3.35e12 * 0.5, 900e9 / 2 * 0.5  # H100, halved
    micro = (training + prefill) / flops_per_s + decoding / bytes_per_s + gather / gather_per_s
    assert found["accumulation"] == 2  # 8 = 2 per device x 2 GPUs x 2
    assert found["steps"] == 6  # 2 epochs x ceil(20 rows / 8)
    assert found["step_seconds"] == pytest.approx(2 * micro, rel=1e-12)
    assert found["seconds"] == pytest.approx(6 * 2 * micro, rel=1e-12)
    assert [p["part"] for p in found["step_parts"]] == ["training", "prefill", "decoding", "ZeRO-3 gather"]
    text = predict.render(found)
    assert "DeepSpeed ZeRO-3" in text and "rows: 20 (--rows)" in text and "upper bound" in text


def test_predict_asks_for_rows_of_an_unknown_dataset(made_up_run):
    with pytest.raises(RecipeError, match=r"size of made/up \(train split\) is unknown.*--rows N"):
        predict.predict(made_up_run, gpus=2, gpu_type="h100")
    with pytest.raises(RecipeError, match="not a multiple"):
        predict.predict(made_up_run, gpus=3, gpu_type="h100", rows=20)
    with pytest.raises(RecipeError, match="did you mean 'h100'"):
        predict.predict(made_up_run, gpus=2, gpu_type="h10", rows=20)
    recipe = yaml.safe_load(made_up_run.read_text())
    made_up_run.write_text(yaml.safe_dump({**recipe, "model_name_or_path": "nobody/unknown-7b"}))
    with pytest.raises(RecipeError, match="'nobody/unknown-7b' is not in bench/models.yaml"):
        predict.predict(made_up_run, gpus=2, gpu_type="h100", rows=20)  # offline: its config cannot be fetched


def test_predict_on_this_machine_from_a_fit(made_up_run):
    fit = {"t0_s": 0.25, "flops_per_s": 1e9, "bytes_per_s": 1e8, "rms_relative_error": 0.1}
    found = predict.predict(made_up_run, gpus=1, gpu_type="this", fit=fit, rows=20)
    # fp32 weights as the sweep ran; no gather on one process; t0 once per micro-step (4 of them: 8 / 2); the
    # 2-token segment is the prefill's token and 1 decoding step
    micro = 0.25 + (4 * 4 * 6 * 2848 + 2 * 4 * 2720) / 1e9 + 1 * (1352 * 4 + 2 * 2 * 4 * 4 * 2 * 6) / 1e8
    assert found["accumulation"] == 4 and found["step_seconds"] == pytest.approx(4 * micro, rel=1e-12)
    with pytest.raises(RecipeError, match="--gpus 1"):
        predict.predict(made_up_run, gpus=2, gpu_type="this", fit=fit, rows=20)


@pytest.mark.parametrize("gpu_type", list(predict.load_data("hardware.yaml")))
def test_every_paper_recipe_predicts(gpu_type):
    assert len(PAPER_RECIPES) >= 11
    for recipe in PAPER_RECIPES:
        found = predict.predict(recipe, gpus=8, gpu_type=gpu_type)
        assert found["hours"] > 0 and found["rows"] in (7563, 9500), recipe
        assert "DeepSpeed ZeRO-3" in predict.predict_main(recipe, 8, gpu_type)
        generates = found["method"] in ("sapo", "spin")
        assert any("decoding" in p["part"] for p in found["step_parts"] + found["iteration_parts"]) == generates


# --------------------------------------------------------------------------- one real sweep (tiny model)


def test_real_sweep_on_the_tiny_model(tiny_model_dir, tmp_path):
    points = growth.sweep(str(tiny_model_dir), growth.plan(growth.QUICK_BASE, growth.QUICK_GRID))
    by = {(p["axis"], p["value"], p["kind"]) for p in points}
    for axis, values in growth.QUICK_GRID.items():
        for value in values:
            assert (axis, value, "sapo") in by
            assert ((axis, value, "dpo") in by) == (axis in growth.DPO_AXES)
    assert len(points) == 8 + 4
    for p in points:
        assert p["seconds"] > 0 and len(p["times"]) == 1 and p["flops"] > 0
        assert p["decode_steps"] == (p["shape"]["segment"] - 1 if p["kind"] == "sapo" else 0)  # 1st forward: prefill
    base = [p for p in points if StepShape(**p["shape"]) == growth.QUICK_BASE and p["kind"] == "sapo"]
    assert len({p["seconds"] for p in base}) == 1  # the base shape is measured once, shown on every axis
    fit = growth.fit_cost_model(points)
    assert len(fit["relative_error"]) == len(points)
    assert growth.plot_growth(points, fit, tmp_path / "growth.png").is_file()


# --------------------------------------------------------------------------- peak memory as the sizes grow


def _memory_point(kind: str, tokens: int, peak: float, axis: str = "sequence", **shape) -> dict:
    shape = {"batch": 1, "prompt_tokens": tokens // 4, "answer_tokens": tokens - tokens // 4, **shape}
    return {"kind": kind, "axis": axis, "value": tokens, "tokens": tokens, "peak_bytes": peak, "shape": shape}


def test_memory_fit_is_fixed_plus_per_token():
    """Hand-made peaks: SAPO 900 + 3 bytes per token, DPO 500 + 2, fitted exactly. The base shape shown on a second
    axis weighs once; a segment point of the base's tokens is a measurement of its own."""
    points = [_memory_point("sapo", t, 900 + 3 * t) for t in (48, 96, 192)]
    points += [_memory_point("sapo", 48, 900 + 3 * 48, axis="batch")]  # the base again, on another axis
    points += [_memory_point("dpo", t, 500 + 2 * t) for t in (48, 96)]
    fits = growth.fit_memory(points)
    assert fits["sapo"]["fixed_bytes"] == pytest.approx(900) and fits["sapo"]["bytes_per_token"] == pytest.approx(3)
    assert fits["dpo"]["fixed_bytes"] == pytest.approx(500) and fits["dpo"]["bytes_per_token"] == pytest.approx(2)
    assert fits["sapo"]["points"] == 3 and fits["sapo"]["rms_relative_error"] == pytest.approx(0, abs=1e-12)
    assert growth.memory_fitted(points[:1], fits) == [pytest.approx(900 + 3 * 48)]
    segment = _memory_point("sapo", 48, 900 + 3 * 48, axis="segment", segment=16)
    assert growth.fit_memory([*points, segment])["sapo"]["points"] == 4
    with pytest.raises(ValueError, match="two token counts"):
        growth.fit_memory([_memory_point("sapo", 48, 1000), _memory_point("sapo", 48, 1000, segment=4)])


def test_memory_fit_never_returns_a_negative_part():
    """Peaks that fall as tokens grow (resident-set noise at small shapes): the per-token part is 0, not < 0, and
    the fixed part the relative-error fit of a constant."""
    fits = growth.fit_memory([_memory_point("sapo", 48, 1000), _memory_point("sapo", 96, 990)])["sapo"]
    assert fits["bytes_per_token"] == 0 and 990 <= fits["fixed_bytes"] <= 1000


def test_quick_memory_group_on_the_tiny_model(tiny_model_dir, tmp_path):
    """`sapo bench --quick --only growth_memory`: each point's peak from a child process of its own
    (memory.measure), SAPO and DPO along the sequence axis, fitted; the plot drawn from them."""
    from sapo.bench.entries import BenchContext

    ctx = BenchContext("tiny", str(tiny_model_dir), quick=True, output=str(tmp_path))
    extra = growth.growth_memory_group(ctx)["_extra"]
    points = extra["growth_memory_points"]
    assert [(p["kind"], p["value"]) for p in points] == [("sapo", 32), ("dpo", 32), ("sapo", 48), ("dpo", 48)]
    assert all(p["peak_bytes"] > 0 and p["tokens"] == p["value"] for p in points)  # batch 1: tokens = length
    assert set(extra["growth_memory_fit"]) == {"sapo", "dpo"} and "growth_memory_png" not in extra  # quick: no plot
    assert growth.plot_memory(points, extra["growth_memory_fit"], tmp_path / "memory.png").is_file()
