"""The built-in catalog: every shipped spec loads, names resolve, published figures hold."""

import pytest

from kvsize.catalog import builtin_root, catalog_ids, iter_specs, load_gpu, load_model, normalize_name, resolve_id
from kvsize.errors import NotFoundError, SpecError
from kvsize.precision import parse_precision
from kvsize.sizing import bits_to_bytes, kv_bits_per_token, sequence_kv_bytes

REQUIRED_MODELS = """
llama-7b llama2-7b llama2-13b llama2-70b llama3-8b llama3-70b llama3.1-8b llama3.1-70b llama3.1-405b
llama3.2-1b llama3.2-3b llama3.3-70b llama4-scout llama4-maverick mistral-7b mistral-7b-v0.3
mistral-small-24b mistral-large-2 mixtral-8x7b mixtral-8x22b qwen2.5-7b qwen2.5-14b qwen2.5-32b
qwen2.5-72b qwen3-0.6b qwen3-4b qwen3-8b qwen3-14b qwen3-32b qwen3-30b-a3b qwen3-235b-a22b
qwen3-next-80b-a3b deepseek-67b deepseek-v2 deepseek-v2-lite deepseek-v3 deepseek-r1 kimi-k2 glm-4.5
gemma2-9b gemma2-27b gemma3-1b gemma3-4b gemma3-12b gemma3-27b gpt-oss-20b gpt-oss-120b command-r
command-r-plus falcon-7b falcon-40b phi3-mini phi4 jamba-v0.1 opt-13b opt-30b
""".split()

REQUIRED_GPUS = """
a10g a100-40gb a100-80gb l4 l40s h100-pcie h100-sxm h100-nvl h200 b200 gb200 b300 rtx-3090 rtx-4090
rtx-5090 rtx-6000-ada rtx-pro-6000 t4 v100-16gb v100-32gb mi250x mi300x mi325x mi355x tpu-v5e tpu-v5p tpu-v6e
""".split()


@pytest.mark.parametrize("kind", ["models", "gpus"])
def test_every_shipped_spec_loads(kind):
    specs = list(iter_specs(kind))
    assert len(specs) == len(catalog_ids(kind))
    for spec in specs:
        assert spec.source, f"{spec.id} has no source"


def test_required_models_present():
    missing = sorted(set(REQUIRED_MODELS) - set(catalog_ids("models")))
    assert missing == []


def test_required_gpus_present():
    missing = sorted(set(REQUIRED_GPUS) - set(catalog_ids("gpus")))
    assert missing == []


@pytest.mark.parametrize("kind", ["models", "gpus"])
def test_names_unique_after_normalizing(kind):
    """No two specs share an id or alias, even ignoring case and punctuation."""
    owner: dict[str, str] = {}
    for spec in iter_specs(kind):
        for name in (spec.id, *spec.aliases, *([spec.hf_id] if getattr(spec, "hf_id", None) else [])):
            key = normalize_name(name)
            assert owner.setdefault(key, spec.id) == spec.id, f"{name!r} of {spec.id} collides with {owner[key]}"


def test_specs_read_from_package_or_checkout():
    assert builtin_root().joinpath("models", "llama3-70b.yaml").is_file()


@pytest.mark.parametrize(
    ("model_id", "dtype", "bytes_per_token"),
    [
        ("llama3-70b", "bf16", 327680),  # 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes
        ("llama3.1-405b", "bf16", 516096),  # 126 x 8 x 128 x 2 x 2
        ("qwen2.5-72b", "bf16", 327680),  # 80 x 8 x 128 x 2 x 2
        ("deepseek-v3", "bf16", 70272),  # 61 layers x (512 + 64) latent x 2 bytes
        ("command-r", "bf16", 1310720),  # 40 x 64 KV heads (MHA) x 128 x 2 x 2
        ("opt-13b", "fp16", 819200),  # 40 x 40 x 128 x 2 x 2: the PagedAttention paper's "800 KB"
        ("llama3.1-8b", "fp8", 65536),  # 32 x 8 x 128 x 2 x 1 byte
        ("llama2-7b", "fp16", 524288),  # 32 x 32 x 128 x 2 x 2
        ("falcon-7b", "bf16", 8192),  # multi-query: 32 x 1 x 64 x 2 x 2
        ("qwen3-235b-a22b", "bf16", 192512),  # 94 x 4 x 128 x 2 x 2
        ("kimi-k2", "bf16", 70272),  # same MLA shape as DeepSeek-V3
        ("gemma2-9b", "bf16", 344064),  # 42 x 8 x 256 x 2 x 2
        ("gpt-oss-120b", "bf16", 73728),  # 36 x 8 x 64 x 2 x 2
        ("jamba-v0.1", "bf16", 16384),  # 4 attention layers x 8 x 128 x 2 x 2; Mamba layers hold a state
    ],
)
def test_published_bytes_per_token(model_id, dtype, bytes_per_token):
    model = load_model(model_id)
    assert bits_to_bytes(kv_bits_per_token(model, parse_precision(dtype))) == bytes_per_token


