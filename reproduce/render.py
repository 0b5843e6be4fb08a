"""Tables from stored results: the paper's number beside ours, as Markdown, LaTeX (booktabs) and CSV.

``build_table`` is pure: a spec, the paper's numbers and loaded ``results.json`` bodies (see
``sapo.evaluate.results``) in, a ``Table`` of cells out. Each format is a function of that
``Table``; ``render_table`` loads, builds and writes all three. Per metric the columns are
paper / ours / difference (ours minus paper, only where both exist and the scale is comparable).
Ours is printed ``value ± h``, h the half-width of its 95% interval as ``sapo eval`` stored it
(``benchmarks.<suite>.uncertainty.<metric>``); the method of each suite's intervals is listed
under the table.

Marks: † on a paper number not verified against the paper (the note names its sources);
‡, § on ours when it came from a fallback metric (see ``tables/columns.yaml``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sapo.evaluate.results import SCHEMA, results_path
from sapo.evaluate.uncertainty import half_width
from sapo.reproduce.measured import measured_interval, measured_lines, measured_value
from sapo.reproduce.paper_numbers import PaperCell, PaperNumbers, load_paper_numbers
from sapo.reproduce.table_specs import MODEL_LABELS, SCALES, Column, Fallback, Row, Scale, TableSpec, load_spec

NA = "n/a"
DAGGER = "†"
FALLBACK_MARKS = ("‡", "§")


@dataclass(frozen=True)
class Cell:
    paper: PaperCell | None  # None: the paper data has no entry for this cell
    ours: float | None  # in the paper's unit (column.scale applied)
    fallback: Fallback | None  # set when ours came from a fallback path
    difference: float | None
    interval: dict | None = None  # ours' uncertainty entry, ci95 and stderr in the paper's unit
    judge_failed: str | None = None  # set: the judge failed calibration, and this replaces ours
    marks: tuple[str, ...] = ()  # significant differences from baseline rows: "▲SFT", "▼DPO" (baselines.py)


@dataclass(frozen=True)
class TableRow:
    model: str
    paper_model: str  # whose published numbers sit beside this row
    row: Row
    cells: dict  # column key -> Cell
    results: dict | None  # the run's results.json, None when there is none


@dataclass(frozen=True)
class Table:
    spec: TableSpec
    scale: Scale
    rows: tuple[TableRow, ...]
    paper: PaperNumbers
    not_compared: tuple[str, ...] = ()  # baseline comparisons refused, with the reason
    tests: int = 0  # paired tests behind the marks (one Holm family)


@dataclass(frozen=True)
class Rendered:
    markdown: str
    paths: dict  # "md" | "tex" | "csv" -> Path


# --------------------------------------------------------------------------- measured values


def load_results(source: Path | str | Mapping) -> dict:
    """A results.json body, from a dict, a results.json path, or the folder holding one."""
    if isinstance(source, Mapping):
        body, where = dict(source), "a results dict"
    else:
        path = results_path(source)
        body, where = json.loads(path.read_text()), str(path)
    if body.get("schema") != SCHEMA:
        raise ValueError(f"{where}: schema {body.get('schema')!r}, expected {SCHEMA!r}")
    return body


def judge_failed(results: dict | None, column: Column) -> str | None:
    """ "judge failed calibration (x% on n)" when the column's judge did not pass (``evaluate/calibration.py``)."""
    from sapo.evaluate.calibration import failed_text

    if not column.judged:
        return None
    entry = (results or {}).get("benchmarks", {}).get(column.suite) or {}
    calibration = entry.get("calibration")
    return failed_text(calibration) if calibration and not calibration["passed"] else None


def _full_keys(spec: TableSpec, scale: str, runs: Mapping) -> dict:
    """``runs`` keyed ``"<model>/<row>"`` (``RunPlan.key``), or by row alone when the scale has one model."""
    models = spec.models_at(scale)
    known = {f"{m}/{r.key}" for m in models for r in spec.rows}
    out = {}
    for key, source in runs.items():
        full = key if "/" in key or len(models) > 1 else f"{models[0]}/{key}"
        if full not in known:
            raise ValueError(f"{spec.name} at {scale}: no row {key!r}; expected one of {sorted(known)}")
        out[full] = source
    return out


