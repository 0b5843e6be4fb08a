"""Figure 2: each benchmark against the number of training epochs, ours as a curve, the paper's points where known.

The figure reads the same ``Table`` as the renderers (``render.build_table`` over the figure's
spec): a spec row is a point on the x axis (its ``x``), a spec column is one panel. Paper points
are drawn only where the paper data has a value (none today: the figure could not be read), as
open markers when not verified. Uses a bare ``matplotlib.figure.Figure`` (Agg for PNG): no pyplot
state, nothing to close, safe on a machine without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from sapo.reproduce.paper_numbers import PaperNumbers, load_paper_numbers
from sapo.reproduce.render import Table, build_table, normalise_runs, table_title
from sapo.reproduce.table_specs import load_spec


@dataclass(frozen=True)
class RenderedFigure:
    figure: Figure
    paths: dict  # "png" | "pdf" -> Path


def draw_figure(table: Table) -> Figure:
    """One panel per column: our curve over the rows' x, and the paper's known points."""
    spec, scale = table.spec, table.scale.name
    rows = sorted(table.rows, key=lambda r: r.row.x)
    xs = [r.row.x for r in rows]
    figure = Figure(figsize=(3.2 * len(spec.columns), 3.4), layout="constrained")
    for ax, column in zip(figure.subplots(1, len(spec.columns), squeeze=False)[0], spec.columns, strict=True):
        cells = [r.cells[column.key] for r in rows]
        ours = [cell.ours for cell in cells]
        # A fallback metric (e.g. LC-minimal for LC) is named in the legend: it is not the paper's metric.
        fallbacks = sorted({cell.fallback.path.rsplit(".", 1)[-1] for cell in cells if cell.fallback})
        label = ", ".join([f"ours ({scale})", *fallbacks])
        ax.plot(xs, [math.nan if v is None else v for v in ours], marker="o", label=label)
        if all(v is None for v in ours):
            ax.text(0.5, 0.5, "no measured points", transform=ax.transAxes, ha="center", color="grey")
        papers = [cell.paper for cell in cells]
        known = [(x, p) for x, p in zip(xs, papers, strict=True) if p is not None and p.value is not None]
        if known:
            verified = all(cell.verified for _, cell in known)
            ax.plot([x for x, _ in known], [cell.value for _, cell in known], marker="s", linestyle="--",
                    markerfacecolor=None if verified else "none",
                    label="paper" if verified else "paper (unverified)")  # fmt: skip
        ax.set_title(column.label)
        ax.set_xticks(xs)
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    title = table_title(table) + (f"\n{table.scale.warning}" if table.scale.warning else "")
    figure.suptitle(title, fontsize="medium")
    figure.supxlabel(spec.x_label.get(scale, spec.row_header), fontsize="medium")
    return figure


def plot_figure(scale: str, runs: Mapping, out_dir: Path | str, *, name: str = "figure2",
                paper: PaperNumbers | None = None) -> RenderedFigure:  # fmt: skip
    """Write ``<name>.png`` and ``<name>.pdf`` into ``out_dir``. ``runs`` as for ``render.render_table``."""
    spec = load_spec(name).at_scale(scale)
    if spec.kind != "figure":
        raise ValueError(f"{name} is a {spec.kind} spec, not a figure")
    table = build_table(spec, scale, paper or load_paper_numbers(), normalise_runs(spec, scale, runs))
    figure = draw_figure(table)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "pdf": out_dir / f"{name}.pdf"}
    figure.savefig(paths["png"], dpi=150)
    figure.savefig(paths["pdf"], metadata={"CreationDate": None})  # a rerun on the same numbers gives the same file
    return RenderedFigure(figure, paths)
