"""What a run of a recipe would cost: hours on N GPUs of a type, every assumption printed beside the number.

``sapo bench --predict RECIPE --gpus N --gpu-type T``. A rough, first-order estimate for planning, not a
measurement: each optimizer step is counted with the closed forms of ``step.py`` on the recipe's model (sizes in
``models.yaml``: the hub cannot be reached), and turned into seconds with the GPU's datasheet peaks
(``hardware.yaml``) times named efficiencies (``MFU``, ``BANDWIDTH_FRACTION``), or, for ``--gpu-type this``,
with the constants fitted to this machine's own sweep (``growth.py``). Per GPU and micro-step:

- training: the method's counted FLOPs (policy forward + backward, the reference's forward where there is one)
  at MFU x peak; every row max_length tokens long, an upper bound;
- SAPO: the EMA model's prefill (FLOPs) and ``segment_max_new_tokens`` decoding steps, each reading every
  weight and the KV cache (bytes) at a fraction of the memory bandwidth, and under ZeRO-3 one all-gather of the
  weights per generation call (``unwrap_model_for_generation``) over the interconnect;
- SPIN: each iteration first answers every prompt greedily (``spin_max_new_tokens`` per batch of
  ``spin_generation_batch_size``, weights gathered once per iteration: ``train/spin.py``), then trains as DPO.
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from sapo.bench.step import decode_bytes, forward_flops, training_flops
from sapo.errors import RecipeError, SapoError, closest

# Model FLOPs utilization of training: counted FLOPs / (seconds x peak). Activation checkpointing's recompute and
# ZeRO-3's weight traffic during training (overlapped with compute) are not counted: they sit inside it.
MFU = 0.4
BANDWIDTH_FRACTION = 0.5  # of peak memory bandwidth one decoding step reaches (small batches: latency-bound kernels)
THIS = ("this", "cpu")  # this machine, from the constants its own growth sweep fitted


def load_data(name: str) -> dict:
    return yaml.safe_load(resources.files("sapo.bench").joinpath(name).read_text())


def si(value: float, unit: str) -> str:
    """``value`` with the SI prefix that keeps it readable: 2.11 PFLOP, 18.2 GB, 640 MB."""
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


@dataclasses.dataclass(frozen=True)
class Speeds:
    """What the estimate converts counts into seconds with: effective rates (peak x efficiency, or fitted)."""

    name: str
    flops_per_s: float
    bytes_per_s: float
    gather_bytes_per_s: float | None  # one direction of the interconnect; None: nothing to gather over
    t0_s: float = 0.0  # fixed seconds per micro-step (fitted on this machine; 0 on a datasheet)
    weight_bytes: int = 2  # bf16 weights on GPUs; fp32 on this machine, as its sweep ran
    notes: tuple[str, ...] = ()


def gpu_speeds(gpu_type: str, mfu: float, bandwidth_fraction: float) -> Speeds:
    table = load_data("hardware.yaml")
    if gpu_type not in table:
        near = closest(gpu_type, table)
        hint = f" (did you mean {near!r}?)" if near else ""
        raise RecipeError(f"--gpu-type: {gpu_type!r} is not in bench/hardware.yaml{hint}: {', '.join(table)}, this")
    hw = table[gpu_type]
    one_way = hw["interconnect_bidirectional_bytes_per_s"] / 2
    notes = (f"{hw['name']}: {hw['bf16_flops'] / 1e12:.0f} TFLOP/s bf16 dense, {hw['memory_bytes_per_s'] / 1e12:.2f}"
             f" TB/s memory, {hw['interconnect']} {one_way / 1e9:.0f} GB/s each way ({hw['source']})",
             f"efficiencies: MFU {mfu} of peak FLOP/s for training and prefill; {bandwidth_fraction} of peak memory "
             "and interconnect bandwidth for decoding and gathers (named defaults, not measured)")  # fmt: skip
    return Speeds(hw["name"], hw["bf16_flops"] * mfu, hw["memory_bytes_per_s"] * bandwidth_fraction,
                  one_way * bandwidth_fraction, notes=notes)  # fmt: skip


def this_machine_speeds(fit: dict | None, results_dir: str | Path = "results/bench") -> Speeds:
    """This machine's constants from its growth sweep: ``fit`` or the ``growth_fit`` of its results file."""
    import json

    from sapo.bench.measure import machine, machine_slug

    where = "the fit given"
    if fit is None:
        path = Path(results_dir) / f"{machine_slug(machine())}.json"
        fit = json.loads(path.read_text()).get("growth_fit") if path.is_file() else None
        where = str(path)
        if fit is None:
            raise RecipeError(f"--gpu-type this: no growth sweep of this machine in {path}; run `sapo bench "
                              "--only growth` first")  # fmt: skip
    if not fit.get("flops_per_s") or not fit.get("bytes_per_s"):
        raise RecipeError(f"--gpu-type this: the sweep's fit ({where}) has no FLOP or no decoding term")
    notes = (f"this machine, from its growth sweep ({where}): t0 {fit['t0_s']:.2f} s per step, "
             f"{fit['flops_per_s'] / 1e9:.1f} GFLOP/s, decoding {fit['bytes_per_s'] / 1e9:.2f} GB/s (fitted: "
             f"efficiencies included, rms error {fit['rms_relative_error']:.0%}); fp32 weights, as the sweep ran",
             "the sweep's shapes are small (bench/growth.py: up to 96 tokens, 3 rows, 16-token segments, one timed "
             "turn each): a paper recipe's 2048 tokens and 8 rows are an extrapolation of 20x and more")  # fmt: skip
    return Speeds("this machine", fit["flops_per_s"], fit["bytes_per_s"], None, fit["t0_s"], 4, notes)


