"""Hub-named models resolve to their snapshot folder in the Hugging Face cache, so results record the
repo id, the revision and the weights hash, and results.json merges benchmarks run in parts.

The cache is a real-layout one built in a temporary folder (``models--org--name/refs/main`` holding a
commit hash, ``snapshots/<hash>/`` a saved model), read offline as ``snapshot_download`` reads it.
"""

from __future__ import annotations

import json

import pytest

from sapo.models import ModelUnavailableError, build_tiny_model, resolve_model_path

REPO_ID = "org/name"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    build_tiny_model(output_dir=repo / "snapshots" / SHA)
    return cache


@pytest.fixture
def default_cache(hub_cache, monkeypatch):
    """``hub_cache`` as huggingface_hub's default cache (read at import time, so patched where it is kept)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


def test_hub_name_resolves_to_its_cached_snapshot(hub_cache, default_cache):
    snapshot = hub_cache / "models--org--name" / "snapshots" / SHA
    assert resolve_model_path(REPO_ID) == str(snapshot)
    assert resolve_model_path(REPO_ID, cache_dir=hub_cache) == str(snapshot)


def test_plain_folders_pass_through_and_have_no_revision(tiny_model_dir):
    from sapo.models import hub_revision

    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert hub_revision(tiny_model_dir) is None


def test_uncached_hub_name_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="hub is out of reach"):
        resolve_model_path("org/not-cached", cache_dir=tmp_path)


def test_provenance_of_a_hub_model_names_repo_revision_and_weights(default_cache):
    from sapo.evaluate.results import model_provenance

    path = resolve_model_path(REPO_ID)
    info = model_provenance(REPO_ID, path)
    assert (info["name"], info["repo_id"], info["revision"]) == (REPO_ID, REPO_ID, SHA)
    assert info["weights_sha256"] is not None, "the snapshot's safetensors were not hashed"


def test_results_of_a_hub_model_keep_every_benchmark(default_cache, tmp_path):
    # The weights hash is what lets a later benchmark merge into results.json instead of replacing it.
    from sapo.evaluate.results import model_provenance, write_results

    model = model_provenance(REPO_ID, resolve_model_path(REPO_ID))
    write_results(tmp_path, model=model, run={}, judge=None, benchmarks={"ifeval": {"metrics": {"acc": 0.5}}})
    path = write_results(tmp_path, model=model, run={}, judge=None, benchmarks={"mtbench": {"metrics": {"s": 6}}})
    assert sorted(json.loads(path.read_text())["benchmarks"]) == ["ifeval", "mtbench"]