def test_llama3_70b_at_128k_is_40_gib():
    model = load_model("llama3-70b")
    assert sequence_kv_bytes(model, parse_precision("bf16"), 131072) == 42949672960


def test_llama2_7b_at_4096_is_2_gib():
    assert sequence_kv_bytes(load_model("llama2-7b"), parse_precision("fp16"), 4096) == 2 * 1024**3


def test_mistral_7b_window_at_32k():
    # Each of 32 layers keeps 4096 tokens: 4096 x 131,072 = 536,870,912 bytes.
    assert sequence_kv_bytes(load_model("mistral-7b"), parse_precision("bf16"), 32768) == 536870912


def test_gemma3_27b_layer_pattern():
    model = load_model("gemma3-27b")
    full = [index for index, layer in enumerate(model.layers) if layer.kind == "full"]
    assert full[:3] == [5, 11, 17]
    assert len(full) == 10  # 62 layers, one global layer in six


def test_llama4_scout_chunked_every_fourth_full():
    model = load_model("llama4-scout")
    kinds = [layer.kind for layer in model.layers]
    assert kinds[:4] == ["chunked", "chunked", "chunked", "full"]
    assert kinds.count("full") == 12


def test_jamba_state_layers():
    # Mamba state per layer: conv (4 - 1) x 8192 + SSM 8192 x 16 = 155,648 elements, 311,296 bytes at bf16.
    # 28 Mamba layers: 8,716,288 bytes per sequence, whatever the context.
    model = load_model("jamba-v0.1")
    kinds = [layer.kind for layer in model.layers]
    assert [index for index, kind in enumerate(kinds) if kind == "full"] == [4, 12, 20, 28]
    one_token = sequence_kv_bytes(model, parse_precision("bf16"), 1)
    assert one_token == 28 * 311296 + 16384


def test_gpu_reported_capacity():
    # nvidia-smi reports 81559 MiB for an H100 SXM.
    assert load_gpu("h100").memory_reported_bytes == 81559 * 1024**2
    assert load_gpu("h100-sxm").memory_marketed_gb == 80


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("llama3-70b", "llama3-70b"),
        ("Llama3-70B", "llama3-70b"),
        ("llama-3-70b", "llama3-70b"),
        ("LLAMA_3_70B", "llama3-70b"),
        ("Meta-Llama-3-70B", "llama3-70b"),
        ("llama3.1-70b", "llama3.1-70b"),
        ("Llama-3.1-70B", "llama3.1-70b"),
        ("llama3_1_70b", "llama3.1-70b"),
        ("llama31-70b", "llama3.1-70b"),
        ("meta-llama/Meta-Llama-3-70B", "llama3-70b"),
    ],
)
def test_model_names_resolve(name, model_id):
    assert resolve_id("models", name) == model_id


def test_unknown_model_suggests_close_ids():
    with pytest.raises(NotFoundError) as error:
        resolve_id("models", "llama3-71b")
    message = str(error.value)
    assert "llama3-70b" in message
    assert "kvsize models" in message


def test_model_from_spec_file(tmp_path):
    spec = builtin_root().joinpath("models", "llama3-8b.yaml").read_text(encoding="utf-8")
    path = tmp_path / "my-model.yaml"
    path.write_text(spec.replace("id: llama3-8b", "id: my-model"), encoding="utf-8")
    assert load_model(str(path)).id == "my-model"


def test_spec_file_id_must_match_name(tmp_path):
    spec = builtin_root().joinpath("models", "llama3-8b.yaml").read_text(encoding="utf-8")
    path = tmp_path / "other.yaml"
    path.write_text(spec, encoding="utf-8")
    with pytest.raises(SpecError, match="must equal the file name"):
        load_model(str(path))


def test_non_utf8_spec_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"id: bad\nname: \xff\xfe\n")
    with pytest.raises(SpecError, match="UTF-8"):
        load_model(str(path))


@pytest.mark.parametrize("text", ["[1, 2, 3]\n", "just a string\n", "", "id: [unclosed\n"])
def test_spec_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match="bad.yaml"):
        load_model(str(path))
