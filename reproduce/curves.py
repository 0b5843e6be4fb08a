"""``sapo plot RUN [RUN ...]``: a training run's logged curves as one PNG, several runs overlaid.

Reads what every trainer writes beside its weights: ``trainer_state.json``'s ``log_history`` (one dict
per ``logging_steps``), the same numbers the progress bar printed. SPIN's iterations are separate
trainings (``iteration-N/trainer_state.json``); they are joined in order, steps counted on. One panel
per curve that at least one run logged (loss, reward margin and accuracy, buffer size and sample age,
segment length and share ending early, generation tokens/s); a curve a run lacks (DPO has no buffer) is
simply absent from its panel. ``sapo reproduce`` writes one beside each table: ``<table>_curves.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from sapo.errors import SapoError
from sapo.files import safe_name

# (logged key, panel title): the order of the panels.
CURVES = (
    ("loss", "training loss"),
    ("rewards/margins", "reward margin (chosen - rejected)"),
    ("rewards/accuracies", "reward accuracy"),
    ("sapo/buffer_size", "replay buffer size"),
    ("sapo/sample_age", "age of sampled pairs (steps)"),
    ("sapo/segment_len", "generated segment length (tokens)"),
    ("sapo/ended_early", "share of segments ending early"),
    ("sapo/gen_tokens_per_s", "generation tokens/s"),
)


def state_files(run: Path) -> list[Path]:
    """A run's trainer_state.json files: its own, or SPIN's iterations' in order; [] when it has none."""
    if (run / "trainer_state.json").is_file():
        return [run / "trainer_state.json"]
    return sorted(run.glob("iteration-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))


def _states(run: Path) -> list[Path]:
    files = state_files(run)
    if not files:
        raise SapoError(f"{run}: no trainer_state.json (is it a finished `sapo train` output folder?)")
    return files


def read_curves(run: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{logged key: [(step, value), ...]}`` of one run, SPIN's iterations joined with their steps counted on."""
    curves: dict[str, list[tuple[int, float]]] = {}
    offset = 0
    for path in _states(Path(run)):
        state = json.loads(path.read_text())
        for entry in state.get("log_history", []):
            for key, _ in CURVES:
                if isinstance(entry.get(key), int | float):
                    curves.setdefault(key, []).append((offset + int(entry["step"]), float(entry[key])))
        offset += int(state.get("global_step", 0))
    return curves


def draw_curves(runs: dict[str, dict[str, list[tuple[int, float]]]], title: str = "") -> Figure:
    """One panel per curve any run logged; each run one line, labelled with its name."""
    keys = [(key, label) for key, label in CURVES if any(key in c for c in runs.values())]
    if not keys:
        raise SapoError("no logged curves in " + ", ".join(runs))
    columns = min(4, len(keys))
    rows = -(-len(keys) // columns)
    figure = Figure(figsize=(3.3 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (key, label) in zip(axes, keys, strict=False):
        for name, curves in runs.items():
            if key in curves:
                steps, values = zip(*curves[key], strict=True)
                ax.plot(steps, values, marker=".", label=name)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("step", fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="x-small")
    if title:
        figure.suptitle(title, fontsize="medium")
    return figure


def plot_runs(runs: dict[str, str | Path], output: str | Path, title: str = "") -> Path:
    """Draw ``{name: run folder}`` into the PNG ``output``; return its path."""
    figure = draw_curves({name: read_curves(folder) for name, folder in runs.items()}, title)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    return output


def add_plot_command(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw training runs' logged curves (loss, reward margin, buffer, segments) as a PNG",
        description="Read each RUN folder's trainer_state.json (SPIN: its iterations, joined) and draw one panel "
        "per logged curve: loss, reward margin and accuracy, replay-buffer size and sample age, segment length, "
        "the share of segments ending early, generation tokens/s; several runs are overlaid, each named by its "
        "folder. sapo reproduce writes one beside each table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="sapo train output folders")
    p.add_argument("--output", help="PNG path (default: curves-<first run's name>.png here)")
    p.add_argument("--title", default="", help="a title over the panels")
    p.set_defaults(func=_plot_command)


def _plot_command(args) -> int:
    names = {str(run).rstrip("/"): run for run in args.runs}
    output = args.output or f"curves-{safe_name(Path(args.runs[0]).name)}.png"
    print(plot_runs(names, output, args.title))
    return 0