def _on_meta(config, dtype_bytes: int):
    """The model of ``config`` on the meta device (shapes, no weights): what step.py's counts read."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype={2: torch.bfloat16, 4: torch.float32}[dtype_bytes])


@cache
def _listed_model(key: str, dtype_bytes: int):
    from transformers import AutoConfig

    spec = load_data("models.yaml")["models"][key]
    return _on_meta(AutoConfig.for_model(spec["model_type"], **spec["config"]), dtype_bytes)


@cache
def local_model(name: str, dtype_bytes: int):
    """A local (or cached) model's shapes on the meta device: ``name`` as ``sapo train`` takes it."""
    from transformers import AutoConfig

    from sapo.models import resolve_model_path

    return _on_meta(AutoConfig.from_pretrained(resolve_model_path(name, weights=False)), dtype_bytes)


def recipe_model(recipe: dict, recipe_path: Path, dtype_bytes: int) -> tuple[str, object]:
    """The recipe's model, by ``model_name_or_path`` in models.yaml, else its own config.json on this machine."""
    name = recipe.get("model_name_or_path", "")
    for key, spec in load_data("models.yaml")["models"].items():
        if name in spec["names"]:
            return f"{key} ({spec['source']})", _listed_model(key, dtype_bytes)
    try:
        return f"{name} (its config.json)", local_model(name, dtype_bytes)
    except (OSError, ValueError, SapoError) as err:  # offline and not cached, or no such folder: the user must add it
        raise RecipeError(f"{recipe_path}: model {name!r} is not in bench/models.yaml and its config is not on this "
                          f"machine ({type(err).__name__}); add its size to bench/models.yaml") from err  # fmt: skip


