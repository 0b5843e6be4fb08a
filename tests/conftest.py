"""Shared fixtures. Every run starts from empty caches and without the network."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

# Before anything imports huggingface_hub: a fresh HF_HOME and cache, and no hub access.
_SCRATCH = tempfile.mkdtemp(prefix="sapo-tests-")
os.environ["HF_HOME"] = os.path.join(_SCRATCH, "hf_home")
os.environ["SAPO_CACHE"] = os.path.join(_SCRATCH, "sapo_cache")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs a CUDA accelerator")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random LLaMA with SmolLM2's tokenizer, written once per test session."""
    from sapo.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """The embedded SmolLM2-135M-Instruct, dequantized from the packaged GGUF (~25 s, once)."""
    from sapo.models import materialize_embedded_model

    return materialize_embedded_model(tmp_path_factory.mktemp("models") / "embedded")


@pytest.fixture(scope="session")
def packaged_wheels(tmp_path_factory):
    """Every wheel evaluate/packaged.yaml names (but the installed MT-Bench one), downloaded once per test run into
    $SAPO_PACKAGED_WHEELS (nox -s tests keeps that folder between runs), else a folder of this run's."""
    from sapo.evaluate import packaged
    from sapo.wheels import download_wheel

    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get(packaged.WHEELS_ENV):
            patch.setenv(packaged.WHEELS_ENV, str(tmp_path_factory.mktemp("packaged_wheels")))
        folder = Path(os.environ[packaged.WHEELS_ENV])
        for package, version in packaged.load_spec()["wheels"].items():
            if package != "nvidia-mtbench-evaluator":
                download_wheel(package, version, folder, packaged.WHEELS_ENV)
        yield folder


@pytest.fixture(scope="module")
def own_sapo_cache(tmp_path_factory):
    """A test module's own $SAPO_CACHE: packaged sets it prepares change what --data auto reads offline, so they are
    kept out of the other modules' cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAPO_CACHE", str(tmp_path_factory.mktemp("own_sapo_cache")))
        yield


@pytest.fixture(scope="session")
def _smol_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def smol_tokenizer(_smol_tokenizer):
    """SmolLM2's tokenizer (ChatML with a default system prompt; pad == eos; adds no BOS)."""
    return copy.deepcopy(_smol_tokenizer)


# --------------------------------------------------------------------------- the fault table (nox -s faults)

_FAULT_TABLE = None


@pytest.fixture(scope="session")
def fault_table():
    """The session's table of injected faults (tests/faults.py); written out when SAPO_FAULTS_OUT is set."""
    global _FAULT_TABLE
    if _FAULT_TABLE is None:
        from faults import FaultTable

        _FAULT_TABLE = FaultTable()
    return _FAULT_TABLE


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("SAPO_FAULTS_OUT")
    if _FAULT_TABLE is not None and _FAULT_TABLE.rows:
        print("\n\nFaults injected:\n" + _FAULT_TABLE.markdown())
        if out:
            from pathlib import Path

            _FAULT_TABLE.write(Path(out))
            print(f"written: {out}/faults.json, {out}/README.md")