def _folder(source) -> Path | None:
    """The folder of a results.json given as a path (None for a loaded dict)."""
    return None if isinstance(source, Mapping) else results_path(source).parent


def normalise_runs(spec: TableSpec, scale: str, runs: Mapping) -> dict[str, dict]:
    """Each run's results body, keyed ``"<model>/<row>"`` (see ``_full_keys``)."""
    return {key: load_results(source) for key, source in _full_keys(spec, scale, runs).items()}


def build_table(spec: TableSpec, scale: str, paper: PaperNumbers, measured: Mapping[str, dict],
                baselines: tuple[dict, list[str], int] = ({}, [], 0)) -> Table:  # fmt: skip
    """Pure: one TableRow per (model, row) of the scale, ``measured`` keyed ``"<model>/<row>"``; ``baselines``:
    what ``baselines.baseline_marks`` computed from the same results."""
    marks, not_compared, tests = baselines
    spec = spec.at_scale(scale)
    rows = []
    for model in spec.models_at(scale):
        paper_model = spec.paper_model_for(model)
        for row in spec.rows:
            results = measured.get(f"{model}/{row.key}")
            cells = {}
            for column in spec.columns:
                entry = paper.get(spec.name, paper_model, row.key, column.key)
                ours, fallback = measured_value(results, column)
                reference = entry.value if entry is not None else None
                comparable = SCALES[scale].comparable and (fallback is None or fallback.comparable)
                both = ours is not None and reference is not None
                interval = (
                    measured_interval(results, (fallback or column).path, column.scale) if ours is not None else None
                )
                failed = judge_failed(results, column)
                if failed:
                    ours, fallback, interval, both = None, None, None, False
                cells[column.key] = Cell(entry, ours, fallback, ours - reference if both and comparable else None,
                                         interval, failed, tuple(marks.get((model, row.key, column.key), ())))  # fmt: skip
            rows.append(TableRow(model, paper_model, row, cells, results))
    return Table(spec, SCALES[scale], tuple(rows), paper, tuple(not_compared), tests)


# --------------------------------------------------------------------------- shared text


def _number(value: float, decimals: int, signed: bool = False) -> str:
    if round(value, decimals) == 0:
        value = 0.0  # no "-0.00"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _fallback_marks(table: Table) -> dict:
    """Fallback -> its mark, in order of first use."""
    used = [c.fallback for r in table.rows for c in r.cells.values() if c.fallback is not None and c.fallback.note]
    return {fb: FALLBACK_MARKS[i] for i, fb in enumerate(dict.fromkeys(used))}


def cell_texts(table: Table, row: TableRow, column: Column) -> tuple[str, str, str]:
    """(paper, ours, difference) as shown; missing values are "n/a", a missing difference is empty."""
    cell = row.cells[column.key]
    paper = NA
    if cell.paper is not None and cell.paper.value is not None:
        paper = _number(cell.paper.value, column.decimals) + ("" if cell.paper.verified else DAGGER)
    ours = cell.judge_failed or (NA if cell.ours is None else _number(cell.ours, column.decimals))
    if cell.interval is not None and cell.interval["ci95"] is not None:
        ours += " ± " + _number(half_width(cell.interval["ci95"]), column.decimals)
    if cell.ours is not None and cell.fallback in _fallback_marks(table):
        ours += _fallback_marks(table)[cell.fallback]
    if cell.ours is not None and cell.marks:
        ours += " " + " ".join(cell.marks)
    diff = "" if cell.difference is None else _number(cell.difference, column.decimals, signed=True)
    return paper, ours, diff


def header_lines(table: Table, strong=lambda text: text) -> list[str]:
    """The scale, whose paper numbers stand beside ours, and the scale's warning (``strong`` marks it up)."""
    scale = table.scale
    lines = [f"Scale: {scale.name}: {scale.description}."]
    beside = sorted({r.paper_model for r in table.rows if r.paper_model != r.model})
    if beside:
        lines.append("Paper columns: the published numbers of " + ", ".join(MODEL_LABELS[m] for m in beside) + ".")
    if scale.warning:
        lines.append(strong(scale.warning))
    return lines


