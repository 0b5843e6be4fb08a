"""How a step's cost grows: time per optimizer step as each size grows alone, and a cost model fitted to it.

Four axes, each varied from one base shape with the others held: sequence length (prompt + answer), batch
size, segment length (``segment_max_new_tokens``) and buffer size. SAPO runs its full step (generation
included); DPO runs where it has the axis (sequence length and batch: it has no segment and no buffer). Each
point is one warm-up step and the best of ``rounds`` timed steps (``measure.take_turns``); a shape shared by
several axes (the base) is measured once.

``memory_sweep`` measures the same points for peak memory (``sapo bench --only growth_memory``, on request:
a child process per point), fitted per kind as a fixed part plus a part per trained token.

The cost model, fitted by least squares to the points:

    step_seconds = t0 + counted_training_FLOPs / flops_per_s + decode_steps * decode_bytes / bytes_per_s

with FLOPs and bytes from the closed forms of ``step.py`` (DPO has no decode term). Its three constants say
what this machine does per step (fixed overhead), per FLOP and per byte a decoding step reads; ``predict.py``
scales a paper recipe with them (``--gpu-type this``). The fit's relative error per point says where the
model stops explaining the measurements.
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, replace
from functools import partial
from itertools import product
from pathlib import Path

import numpy as np

from sapo.bench.measure import best, device, spread, take_turns
from sapo.bench.step import StepBench, StepShape, decode_bytes, forward_flops, training_flops
from sapo.log import get_logger

logger = get_logger(__name__)

# Small shapes on purpose: the sweep's share of `nox -s bench` on 2 CPU cores is a few minutes (84 s idle), and
# there a step of the embedded 135M model at 48 tokens takes 1.5-3.5 s, a decoding step ~80 ms (every fp32 weight).
# Every answer holds the largest segment and the 3 real tokens after it (the reference's rule); prompt:answer
# stays 1:3 along the sequence axis.
BASE = StepShape(batch=1, prompt_tokens=12, answer_tokens=36, segment=8, buffer_size=4)
GRID = {"sequence": (24, 48, 96), "batch": (1, 2, 3), "segment": (4, 8, 16), "buffer": (2, 4, 8)}
# Test and --quick sizes: two points per axis, the base among them.
QUICK_BASE = StepShape(batch=1, prompt_tokens=8, answer_tokens=24, segment=8, buffer_size=2)
QUICK_GRID = {"sequence": (32, 48), "batch": (1, 2), "segment": (4, 8), "buffer": (2, 4)}
DPO_AXES = ("sequence", "batch")  # DPO has no segment and no buffer
AXIS_LABELS = {"sequence": "sequence length (prompt + answer tokens)", "batch": "batch (examples per step)",
               "segment": "segment length (new tokens per step)", "buffer": "replay buffer size (pairs)"}  # fmt: skip


def shape_at(base: StepShape, axis: str, value: int) -> StepShape:
    """``base`` with one axis set to ``value``; the sequence axis keeps the base's prompt:answer ratio."""
    if axis == "sequence":
        prompt = round(value * base.prompt_tokens / base.max_length)
        shape = replace(base, prompt_tokens=prompt, answer_tokens=value - prompt)
    else:
        field = {"batch": "batch", "segment": "segment", "buffer": "buffer_size"}[axis]
        shape = replace(base, **{field: value})
    if shape.answer_tokens < shape.segment + 3:
        raise ValueError(f"{axis}={value}: answer of {shape.answer_tokens} tokens cannot hold a {shape.segment}-token "
                         "segment and the 3 real tokens after it")  # fmt: skip
    return shape


def plan(base: StepShape = BASE, grid: dict[str, tuple[int, ...]] = GRID) -> list[tuple[str, int, StepShape]]:
    """The sweep's points: (axis, value, shape) for every value of every axis."""
    return [(axis, value, shape_at(base, axis, value)) for axis, values in grid.items() for value in values]