def training_rows(recipe: dict, recipe_path: Path, rows: int | None) -> tuple[int, str]:
    if rows is not None:
        return rows, f"rows: {rows} (--rows)"
    dataset, split = recipe.get("dataset_name"), recipe.get("dataset_split", "train")
    known = (load_data("models.yaml")["datasets"].get(dataset) or {}).get(split)
    if known is None:
        raise RecipeError(f"{recipe_path}: the size of {dataset} ({split} split) is unknown here (bench/models.yaml "
                          "datasets); pass --rows N, the training rows of that split")  # fmt: skip
    cap = recipe.get("max_examples")
    used = min(known, cap) if cap else known
    return used, (f"rows: {used} of {dataset} {split} (dataset card{f', max_examples {cap}' if cap else ''}); "
                  "an upper bound: the recipe's truncation drops over-long prompts or texts")  # fmt: skip


def zero_stage(recipe_path: Path) -> tuple[int | None, str]:
    """The ZeRO stage of the accelerate config the recipe's launch line names (``--config_file X``)."""
    found = re.search(r"--config_file\s+(\S+)", recipe_path.read_text())
    if not found:
        return None, "launch: no accelerate config named in the recipe; no ZeRO assumed"
    for folder in (Path.cwd(), *recipe_path.resolve().parents):
        if (folder / found[1]).is_file():
            launch = yaml.safe_load((folder / found[1]).read_text())
            if launch.get("distributed_type") != "DEEPSPEED":
                return None, f"launch: {found[1]} ({launch.get('distributed_type')}), no ZeRO"
            stage = launch.get("deepspeed_config", {}).get("zero_stage")
            return stage, f"launch: {found[1]}, DeepSpeed ZeRO-{stage}"
    return None, f"launch: {found[1]} not found; no ZeRO assumed"


def _field(recipe: dict, name: str):
    """A recipe value, else its config class's default (what `sapo train` would use)."""
    if name in recipe:
        return recipe[name]
    from sapo.train.cli import config_class

    fields = {f.name: f for f in dataclasses.fields(config_class(recipe["method"]))}
    return fields[name].default


def step_parts(recipe: dict, model, speeds: Speeds, per_device: int, length: int, gather: float) -> list[dict]:
    """Seconds of one micro-step on one GPU, by part: training, and SAPO's generation (prefill, decoding, the
    ZeRO-3 gather of ``gather`` bytes)."""
    config, method = model.config, recipe["method"]
    if method == "sft":
        flops = 3 * forward_flops(config, per_device, length)
    else:
        reference = method in ("dpo", "spin") or (method == "sapo" and _field(recipe, "sapo_loss") == "dpo")
        flops = training_flops(config, per_device, length, reference=reference)
    what = f"{per_device} {'rows' if method == 'sft' else 'pairs'} x {length} tokens"
    parts = [{"part": "training", "what": f"{si(flops, 'FLOP')} ({what})",
              "seconds": speeds.t0_s + flops / speeds.flops_per_s}]  # fmt: skip
    if method == "sapo":
        segment = _field(recipe, "segment_max_new_tokens")
        prefill = forward_flops(config, per_device, length - segment)
        per_step = decode_bytes(model, per_device, length)
        parts += [{"part": "prefill", "what": f"{si(prefill, 'FLOP')} ({per_device} x {length - segment} tokens)",
                   "seconds": prefill / speeds.flops_per_s},
                  {"part": "decoding", "what": f"{segment - 1} steps x {si(per_step, 'B')} (weights + KV cache of "
                   f"{per_device} x {length})", "seconds": (segment - 1) * per_step / speeds.bytes_per_s}]  # fmt: skip
        if gather:
            parts.append({"part": "ZeRO-3 gather", "what": f"{si(gather, 'B')} of weights received per call",
                          "seconds": gather / speeds.gather_bytes_per_s})  # fmt: skip
    return parts


