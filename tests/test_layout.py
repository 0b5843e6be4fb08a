"""The folder layout is the architecture: train/ and evaluate/ share a small core (src/sapo/) and
never import each other, the core imports neither, and nothing imports in a cycle. Also the
size rules a reader relies on: no function over ~80 lines, no Python file that is mostly data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"src/sapo": "sapo", "train": "sapo.train", "evaluate": "sapo.evaluate", "reproduce": "sapo.reproduce",
            "bench": "sapo.bench"}  # fmt: skip
ENTRY_POINT = "sapo.cli"  # the `sapo` command: the one core module that registers each stage's subcommands
MAX_FUNCTION_LINES = 90  # "~80": a little slack for long argument lists, none for long bodies
MAX_LITERAL_LINES = 100


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every sapo module ``module`` imports, at any depth of the file (function-level imports count too)."""
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n in MODULES}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _stage(module: str) -> str:
    for stage in ("train", "evaluate", "reproduce", "bench"):
        if module == f"sapo.{stage}" or module.startswith(f"sapo.{stage}."):
            return stage
    return "core"


def test_every_package_module_is_seen():
    assert {"sapo.generation", "sapo.chat", "sapo.errors", "sapo.files", "sapo.log"} <= set(MODULES)
    assert {"sapo.train.trainer", "sapo.evaluate.mtbench", "sapo.reproduce.run"} <= set(MODULES)


@pytest.mark.parametrize(("stage", "forbidden"), [("train", "evaluate"), ("evaluate", "train"),
                                                  ("core", "train"), ("core", "evaluate"), ("core", "reproduce"),
                                                  ("train", "reproduce"), ("evaluate", "reproduce"),
                                                  # bench measures train and evaluate; nothing depends on it
                                                  ("core", "bench"), ("train", "bench"), ("evaluate", "bench"),
                                                  ("reproduce", "bench")])  # fmt: skip
def test_stages_import_only_downstream_of_the_core(stage, forbidden):
    bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if _stage(m) == stage and m != ENTRY_POINT
                 for t in targets if _stage(t) == forbidden)  # fmt: skip
    assert not bad, bad


def test_no_import_cycles():
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(target) :], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_long_functions_or_literal_tables(module):
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in _functions(tree)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]  # fmt: skip
    assert not long, f"{path.relative_to(ROOT)}: split {long}"
    literals = [f"line {n.lineno} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
                if isinstance(n, ast.List | ast.Tuple | ast.Dict | ast.Set) and n.end_lineno - n.lineno >= MAX_LITERAL_LINES]  # fmt: skip
    assert not literals, f"{path.relative_to(ROOT)}: data belongs in a data file, not a literal: {literals}"


LONG_MODULE_MARK = "Why one long module:"


def test_long_modules_say_why_in_their_docstring():
    """A module over ~400 lines needs a reason, given in its docstring after LONG_MODULE_MARK."""
    unexplained = []
    for path in MODULES.values():
        text = path.read_text()
        if text.count("\n") > 420 and LONG_MODULE_MARK not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, f"say '{LONG_MODULE_MARK} ...' in the docstring, or split: {unexplained}"