def step_features(config, model, shape: StepShape, kind: str) -> dict:
    """What a step of ``kind`` on ``shape`` counts: training FLOPs (SAPO adds the generation's prefill) and its
    decoding (steps, and bytes each reads). Lengths are the bench's means: the segment starts uniformly over
    0..answer-3-segment (``segment_bounds``) and never ends early, so chosen and rejected rows are max_length."""
    flops = training_flops(config, shape.batch, shape.max_length, reference=shape.sapo_loss == "dpo" or kind == "dpo")
    if kind == "dpo":
        return {"flops": flops, "decode_steps": 0, "bytes_per_decode_step": 0}
    prefill = shape.prompt_tokens + max(0, shape.answer_tokens - 3 - shape.segment) / 2
    flops += forward_flops(config, shape.batch, round(prefill))
    per_step = decode_bytes(model, shape.batch, round(prefill + shape.segment / 2))
    # The first of the segment's forwards is the prefill (counted above); each later one decodes a token.
    return {"flops": flops, "decode_steps": shape.segment - 1, "bytes_per_decode_step": per_step}


def _measure_shape(model_path: str, shape: StepShape, kinds: tuple[str, ...], rounds: int) -> dict[str, dict]:
    bench = StepBench(model_path, shape, kinds=kinds)
    times = take_turns({kind: partial(bench.step, kind) for kind in kinds}, rounds)  # one warm-up step first
    model = bench.model
    found = {kind: {"seconds": best(times[kind]), "times": times[kind], "spread": spread(times[kind]),
                    **step_features(model.config, model, shape, kind)} for kind in kinds}  # fmt: skip
    del bench, model
    gc.collect()
    return found


def _unique_shapes(points, kinds) -> dict[StepShape, list[str]]:
    """Each distinct shape of ``points`` and the kinds it runs (DPO only on the axes it has): a shape on several
    axes (the base) is measured once."""
    shapes: dict[StepShape, list[str]] = {}
    for axis, _, shape in points:
        wanted = shapes.setdefault(shape, [])
        wanted += [k for k in kinds if (k != "dpo" or axis in DPO_AXES) and k not in wanted]
    return shapes


def _per_point(points, kinds, measured: dict[StepShape, dict[str, dict]]) -> list[dict]:
    """The measurements laid out per (axis, value, kind) of ``points``."""
    found = []
    for (axis, value, shape), kind in product(points, kinds):
        if kind in measured[shape] and (kind != "dpo" or axis in DPO_AXES):
            found.append({"axis": axis, "value": value, "kind": kind, "shape": asdict(shape), "device": device(),
                          **measured[shape][kind]})  # fmt: skip
    return found


def sweep(model_path: str, points=None, kinds=("sapo", "dpo"), rounds: int = 1) -> list[dict]:
    """Time per optimizer step at every point of ``points`` (``plan()``'s by default) for each of ``kinds``
    (DPO only on the axes it has). One process, one shape at a time."""
    points = plan() if points is None else points
    measured: dict[StepShape, dict[str, dict]] = {}
    for i, (shape, kinds_here) in enumerate(_unique_shapes(points, kinds).items()):
        logger.info(f"growth: shape {i + 1} {shape} ({', '.join(kinds_here)})")
        measured[shape] = _measure_shape(model_path, shape, tuple(kinds_here), rounds)
    return _per_point(points, kinds, measured)


def memory_sweep(model_path: str, points=None, kinds=("sapo", "dpo")) -> list[dict]:
    """Peak memory of two optimizer steps at every point (``memory.measure``: a child process per shape and
    kind, its peak above its own baseline), with the tokens a step trains on (batch x prompt + answer)."""
    from sapo.bench.memory import measure

    points = plan() if points is None else points
    measured: dict[StepShape, dict[str, dict]] = {}
    for i, (shape, kinds_here) in enumerate(_unique_shapes(points, kinds).items()):
        logger.info(f"growth (memory): shape {i + 1} {shape} ({', '.join(kinds_here)})")
        measured[shape] = {kind: {"peak_bytes": measure(kind, model_path, shape),
                                  "tokens": shape.batch * shape.max_length} for kind in kinds_here}  # fmt: skip
    return _per_point(points, kinds, measured)


