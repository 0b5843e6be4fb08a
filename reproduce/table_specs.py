"""The paper's tables and Figure 2 as data: a small registry over ``reproduce/tables/*.yaml``.

A spec says what a table holds (caption, rows, columns) and how each row is produced at each
scale: a recipe under ``recipes/`` plus config overrides, or a public model scored as is. Columns
are defined once, in ``tables/columns.yaml`` (where ``sapo eval`` stores the metric, and in which
unit the paper prints it); a spec names them by key.

Row settings resolve in three layers, later ones winning (``overrides`` merge key by key)::

    row                  {recipe, overrides, evaluate}   every scale, every model
    row[scale]           the same keys                   one scale
    row[scale][model]    the same keys                   one model at one scale

``plan_runs(spec, scale)`` turns this into one ``RunPlan`` per (model, row): what the
orchestration trains and evaluates, and the key under which ``render_table`` expects its results.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

import yaml

from sapo.errors import RecipeError
from sapo.files import safe_name
from sapo.reproduce.paper_numbers import repository_root

TABLES_DIR = Path(__file__).resolve().parent / "tables"  # resolve(): strict editable installs link this file


@dataclass(frozen=True)
class Scale:
    name: str
    recipe_variant: str  # recipes/<scale>/<model>/<method>/config_<variant>.yaml
    description: str
    warning: str | None = None  # set: numbers not comparable with the paper's (and no difference column)

    @property
    def comparable(self) -> bool:
        return self.warning is None


SCALES = {
    "paper": Scale("paper", "full", "the paper's models, data, benchmarks and GPT-4 judge, trained on 8 GPUs"),
    "embedded": Scale("embedded", "cpu",
                      "SmolLM2-135M on the project's own data, with fixture benchmarks and a local judge: a pipeline "
                      "check that train, evaluate and reproduce run end to end on CPU; the paper's numbers stand "
                      "beside ours only to show the table's shape",
                      warning="Embedded-scale numbers are NOT comparable with the paper's."),
    "small": Scale("small", "small",
                   "SmolLM2-135M trained for 48 steps on the project's own data, four times the embedded recipes "
                   "(recipes/small; learning rates checked by the sweep in results/small/sweep.md), scored on the held-out verifiable set, the "
                   "IFEval fixtures and, where a table has it, the Open LLM fixtures; judged benchmarks are left out because the only judge available offline, the "
                   "embedded model, failed calibration (results/embedded); the paper's numbers stand beside ours "
                   "only to show the table's shape",
                   warning="Small-scale numbers are NOT comparable with the paper's."),
}  # fmt: skip
# One embedded model stands in for every paper model; its block is printed beside the spec's first paper model
# (LLaMA-3-8B everywhere), so that every embedded table refers to the same paper model.
EMBEDDED_MODEL = "smollm2-135m"
LAYER_KEYS = ("recipe", "overrides", "evaluate")  # what each layer of a row may set
KINDS = ("table", "figure")  # a figure's rows are points on its x axis (`x`), its columns its curves
MODEL_LABELS = {"llama-3-8b": "LLaMA-3-8B", "mistral-7b": "Mistral-7B", EMBEDDED_MODEL: "SmolLM2-135M"}


@dataclass(frozen=True)
class Fallback:
    path: str
    comparable: bool = True
    note: str | None = None


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    suite: str
    path: str  # dotted, below results.json's "benchmarks"
    scale: float = 1.0  # stored value x scale = the paper's unit
    decimals: int = 2
    fallbacks: tuple[Fallback, ...] = ()
    note: str | None = None
    judged: bool = True  # false: a judged suite's metric the judge does not decide (AlpacaEval's output length)
    higher_is_better: bool | None = True  # None: no direction, so no better/worse marks (output length)
    scales: tuple[str, ...] | None = None  # the scales whose tables show it; None: every scale

    def shown_at(self, scale: str) -> bool:
        return self.scales is None or scale in self.scales


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    settings: dict  # the raw layers: recipe / overrides / evaluate, then per scale, then per model
    x: float | None = None  # figure rows: the point on the x axis


@dataclass(frozen=True)
class TableSpec:
    name: str
    kind: str  # "table" | "figure"
    title: str
    caption: str
    models: tuple[str, ...]  # the paper's models, one block each at paper scale
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    row_header: str = "Method"  # the header of the row-label column
    notes: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    x_label: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)  # row -> the row(s) it is tested against (reproduce/baselines.py)

    def at_scale(self, scale: str) -> TableSpec:
        """The spec as one scale shows it: only the columns that scale measures (``Column.scales``)."""
        return replace(self, columns=tuple(c for c in self.columns if c.shown_at(scale)))

    def models_at(self, scale: str) -> tuple[str, ...]:
        return self.models if scale == "paper" else (EMBEDDED_MODEL,)

    def paper_model_for(self, model: str) -> str:
        return model if model in self.models else self.models[0]

    @property
    def suites(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.suite for c in self.columns))


@dataclass(frozen=True)
class RunPlan:
    """One (model, row) of a table at one scale: train ``recipe`` with ``overrides``, or score ``evaluate``."""

    key: str  # "<model>/<row>": the key of render_table's ``runs`` mapping
    scale: str
    model: str
    row: str
    recipe: Path | None  # relative to the repository root
    overrides: dict
    evaluate: str | None
    suites: tuple[str, ...]
    # Equal for the same recipe and overrides, leaving out overrides equal to the recipe's own values (not to the
    # config's defaults, which this module does not read): tables that share a run can share its results.
    run_id: str


def _check_keys(where: str, mapping: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
    unknown, missing = set(mapping) - allowed, set(required) - set(mapping)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")


def _yaml_keys(cls, skip: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
    """(allowed, required) YAML keys of a dataclass read from a spec: its fields; required when without default."""
    names = [f for f in fields(cls) if f.name not in skip]
    return {f.name for f in names}, {f.name for f in names if f.default is MISSING and f.default_factory is MISSING}


def load_columns(tables_dir: Path = TABLES_DIR) -> dict[str, Column]:
    raw = yaml.safe_load((tables_dir / "columns.yaml").read_text())
    columns = {}
    for key, entry in raw.items():
        _check_keys(f"columns.yaml: {key}", entry, *_yaml_keys(Column, skip=("key",)))
        fallbacks = []
        for fallback in entry.get("fallbacks", []):
            _check_keys(f"columns.yaml: {key}: fallbacks", fallback, *_yaml_keys(Fallback))
            fallbacks.append(Fallback(**fallback))
        scales = entry.get("scales")
        if scales is not None and not set(scales) <= set(SCALES):
            raise ValueError(f"columns.yaml: {key}: scales {scales} are not all of {sorted(SCALES)}")
        columns[key] = Column(key=key, **{**entry, "fallbacks": tuple(fallbacks),
                                          "scales": None if scales is None else tuple(scales)})  # fmt: skip
    return columns


def list_specs(tables_dir: Path = TABLES_DIR) -> list[str]:
    return sorted(p.stem for p in tables_dir.glob("*.yaml") if p.stem != "columns")


def _load_row(where: str, entry: dict) -> Row:
    _check_keys(where, entry, {"key", "label", "x", *LAYER_KEYS, *SCALES}, {"key", "label"})
    for scale in SCALES:
        layer = entry.get(scale) or {}
        _check_keys(f"{where}: {scale}", layer, {*LAYER_KEYS, *MODEL_LABELS})
        for model in set(layer) & set(MODEL_LABELS):
            _check_keys(f"{where}: {scale}: {model}", layer[model], set(LAYER_KEYS))
    settings = {k: v for k, v in entry.items() if k not in ("key", "label", "x")}
    return Row(key=entry["key"], label=str(entry["label"]), settings=settings, x=entry.get("x"))


def load_spec(name: str, tables_dir: Path = TABLES_DIR) -> TableSpec:
    path = tables_dir / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no table spec {name!r}; known: {', '.join(list_specs(tables_dir))}")
    raw = yaml.safe_load(path.read_text())
    _check_keys(path.name, raw, *_yaml_keys(TableSpec, skip=("name",)))
    if raw["kind"] not in KINDS or not set(raw["models"]) <= set(MODEL_LABELS) - {EMBEDDED_MODEL}:
        raise ValueError(f"{path.name}: kind must be one of {KINDS}, models paper models of {sorted(MODEL_LABELS)}")
    known = load_columns(tables_dir)
    columns = []
    for entry in raw["columns"]:
        entry = {"key": entry} if isinstance(entry, str) else entry
        _check_keys(f"{path.name}: columns", entry, {"key", "label"}, {"key"})
        if entry["key"] not in known:
            raise ValueError(f"{path.name}: column {entry['key']!r} is not in columns.yaml")
        columns.append(replace(known[entry["key"]], label=entry.get("label", known[entry["key"]].label)))
    rows = [_load_row(f"{path.name}: row {entry.get('key')}", entry) for entry in raw["rows"]]
    keys = {row.key for row in rows}
    for row, bases in (raw.get("baselines") or {}).items():
        unknown = {row, *([bases] if isinstance(bases, str) else bases)} - keys
        if unknown:
            raise ValueError(f"{path.name}: baselines name rows {sorted(unknown)} the table does not have")
    tuples = {key: tuple(raw.get(key, ())) for key in ("models", "notes", "assumptions")}
    return TableSpec(**{**raw, **tuples, "name": name, "caption": raw["caption"].strip(), "columns": tuple(columns),
                        "baselines": raw.get("baselines") or {},
                        "rows": tuple(rows)})  # fmt: skip


def resolve_row(row: Row, scale: str, model: str) -> dict:
    """The row's settings at one scale and model: ``{recipe, overrides, evaluate}`` after the three layers."""
    resolved = dict.fromkeys(LAYER_KEYS)
    scale_layer = row.settings.get(scale, {}) or {}
    for layer in (row.settings, scale_layer, scale_layer.get(model, {}) or {}):
        for key in ("recipe", "evaluate"):
            if key in layer:
                resolved[key] = layer[key]
        resolved["overrides"] = {**(resolved["overrides"] or {}), **(layer.get("overrides") or {})}
    if (resolved["recipe"] is None) == (resolved["evaluate"] is None):
        raise ValueError(f"row {row.key} at {scale}/{model}: exactly one of recipe and evaluate must be set")
    return resolved