def spin_generation(recipe: dict, model, speeds: Speeds, prompts: int, length: int, gather: float) -> list[dict]:
    """Seconds of one SPIN iteration's generation on one GPU: its share of the prompts, in batches."""
    new, size = _field(recipe, "spin_max_new_tokens"), _field(recipe, "spin_generation_batch_size")
    batches = math.ceil(prompts / size)
    context = min(length - new, recipe.get("max_prompt_length") or length)
    prefill = batches * forward_flops(model.config, size, context)
    per_step = decode_bytes(model, size, length)
    parts = [{"part": "SPIN prefill", "what": f"{batches} batches of {size} x {context} tokens",
              "seconds": prefill / speeds.flops_per_s},
             {"part": "SPIN decoding", "what": f"{batches} batches x {new} steps x {si(per_step, 'B')}",
              "seconds": batches * new * per_step / speeds.bytes_per_s}]  # fmt: skip
    if gather:
        parts.append({"part": "SPIN ZeRO-3 gather", "what": f"{si(gather, 'B')} once",
                      "seconds": gather / speeds.gather_bytes_per_s})  # fmt: skip
    return parts


def _read_recipe(recipe_path) -> tuple[Path, dict]:
    from sapo.train.cli import METHODS

    path = Path(recipe_path)
    if not path.is_file():
        raise RecipeError(f"--predict: no recipe at {path}")
    recipe = yaml.safe_load(path.read_text()) or {}
    if recipe.get("method") not in METHODS:
        raise RecipeError(f"{path}: method: expected one of {METHODS}, got {recipe.get('method')!r}")
    if not recipe.get("max_length"):
        raise RecipeError(f"{path}: max_length is unset: the estimate needs it as its sequence length bound")
    return path, recipe


def predict(recipe_path, gpus: int, gpu_type: str, fit: dict | None = None, *, rows: int | None = None,
            mfu: float = MFU, bandwidth_fraction: float = BANDWIDTH_FRACTION,
            results_dir: str | Path = "results/bench") -> dict:  # fmt: skip
    """Hours a run of the recipe would take on ``gpus`` GPUs of ``gpu_type`` (hardware.yaml, or ``this``), with
    the seconds of each part of a step and every assumption. ``rows`` overrides the data set's size."""
    from sapo.train.config import accumulation_steps

    path, recipe = _read_recipe(recipe_path)
    if gpu_type in THIS and gpus != 1:
        raise RecipeError("--gpu-type this: the sweep measured one process on this machine; use --gpus 1")
    if gpu_type in THIS:
        speeds = this_machine_speeds(fit, results_dir)
    else:
        speeds = gpu_speeds(gpu_type, mfu, bandwidth_fraction)
    model_label, model = recipe_model(recipe, path, speeds.weight_bytes)
    method, length = recipe["method"], recipe["max_length"]
    per_device = _field(recipe, "per_device_train_batch_size")
    global_batch = recipe.get("global_batch_size") or per_device * gpus * recipe.get("gradient_accumulation_steps", 1)
    try:
        accum = accumulation_steps(global_batch, per_device, gpus)
    except ValueError as err:
        raise RecipeError(f"{path}: {err}") from err
    stage, launch = zero_stage(path)
    params = sum(p.numel() for p in model.parameters())
    gather = params * speeds.weight_bytes * (gpus - 1) / gpus if stage == 3 and speeds.gather_bytes_per_s else 0.0
    parts = step_parts(recipe, model, speeds, per_device, length, gather)
    step_seconds = accum * sum(p["seconds"] for p in parts)
    needs_rows = method == "spin" or not (recipe.get("max_steps") or 0) > 0
    n_rows, rows_note = training_rows(recipe, path, rows) if needs_rows else (None, None)
    if (recipe.get("max_steps") or 0) > 0:
        steps, steps_note = recipe["max_steps"], f"steps: max_steps {recipe['max_steps']}"
    else:
        epochs = _field(recipe, "num_train_epochs")
        steps = math.ceil(epochs * math.ceil(n_rows / global_batch))
        steps_note = f"steps: {epochs} epochs x ceil({n_rows} rows / global batch {global_batch}) = {steps}"
    iterations = _field(recipe, "spin_iterations") if method == "spin" else 1
    per_iteration = spin_generation(recipe, model, speeds, math.ceil(n_rows / gpus), length, gather) if method == "spin" else []  # fmt: skip
    seconds = iterations * (steps * step_seconds + sum(p["seconds"] for p in per_iteration))
    notes = [f"model: {model_label}: {params / 1e9:.2f} B parameters, {speeds.weight_bytes * 8}-bit weights",
             f"sequence: every row {length} tokens (max_length): an upper bound, real rows are shorter",
             *([rows_note] if rows_note else []), steps_note,
             f"global batch {global_batch} = {per_device} per device x {accum} accumulation x {gpus} device(s)", launch,
             *speeds.notes, *_method_notes(recipe, iterations)]  # fmt: skip
    return {"recipe": str(path), "method": method, "gpus": gpus, "gpu_type": gpu_type, "device": speeds.name,
            "hours": seconds / 3600, "seconds": seconds, "steps": steps, "iterations": iterations,
            "accumulation": accum, "step_seconds": step_seconds, "step_parts": parts,
            "iteration_parts": per_iteration, "rows": n_rows, "parameters": params, "assumptions": notes}  # fmt: skip