def _solve_nonnegative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: the best of the unconstrained solutions over each subset of
    columns (exact for the 3 columns here). A negative cost per FLOP or per byte would be noise, not a fit."""
    cols = a.shape[1]
    best_x, best_residual = np.zeros(cols), float(np.sum(b**2))
    for mask in product((True, False), repeat=cols):
        keep = np.flatnonzero(mask)
        if keep.size == 0:
            continue
        x_keep = np.linalg.lstsq(a[:, keep], b, rcond=None)[0]
        if np.any(x_keep < 0):
            continue
        x = np.zeros(cols)
        x[keep] = x_keep
        residual = float(np.sum((a @ x - b) ** 2))
        if residual < best_residual * (1 - 1e-12):
            best_x, best_residual = x, residual
    return best_x


def fit_cost_model(points: list[dict]) -> dict:
    """Fit ``seconds = t0 + flops / flops_per_s + decode_steps * bytes_per_decode_step / bytes_per_s`` to the
    points, minimizing the squared *relative* error (the points span a few-fold range of times: a plain fit
    would serve the slowest ones). Returns the constants (None where the points leave a term at zero cost),
    each point's prediction and relative error, and their root mean square."""
    if len(points) < 3:
        raise ValueError(f"fit_cost_model: needs at least 3 points for 3 constants, got {len(points)}")
    seconds = np.array([p["seconds"] for p in points], dtype=float)
    features = np.array([[1.0, p["flops"], p["decode_steps"] * p["bytes_per_decode_step"]] for p in points])
    # One row per measurement: the base shape sits on every axis but was measured once, and must weigh once.
    keys = [(p["kind"], p["flops"], p["decode_steps"], p["bytes_per_decode_step"], p["seconds"]) for p in points]
    once = [keys.index(k) for k in dict.fromkeys(keys)]
    scale = np.where(features.max(axis=0) > 0, features.max(axis=0), 1.0)  # columns of like size: a sound solve
    coef = _solve_nonnegative(features[once] / scale / seconds[once, None], np.ones(len(once))) / scale
    predicted = features @ coef
    relative = (predicted - seconds) / seconds
    return {"t0_s": float(coef[0]), "flops_per_s": 1 / coef[1] if coef[1] > 0 else None,
            "bytes_per_s": 1 / coef[2] if coef[2] > 0 else None, "predicted_s": predicted.tolist(),
            "relative_error": relative.tolist(), "rms_relative_error": float(np.sqrt(np.mean(relative**2))),
            "points": len(once)}  # fmt: skip


def fit_memory(points: list[dict]) -> dict[str, dict]:
    """Per kind, ``peak_bytes = fixed + per_token * tokens`` (tokens = batch x sequence length), both >= 0, fitted
    to the relative error as the time model is: what a step holds whatever its batch (weights, optimizer state)
    and what each trained token adds (activations, logits). Segment and buffer sizes do not enter: their points,
    at the base's tokens, show whether they should. A shape on several axes (the base) weighs once."""
    fits = {}
    for kind in dict.fromkeys(p["kind"] for p in points):
        mine = list({json.dumps(p["shape"], sort_keys=True): p for p in points if p["kind"] == kind}.values())
        tokens = np.array([p["tokens"] for p in mine], dtype=float)
        peak = np.array([p["peak_bytes"] for p in mine], dtype=float)
        if len(set(tokens.tolist())) < 2:
            raise ValueError(f"fit_memory: {kind} needs points of at least two token counts")
        features = np.stack([np.ones_like(tokens), tokens], axis=1)
        scale = features.max(axis=0)
        fixed, per_token = _solve_nonnegative(features / scale / peak[:, None], np.ones(len(mine))) / scale
        relative = (fixed + per_token * tokens - peak) / peak
        fits[kind] = {"fixed_bytes": float(fixed), "bytes_per_token": float(per_token), "points": len(mine),
                      "rms_relative_error": float(np.sqrt(np.mean(relative**2)))}  # fmt: skip
    return fits