def recipe_path(scale: str, model: str, method: str) -> Path:
    return Path("recipes") / scale / model / method / f"config_{SCALES[scale].recipe_variant}.yaml"


def _format_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_runs(spec: TableSpec, scale: str, root: Path | None = None) -> list[RunPlan]:
    """One RunPlan per (model, row). ``root``: the checkout whose recipes are read to name runs (an override equal
    to the recipe's own value does not change the run, so it is left out of ``run_id``); default: the one found."""
    if scale not in SCALES:
        raise RecipeError(f"scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    root = repository_root() if root is None else Path(root)
    spec = spec.at_scale(scale)
    plans = []
    for model in spec.models_at(scale):
        for row in spec.rows:
            settings = resolve_row(row, scale, model)
            if settings["evaluate"] is not None:
                name, recipe, changed = safe_name(settings["evaluate"]), None, {}
            else:
                name, recipe = settings["recipe"], recipe_path(scale, model, settings["recipe"])
                if not (root / recipe).is_file():
                    raise RecipeError(f"{spec.name}: row {row.key} at {scale}/{model}: no recipe {recipe}")
                own = yaml.safe_load((root / recipe).read_text())
                changed = {k: v for k, v in settings["overrides"].items() if own.get(k, object()) != v}
            suffix = ",".join(f"{k}={_format_value(v)}" for k, v in sorted(changed.items()))
            plans.append(RunPlan(key=f"{model}/{row.key}", scale=scale, model=model, row=row.key, recipe=recipe,
                                 overrides=settings["overrides"], evaluate=settings["evaluate"], suites=spec.suites,
                                 run_id=f"{scale}/{model}/{name}" + (f"+{suffix}" if suffix else "")))  # fmt: skip
    if scale != "paper":  # rows the paper runs apart must not collapse into one run (a missing scale layer)
        apart = {p.row: p.run_id for p in plan_runs(spec, "paper", root) if p.model == spec.models[0]}
        seen = {}
        for plan in plans:
            other = seen.setdefault(plan.run_id, plan.row)
            if other != plan.row and apart[other] != apart[plan.row]:
                raise RecipeError(f"{spec.name}: rows {other} and {plan.row} are one run ({plan.run_id}) at {scale} "
                                  f"scale but two at paper scale: give them a {scale}: layer")  # fmt: skip
    return plans
