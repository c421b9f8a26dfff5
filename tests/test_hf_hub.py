"""`hf:` model ids: read from a Hugging Face cache folder the test builds, never from the network."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from kvsize.catalog import load_model
from kvsize.errors import InvalidInputError, KvsizeError
from kvsize.hf_hub import parse_hub_reference
from kvsize.precision import parse_precision
from kvsize.sizing import kv_bits_per_token

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo_id: str, fixture: str, index_total_size: int | None = None) -> Path:
    """Lay out one repository the way huggingface_hub caches it: refs/main names a snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT, encoding="utf-8")
    shutil.copy(FIXTURES / f"{fixture}.json", snapshot / "config.json")
    if index_total_size is not None:
        index = {"metadata": {"total_size": index_total_size}, "weight_map": {}}
        (snapshot / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return snapshot


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in HF_HUB_CACHE, with HF_HUB_OFFLINE set."""
    pytest.importorskip("huggingface_hub", reason="the hub tests need huggingface_hub (pip install '.[test]')")
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_cached_config_and_index(offline_cache):
    snapshot = cache_repo(offline_cache, "meta-llama/Meta-Llama-3-8B", "meta-llama-3-8b", 16_060_522_496)
    spec = load_model("hf:meta-llama/Meta-Llama-3-8B")
    assert spec.id == "meta-llama-3-8b"
    assert spec.hf_id == "meta-llama/Meta-Llama-3-8B"
    assert spec.path == str(snapshot / "config.json")
    assert spec.weights_bytes == 16_060_522_496
    bf16 = parse_precision("bf16")
    assert kv_bits_per_token(spec, bf16) == kv_bits_per_token(load_model("llama3-8b"), bf16)


def test_cached_config_without_index(offline_cache):
    """A repository whose index was never cached falls back to the parameter formula."""
    cache_repo(offline_cache, "meta-llama/Meta-Llama-3-8B", "meta-llama-3-8b")
    spec = load_model("hf:meta-llama/Meta-Llama-3-8B")
    assert spec.weights_bytes is None
    assert spec.params_total == 8_030_261_248


def test_offline_and_not_cached(offline_cache, cli):
    code, out, err = cli("estimate", "--model", "hf:example-org/missing-model", "--ctx", "8k")
    assert code == 2
    assert out == ""
    assert "config.json is not in" in err
    assert "HF_HUB_OFFLINE is set" in err
    assert "hf download example-org/missing-model config.json" in err
    assert err.count("\n") == 1


def test_revision_is_read(offline_cache):
    cache_repo(offline_cache, "org/model", "falcon-7b", 14_000_000_000)
    assert load_model(f"hf:org/model@{COMMIT}").num_layers == 32


def test_import_from_hub(offline_cache, cli):
    cache_repo(offline_cache, "Qwen/Qwen2.5-7B", "qwen2.5-7b")
    code, out, _ = cli("import", "hf:Qwen/Qwen2.5-7B")
    assert code == 0
    assert "id: qwen2.5-7b" in out
    assert "hf_id: Qwen/Qwen2.5-7B" in out


def test_without_hub_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(KvsizeError, match=r"pip install 'kvsize\[hub\]'"):
        load_model("hf:meta-llama/Llama-3.1-8B")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("hf:meta-llama/Llama-3.1-8B", ("meta-llama/Llama-3.1-8B", None)),
        ("hf:Qwen/Qwen3-8B@main", ("Qwen/Qwen3-8B", "main")),
    ],
)
def test_parse_reference(name, expected):
    assert parse_hub_reference(name) == expected


@pytest.mark.parametrize("name", ["hf:", "hf:no-slash", "hf:a/b/c", "hf:/x"])
def test_invalid_reference(name):
    with pytest.raises(InvalidInputError, match="hf:ORGANIZATION/NAME"):
        parse_hub_reference(name)