def note_lines(table: Table) -> list[str]:
    """Footnotes: unverified paper numbers, fallback metrics, column notes, the spec's notes and assumptions."""
    unverified = [c.paper for r in table.rows for c in r.cells.values()
                  if c.paper is not None and c.paper.value is not None and not c.paper.verified]  # fmt: skip
    lines = []
    if unverified:
        ids = sorted({s for cell in unverified for s in cell.source_ids})
        named = ", ".join(f"{s} ({table.paper.sources[s]['short']})" for s in ids)
        lines.append(f"{DAGGER} Not verified against the paper: quoted by {named}. Each cell's source and note: "
                     f"results/paper/{table.spec.name}.json.")  # fmt: skip
    lines += [f"{mark} {fb.note.strip()}" for fb, mark in _fallback_marks(table).items()]
    lines += [c.note.strip() for c in table.spec.columns if c.note]
    lines += list(table.spec.notes)
    lines += [f"Assumption: {a}" for a in table.spec.assumptions]
    if table.spec.baselines:
        label = {row.key: row.label for row in table.spec.rows}
        pairs = "; ".join(f"{label[r]} vs {', '.join(label[x] for x in ([b] if isinstance(b, str) else b))}"
                          for r, b in table.spec.baselines.items())  # fmt: skip
        tests = {0: "no paired tests", 1: "1 paired test"}.get(table.tests, f"{table.tests} paired tests")
        lines.append(f"▲X / ▼X: significantly above / below row X on the same items (paired permutation test; {pairs}), "
                     f"after Holm's correction over the table's {tests}: the chance of any false mark is at most 5%. No mark: no "
                     "difference detectable, or not compared." + (" Not compared: " + "; ".join(
                         table.not_compared) + "." if table.not_compared else ""))  # fmt: skip
    return lines


def table_title(table: Table) -> str:
    kind = "Figure" if table.spec.kind == "figure" else "Table"
    number = table.spec.name.removeprefix("table").removeprefix("figure")
    return f"{kind} {number}, {table.scale.name} scale: {table.spec.title}"


def _metric_headers(table: Table) -> tuple[str, ...]:
    return ("paper", "ours", "Δ") if table.scale.comparable else ("paper", "ours")


# --------------------------------------------------------------------------- formats