def memory_fitted(points: list[dict], fits: dict[str, dict]) -> list[float]:
    """The fitted peak bytes at each point."""
    return [fits[p["kind"]]["fixed_bytes"] + fits[p["kind"]]["bytes_per_token"] * p["tokens"] for p in points]


def predict_seconds(fit: dict, flops: float, decode_bytes_total: float) -> float:
    """The fitted model's seconds for a step of ``flops`` counted FLOPs that reads ``decode_bytes_total`` bytes
    decoding (steps x bytes per step)."""
    seconds = fit["t0_s"] + (flops / fit["flops_per_s"] if fit["flops_per_s"] else 0.0)
    return seconds + (decode_bytes_total / fit["bytes_per_s"] if fit["bytes_per_s"] else 0.0)


def format_fit(fit: dict, points: list[dict]) -> str:
    """The constants, then one line per point: measured, predicted, relative error."""
    gflops = f"{fit['flops_per_s'] / 1e9:.1f} GFLOP/s" if fit["flops_per_s"] else "no FLOP term"
    gbytes = f"{fit['bytes_per_s'] / 1e9:.2f} GB/s" if fit["bytes_per_s"] else "no decode term"
    lines = [f"cost model: t0 {fit['t0_s']:.2f} s + FLOPs / {gflops} + decode bytes / {gbytes} "
             f"(rms relative error {fit['rms_relative_error']:.0%} over {fit['points']} points)"]  # fmt: skip
    for p, predicted, error in zip(points, fit["predicted_s"], fit["relative_error"], strict=True):
        lines.append(f"  {p['kind']:4} {p['axis']:8} {p['value']:>4}: {p['seconds']:7.2f} s measured, "
                     f"{predicted:7.2f} s fitted ({error:+.0%})")  # fmt: skip
    return "\n".join(lines)


