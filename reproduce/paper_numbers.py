"""The paper's published numbers, one cell at a time, each with where it came from.

``results/paper/<table>.json`` holds one cell per line, keyed by (model, row, column)::

    {"model": "llama-3-8b", "row": "sft", "column": "openllm_avg", "value": 63.95, "verified": false,
     "source": "S3", "note": "quoted by S3 ...; original label 'SFT'"}

``value`` is in the unit the paper prints (percent, MT-Bench score, characters) or null when
unknown. ``source`` names ids of ``sources.json`` (comma-separated); ``verified`` is true only
for a number read from the paper itself (source ``paper``). Filling in a checked number is a
one-line edit: value, ``"verified": true``, ``"source": "paper"``, and the note.

The folder sits at the repository root, outside the installed package: ``default_paper_dir``
finds it beside the checkout this module runs from (editable installs), else under the current
directory; any other copy is passed as ``folder``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CELL_KEYS = ("model", "row", "column", "value", "verified", "source", "note")


@dataclass(frozen=True)
class PaperCell:
    table: str
    model: str
    row: str
    column: str
    value: float | None
    verified: bool
    source: str | None  # comma-separated ids of sources.json; None only when value is None
    note: str

    @property
    def source_ids(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.source.split(",")) if self.source else ()


@dataclass(frozen=True)
class PaperNumbers:
    cells: dict  # (table, model, row, column) -> PaperCell
    sources: dict  # id -> {"short", "description"}
    folder: Path

    def get(self, table: str, model: str, row: str, column: str) -> PaperCell | None:
        return self.cells.get((table, model, row, column))

    def table(self, table: str) -> list[PaperCell]:
        return [cell for key, cell in self.cells.items() if key[0] == table]


def repository_root() -> Path:
    """The checkout holding recipes/ and results/paper/: beside this module (editable install) or the cwd."""
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (candidate / "recipes").is_dir() and (candidate / "results" / "paper").is_dir():
            return candidate
    raise FileNotFoundError(
        "no SAPO checkout found (a folder with recipes/ and results/paper/) beside the installed package or in "
        "the current directory: run from the repository root or pass the folder explicitly"
    )


def default_paper_dir() -> Path:
    return repository_root() / "results" / "paper"


def _check_cell(where: str, raw: dict, sources: dict) -> None:
    if set(raw) != set(CELL_KEYS):
        raise ValueError(f"{where}: keys must be {list(CELL_KEYS)}, got {sorted(raw)}")
    value, source = raw["value"], raw["source"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{where}: value must be a number or null, got {value!r}")
    if not isinstance(raw["verified"], bool):
        raise ValueError(f"{where}: verified must be true or false")
    if value is not None and not source:
        raise ValueError(f"{where}: a value needs a source")
    ids = [s.strip() for s in source.split(",")] if source else []
    unknown = [s for s in ids if s not in sources]
    if unknown:
        raise ValueError(f"{where}: unknown source {unknown}; known: {sorted(sources)}")
    if raw["verified"] and (value is None or "paper" not in ids):
        raise ValueError(f"{where}: verified: true needs a value read from the paper (source 'paper')")


def load_paper_numbers(folder: Path | None = None) -> PaperNumbers:
    """Read and check every ``<table>.json`` of ``folder`` (default: ``default_paper_dir()``)."""
    folder = Path(folder) if folder is not None else default_paper_dir()
    sources = json.loads((folder / "sources.json").read_text())["sources"]
    cells = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == "sources.json":
            continue
        body = json.loads(path.read_text())
        table = body["table"]
        if table != path.stem:
            raise ValueError(f"{path}: 'table' is {table!r}, the file name says {path.stem!r}")
        for index, raw in enumerate(body["cells"]):
            where = f"{path.name}: cell {index} ({raw.get('model')}/{raw.get('row')}/{raw.get('column')})"
            _check_cell(where, raw, sources)
            key = (table, raw["model"], raw["row"], raw["column"])
            if key in cells:
                raise ValueError(f"{where}: duplicate cell")
            cells[key] = PaperCell(table=table, **raw)
    return PaperNumbers(cells=cells, sources=sources, folder=folder)