def _method_notes(recipe: dict, iterations: int) -> list[str]:
    method = recipe["method"]
    notes = {"sapo": "SAPO: one generation call per micro-step (the EMA model writes each example's segment); the "
                     "segment never ends early at EOS (the longest case)",
             "spin": f"SPIN: {iterations} iterations, each answering every prompt greedily (at most "
                     "spin_max_new_tokens each) before training",
             "sft": "SFT: one row per example; packing (if on) makes fewer, full rows: an upper bound again"}.get(
        method, f"{method.upper()}: no generation")  # fmt: skip
    extra = ", the EMA update and reference refresh (elementwise passes over each GPU's shard)" * (method == "sapo")
    return [notes, "activation checkpointing's recomputed forward is not counted: it is inside the MFU (the "
            "convention of PaLM's appendix B)" if recipe.get("activation_checkpointing") else "no activation "
            "checkpointing", f"not counted: model, data and checkpoint loading and saving, evaluation{extra}"]  # fmt: skip


def render(found: dict) -> str:
    """The estimate as text: the total, each part of a step, then the assumptions."""
    hours = found["hours"]
    iterations = f"{found['iterations']} iterations x " if found["iterations"] > 1 else ""
    lines = [f"{found['recipe']} ({found['method']}) on {found['gpus']} x {found['device']}: about "
             f"{hours:.1f} hours" + (f" ({hours * 60:.0f} min)" if hours < 2 else ""),
             f"  {iterations}{found['steps']} optimizer steps of {found['step_seconds']:.1f} s",
             f"  per optimizer step, each device: {found['accumulation']} micro-step(s) of"]  # fmt: skip
    width = max(len(p["part"]) for p in found["step_parts"] + found["iteration_parts"])
    lines += [f"    {p['part']:<{width}}  {p['seconds']:9.2f} s  {p['what']}" for p in found["step_parts"]]
    if found["iteration_parts"]:
        lines.append("  per iteration, each device, before training:")
        lines += [f"    {p['part']:<{width}}  {p['seconds']:9.1f} s  {p['what']}" for p in found["iteration_parts"]]
    lines.append("  assumptions:")
    lines += [f"    - {note}" for note in found["assumptions"]]
    return "\n".join(lines)


def predict_main(recipe, gpus: int, gpu_type: str, rows: int | None = None, mfu: float = MFU,
                 bandwidth_fraction: float = BANDWIDTH_FRACTION, fit: dict | None = None,
                 results_dir: str | Path = "results/bench") -> str:  # fmt: skip
    """What ``sapo bench --predict`` prints."""
    return render(predict(recipe, gpus, gpu_type, fit, rows=rows, mfu=mfu, bandwidth_fraction=bandwidth_fraction,
                          results_dir=results_dir))  # fmt: skip