def _plot_axes(points: list[dict], measured: list[float], fitted: list[float], ylabel: str, title: str,
               path: str | Path, from_zero: bool) -> Path:  # fmt: skip
    """One PNG, one panel per axis: each kind's ``measured`` values (markers) and ``fitted`` ones (dashed) at
    its points (both lists aligned with ``points``); ``from_zero``: the y axis starts at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(p["axis"] for p in points))
    fig, panels = plt.subplots(1, len(axes_names), figsize=(4 * len(axes_names), 3.6), squeeze=False)
    styles = {"sapo": ("tab:red", "o", "SAPO full step"), "dpo": ("tab:blue", "s", "TRL DPO step")}
    for panel, axis in zip(panels[0], axes_names, strict=True):
        for kind, (color, marker, label) in styles.items():
            mine = sorted((p["value"], measured[i], fitted[i]) for i, p in enumerate(points)
                          if p["axis"] == axis and p["kind"] == kind)  # fmt: skip
            if not mine:
                continue
            x, ours, model = zip(*mine, strict=True)
            panel.plot(x, ours, marker=marker, color=color, linestyle="none", label=f"{label}, measured")
            panel.plot(x, model, color=color, linestyle="--", label=f"{label}, fitted")
        panel.set_xticks(sorted({p["value"] for p in points if p["axis"] == axis}))
        panel.set_xlabel(AXIS_LABELS.get(axis, axis))
        if from_zero:
            panel.set_ylim(bottom=0)
        panel.grid(alpha=0.3)
    panels[0][0].set_ylabel(ylabel)
    panels[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_growth(points: list[dict], fit: dict, path: str | Path) -> Path:
    """Seconds per optimizer step for SAPO and DPO as each axis grows, measured and fitted (``fit_cost_model``)."""
    flops = f"{fit['flops_per_s'] / 1e9:.1f} GFLOP/s" if fit["flops_per_s"] else "-"
    gbytes = f"{fit['bytes_per_s'] / 1e9:.2f} GB/s" if fit["bytes_per_s"] else "-"
    title = (f"How a step's cost grows; fit: t0 {fit['t0_s']:.2f} s, {flops}, decoding {gbytes} "
             f"(rms error {fit['rms_relative_error']:.0%})")  # fmt: skip
    return _plot_axes(points, [p["seconds"] for p in points], fit["predicted_s"], "seconds per optimizer step",
                      title, path, from_zero=True)  # fmt: skip


def plot_memory(points: list[dict], fits: dict[str, dict], path: str | Path) -> Path:
    """Peak MiB of two optimizer steps for SAPO and DPO as each axis grows, measured and fitted (``fit_memory``)."""
    parts = "; ".join(f"{kind}: {f['fixed_bytes'] / 2**20:.0f} MiB + {f['bytes_per_token'] / 2**10:.0f} KiB/token "
                      f"(rms error {f['rms_relative_error']:.1%})" for kind, f in fits.items())  # fmt: skip
    return _plot_axes(
        points,
        [p["peak_bytes"] / 2**20 for p in points],
        [b / 2**20 for b in memory_fitted(points, fits)],
        "peak MiB (two optimizer steps)",
        f"Peak memory as each size grows; fit: fixed + per trained token ({parts})",
        path,
        from_zero=False,
    )  # fmt: skip  (from 0, a GB-sized fixed part hides the growth)


def growth_memory_group(ctx, output: str | Path | None = None) -> dict:
    """The ``growth_memory`` group (on request, ~3 min on 2 CPU cores): the growth sweep's points measured for
    peak memory instead of time, fitted per kind and plotted (``_extra``: ``growth_memory_points``,
    ``growth_memory_fit``, ``growth_memory_png``)."""
    from sapo.bench.measure import machine, machine_slug

    base, grid = (QUICK_BASE, QUICK_GRID) if ctx.quick else (BASE, GRID)
    if ctx.quick:  # the sequence axis only (2 shapes x 2 kinds: 4 child processes)
        grid = {"sequence": grid["sequence"]}
    points = memory_sweep(ctx.model_path, plan(base, grid))
    fits = fit_memory(points)
    for kind, fit in fits.items():
        logger.info(f"memory ({kind}): {fit['fixed_bytes'] / 2**20:.0f} MiB + {fit['bytes_per_token'] / 2**10:.0f} "
                    f"KiB per trained token (rms relative error {fit['rms_relative_error']:.1%})")  # fmt: skip
    extra = {"growth_memory_points": points, "growth_memory_fit": fits}
    if not ctx.quick:
        folder = Path(output or ctx.output)
        extra["growth_memory_png"] = plot_memory(points, fits, folder / f"memory-{machine_slug(machine())}.png").name
    return {"_extra": extra}


def growth_group(ctx, output: str | Path | None = None) -> dict:
    """The ``growth`` group of ``sapo bench``: no goal entries, only the sweep, its fit and its plot (in
    ``_extra``: ``growth_points``, ``growth_fit``, ``growth_png``, relative to the results folder). One timed
    turn per point (``ctx.rounds`` is not used): the sweep must stay near 5 minutes on 2 CPU cores."""
    from sapo.bench.measure import machine, machine_slug

    base, grid = (QUICK_BASE, QUICK_GRID) if ctx.quick else (BASE, GRID)
    points = sweep(ctx.model_path, plan(base, grid), rounds=1)
    fit = fit_cost_model(points)
    logger.info(format_fit(fit, points))
    extra = {"growth_points": points, "growth_fit": fit}
    if not ctx.quick:
        folder = Path(output or ctx.output)
        extra["growth_png"] = plot_growth(points, fit, folder / f"growth-{machine_slug(machine())}.png").name
    return {"_extra": extra}