def to_markdown(table: Table) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    parts = _metric_headers(table)
    header = ["Model", table.spec.row_header] + [f"{c.label} {p}" for c in table.spec.columns for p in parts]
    align = [":--", ":--"] + ["--:"] * (len(header) - 2)
    lines = [f"## {table_title(table)}", "", table.spec.caption, ""]
    lines += [*header_lines(table, strong=lambda text: f"**{text}**"), ""]
    lines += ["| " + " | ".join(escape(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    for row in table.rows:
        values = [v for c in table.spec.columns for v in cell_texts(table, row, c)[: len(parts)]]
        lines.append("| " + " | ".join(escape(v) for v in [MODEL_LABELS[row.model], row.row.label, *values]) + " |")
    lines += ["", "Notes:", *(f"- {n}" for n in note_lines(table))]
    lines += ["", "Measured:", *(f"- {m}" for m in measured_lines(table))]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip
_LATEX_SYMBOLS = {DAGGER: r"$^{\dagger}$", "‡": r"$^{\ddagger}$", "§": r"$^{\S}$", "Δ": r"$\Delta$",
                  "▲": r"$\uparrow$", "▼": r"$\downarrow$", "±": r"$\pm$"}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, _LATEX_SYMBOLS.get(ch, ch)) for ch in text)


def to_latex(table: Table) -> str:
    parts = _metric_headers(table)
    width = len(parts)
    columns = table.spec.columns
    caption = f"{table.spec.title}, {table.scale.name} scale. {table.spec.caption}"  # LaTeX adds "Table N:" itself
    lines = [
        f"% {table_title(table)}. Written by sapo.reproduce.render; needs \\usepackage{{booktabs}}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{tab:{table.spec.name}-{table.scale.name}}}",
        rf"\begin{{tabular}}{{ll{'r' * width * len(columns)}}}",
        r"\toprule",
        " & & " + " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(c.label)}}}" for c in columns) + r" \\",
        " ".join(rf"\cmidrule(lr){{{3 + i * width}-{2 + (i + 1) * width}}}" for i in range(len(columns))),
        "Model & " + latex_escape(table.spec.row_header) + " & "
        + " & ".join(latex_escape(p) for _ in columns for p in parts) + r" \\",
        r"\midrule",
    ]  # fmt: skip
    for index, row in enumerate(table.rows):
        if index and row.model != table.rows[index - 1].model:
            lines.append(r"\midrule")
        values = [v for c in columns for v in cell_texts(table, row, c)[:width]]
        lines.append(" & ".join(latex_escape(v) for v in [MODEL_LABELS[row.model], row.row.label, *values]) + r" \\")
    notes = [latex_escape(n) for n in [*header_lines(table), *note_lines(table), *measured_lines(table)]]
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip", r"{\footnotesize", " \\\\\n".join(notes)]
    lines += [r"\par}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "scale", "model", "paper_model", "row", "row_label", "column", "column_label", "paper",
              "paper_verified", "paper_source", "ours", "ours_metric", "difference", "ours_stderr", "ours_ci95_low",
              "ours_ci95_high", "ours_interval_method")  # fmt: skip


def to_csv(table: Table) -> str:
    """One line per (model, row, column); numbers as shown, without marks; empty where missing."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in table.rows:
        for column in table.spec.columns:
            cell = row.cells[column.key]
            known = cell.paper is not None and cell.paper.value is not None
            ours_metric = "" if cell.ours is None else (cell.fallback or column).path
            interval = cell.interval or {}
            ci95 = interval.get("ci95") or ("", "")
            stderr = interval.get("stderr")
            writer.writerow([
                table.spec.name, table.scale.name, row.model, row.paper_model, row.row.key, row.row.label,
                column.key, column.label,
                _number(cell.paper.value, column.decimals) if known else "",
                str(cell.paper.verified).lower() if known else "",
                cell.paper.source if known else "",
                "" if cell.ours is None else _number(cell.ours, column.decimals),
                ours_metric,
                "" if cell.difference is None else _number(cell.difference, column.decimals, signed=True),
                "" if stderr is None else f"{stderr:.6g}",
                *(f"{v:.6g}" if v != "" else "" for v in ci95),
                interval.get("method", ""),
            ])  # fmt: skip
    return out.getvalue()


FORMATS = {"md": to_markdown, "tex": to_latex, "csv": to_csv}


def render_table(name: str, scale: str, runs: Mapping, out_dir: Path | str, *,
                 paper: PaperNumbers | None = None, tables_dir: Path | None = None) -> Rendered:  # fmt: skip
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` into ``out_dir``; return the Markdown and the paths.

    ``runs``: ``"<model>/<row>"`` (``RunPlan.key``; the row alone when the scale has one model) -> a results.json
    path, the folder holding it, or its loaded dict. Rows without a run render as "n/a".
    """
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    from sapo.reproduce.baselines import baseline_marks

    spec = (load_spec(name, tables_dir) if tables_dir else load_spec(name)).at_scale(scale)
    measured = normalise_runs(spec, scale, runs)
    folders = {key: _folder(source) for key, source in _full_keys(spec, scale, runs).items()}
    table = build_table(spec, scale, paper or load_paper_numbers(), measured,
                        baseline_marks(spec, scale, measured, folders))  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for suffix, render in FORMATS.items():
        paths[suffix] = out_dir / f"{name}.{suffix}"
        paths[suffix].write_text(render(table), encoding="utf-8")
    return Rendered(markdown=paths["md"].read_text(encoding="utf-8"), paths=paths)
