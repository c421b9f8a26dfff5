"""Hugging Face config.json files: mapping onto specs, parameter counts, and every error path.

The fixtures under tests/fixtures/hf are written from the published config.json
values of each model. Each must size the KV cache exactly as the matching
built-in spec does.
"""

import json
from pathlib import Path

import pytest

from kvsize.catalog import load_model
from kvsize.errors import NotFoundError, SpecError
from kvsize.hf_config import HfModelFiles, _text_config, count_parameters
from kvsize.precision import parse_precision
from kvsize.sizing import bits_to_bytes, kv_bits_per_token, sequence_kv_bytes

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
BF16 = parse_precision("bf16")


def model_folder(tmp_path: Path, fixture: str, index_total_size: int | None = None, **changes) -> Path:
    """Copy a fixture to `<tmp>/<fixture>/config.json`, optionally with a safetensors index beside it."""
    folder = tmp_path / fixture
    folder.mkdir()
    config = json.loads((FIXTURES / f"{fixture}.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if index_total_size is not None:
        index = {"metadata": {"total_size": index_total_size}, "weight_map": {}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def assert_same_kv(imported, builtin) -> None:
    """Assert that two specs cache the same bytes per token and per sequence, layer by layer."""
    assert [layer.kind for layer in imported.layers] == [layer.kind for layer in builtin.layers]
    assert kv_bits_per_token(imported, BF16) == kv_bits_per_token(builtin, BF16)
    for context in (1, 1000, 4097, 8193, 131072):
        assert sequence_kv_bytes(imported, BF16, context) == sequence_kv_bytes(builtin, BF16, context), context


# Each row: fixture, matching built-in id, KV bytes per token at bf16 (worked in the comment),
# and the stand-in index total_size for architectures whose parameters kvsize does not count.
# The stand-in totals are test values, not the published checkpoint sizes.
MATCHING_BUILTINS = [
    # GQA: 32 layers x 8 KV heads x (128 + 128) x 2 bytes = 131,072.
    ("meta-llama-3-8b", "llama3-8b", 131072, None),
    # MLA: 61 layers x (512 + 64) latent x 2 bytes = 70,272; no factor of 2 for K and V.
    ("deepseek-v3", "deepseek-v3", 70272, 688_000_000_000),
    ("kimi-k2", "kimi-k2", 70272, 2_000_000_000_000),
    # Sliding hybrid, Gemma 3 text_config wrapper relying on Gemma3TextConfig defaults
    # (4 KV heads, head_dim 256): 34 x 4 x 512 x 2 = 139,264.
    ("gemma-3-4b-it", "gemma3-4b", 139264, 8_600_000_000),
    # 62 x 16 x 256 x 2 = 507,904.
    ("gemma-3-27b-it", "gemma3-27b", 507904, 54_000_000_000),
    # Sliding hybrid from layer_types: 24 x 8 x 128 x 2 = 49,152 (half of it capped at 128 tokens).
    ("gpt-oss-20b", "gpt-oss-20b", 49152, 13_761_300_000),
    # Chunked, Llama 4 wrapper: 48 x 8 x 256 x 2 = 196,608.
    ("llama-4-scout-17b-16e-instruct", "llama4-scout", 196608, 217_283_587_072),
    # State hybrids: only the attention layers cache tokens. Jamba: 4 x 8 x 256 x 2 = 16,384.
    ("jamba-v0.1", "jamba-v0.1", 16384, 103_000_000_000),
    # Qwen3-Next: 12 x 2 x 512 x 2 = 24,576.
    ("qwen3-next-80b-a3b-thinking", "qwen3-next-80b-a3b", 24576, 160_000_000_000),
    # Mistral 3 wrapper around a Mistral text model: 40 x 8 x 256 x 2 = 163,840.
    ("mistral-small-3.1-24b-instruct-2503", "mistral-small-24b", 163840, 48_000_000_000),
    # MQA: 32 x 1 x 128 x 2 = 8,192.
    ("falcon-7b", "falcon-7b", 8192, 14_000_000_000),
    # New decoder architecture, 8 KV groups: 60 x 8 x 128 x 2 = 122,880.
    ("falcon-40b", "falcon-40b", 122880, 80_000_000_000),
    # use_sliding_window false: every layer full. 28 x 4 x 256 x 2 = 57,344.
    ("qwen2.5-7b", "qwen2.5-7b", 57344, None),
    # Sliding window on every layer: 32 x 8 x 256 x 2 = 131,072, capped at 4,096 tokens.
    ("mistral-7b-v0.1", "mistral-7b", 131072, None),
]


@pytest.mark.parametrize(("fixture", "builtin_id", "bytes_per_token", "total_size"), MATCHING_BUILTINS)
def test_config_matches_builtin(tmp_path, fixture, builtin_id, bytes_per_token, total_size):
    imported = load_model(str(model_folder(tmp_path, fixture, total_size)))
    builtin = load_model(builtin_id)
    assert bits_to_bytes(kv_bits_per_token(imported, BF16)) == bytes_per_token
    assert_same_kv(imported, builtin)


def test_config_file_path_or_folder(tmp_path):
    """A path to config.json and a path to its folder load the same spec, recording the config's path."""
    folder = model_folder(tmp_path, "meta-llama-3-8b")
    by_folder = load_model(str(folder))
    by_file = load_model(str(folder / "config.json"))
    assert by_folder == by_file
    assert by_folder.path == str(folder / "config.json")
    assert by_folder.id == "meta-llama-3-8b"


def test_llama3_8b_params_from_formula(tmp_path):
    # Embeddings 128,256 x 4,096 = 525,336,576, twice (untied LM head) = 1,050,673,152.
    # Per layer: q 4096 x 4096 + k, v 4096 x 1024 each + o 4096 x 4096 = 41,943,040;
    # MLP 3 x 4096 x 14336 = 176,160,768; two norms 8,192; total 218,112,000, x 32 = 6,979,584,000.
    # Final norm 4,096. Sum: 8,030,261,248 (keras-hub's published Llama 3 8B count).
    spec = load_model(str(model_folder(tmp_path, "meta-llama-3-8b")))
    assert spec.params_total == 8_030_261_248
    assert spec.params_exact is False
    assert spec.weights_bytes is None
    assert "estimate" in spec.notes


def test_index_total_size_gives_weights(tmp_path):
    # 8,030,261,248 bf16 parameters x 2 bytes = 16,060,522,496 bytes.
    spec = load_model(str(model_folder(tmp_path, "meta-llama-3-8b", 16_060_522_496)))
    assert spec.weights_bytes == 16_060_522_496
    assert spec.params_total == 8_030_261_248
    assert any("total_size 16060522496" in source for source in spec.source)


def test_index_total_parameters_is_exact(tmp_path):
    folder = model_folder(tmp_path, "meta-llama-3-8b")
    index = {"metadata": {"total_parameters": 8_030_261_248, "total_size": 16_060_522_496}, "weight_map": {}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    spec = load_model(str(folder))
    assert spec.params_total == 8_030_261_248
    assert spec.params_exact is True


def test_quantized_params_from_total_size(tmp_path):
    # DeepSeek-V3 has no parameter formula; fp8 is 8 bits a weight, so params = total_size.
    spec = load_model(str(model_folder(tmp_path, "deepseek-v3", 688_000_000_000)))
    assert spec.weight_dtype == "fp8"
    assert spec.params_total == 688_000_000_000
    assert spec.params_exact is False
    assert "multi-token-prediction" in spec.notes


def test_single_safetensors_header(tmp_path):
    """A single model.safetensors beside the config: only its header is read, for exact counts."""
    folder = model_folder(tmp_path, "meta-llama-3-8b")
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]},
        "b": {"dtype": "F32", "shape": [3], "data_offsets": [64, 76]},
    }
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(76))
    spec = load_model(str(folder))
    assert spec.params_total == 32 + 3
    assert spec.weights_bytes == 76
    assert spec.params_exact is True


def test_gpt_oss_weights_mxfp4(tmp_path):
    spec = load_model(str(model_folder(tmp_path, "gpt-oss-20b", 13_761_300_000)))
    assert spec.weight_dtype == "mxfp4"
    sliding = [index for index, layer in enumerate(spec.layers) if layer.kind == "sliding"]
    assert sliding == list(range(0, 24, 2))


def test_gemma3_defaults_are_recorded(tmp_path):
    spec = load_model(str(model_folder(tmp_path, "gemma-3-4b-it", 8_600_000_000)))
    # Gemma3TextConfig defaults fill what the published text_config leaves out.
    assert spec.max_position_embeddings == 131072
    assert spec.num_attention_heads == 8
    assert "num_key_value_heads 4" in spec.notes
    assert [index for index, layer in enumerate(spec.layers) if layer.kind == "full"] == [5, 11, 17, 23, 29]


def test_llama4_no_rope_layers_list(tmp_path):
    """An explicit no_rope_layers list (1 = RoPE, chunked) wins over the default interval of 4."""
    flags = [1, 0] * 24
    folder = model_folder(tmp_path, "llama-4-scout-17b-16e-instruct", 217_283_587_072)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["no_rope_layers"] = flags
    (folder / "config.json").write_text(json.dumps(config))
    spec = load_model(str(folder))
    assert [layer.kind for layer in spec.layers][:4] == ["chunked", "full", "chunked", "full"]


def test_qwen2_sliding_window_layers(tmp_path):
    # use_sliding_window true: layers at index >= max_window_layers use the window.
    spec = load_model(str(model_folder(tmp_path, "qwen2.5-7b", use_sliding_window=True, sliding_window=4096,
                                       max_window_layers=20)))  # fmt: skip
    kinds = [layer.kind for layer in spec.layers]
    assert kinds[:20] == ["full"] * 20
    assert kinds[20:] == ["sliding"] * 8


def test_window_not_below_context_is_full(tmp_path):
    # Qwen2's sliding_window 131072 equals the context limit, so the window never binds.
    spec = load_model(str(model_folder(tmp_path, "qwen2.5-7b", use_sliding_window=True, max_window_layers=0)))
    assert {layer.kind for layer in spec.layers} == {"full"}
    assert "full attention" in spec.notes


def test_kv_cache_scheme_noted(tmp_path):
    scheme = {"quant_method": "compressed-tensors", "kv_cache_scheme": {"num_bits": 8, "type": "float"},
              "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}  # fmt: skip
    spec = load_model(str(model_folder(tmp_path, "meta-llama-3-8b", quantization_config=scheme)))
    assert spec.weight_dtype == "fp8"
    assert "--kv-cache-dtype fp8" in spec.notes


def test_falcon_old_field_names(tmp_path):
    """n_layer and n_head are the names older Falcon configs use."""
    spec = load_model(str(model_folder(tmp_path, "falcon-7b", 14_000_000_000, num_hidden_layers=None,
                                       num_attention_heads=None, n_layer=32, n_head=71)))  # fmt: skip
    assert spec.num_layers == 32
    assert spec.max_position_embeddings == 2048  # the FalconConfig default, noted
    assert "max_position_embeddings 2048" in spec.notes


# Parameter counts from the formula, checked against the exact counts of the built-in specs.
# Each dict contains the public config.json values the formula reads.
FORMULA_CASES = [
    # Untied Llama: worked in test_llama3_8b_params_from_formula.
    ("llama3-8b", {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "num_attention_heads": 32,
                   "num_key_value_heads": 8, "intermediate_size": 14336, "num_hidden_layers": 32}),
    # Tied embeddings (Llama 3.2 1B): 128,256 x 2,048 counted once.
    ("llama3.2-1b", {"model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "num_attention_heads": 32,
                     "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "tie_word_embeddings": True}),
    # Qwen2 adds q, k and v biases: 3,584 + 2 x 512 per layer.
    ("qwen2.5-7b", {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "num_attention_heads": 28,
                    "num_key_value_heads": 4, "intermediate_size": 18944, "num_hidden_layers": 28}),
    # Qwen3 adds per-head q and k norms (2 x 128 per layer).
    ("qwen3-8b", {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096, "num_attention_heads": 32,
                  "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288, "num_hidden_layers": 36}),
    ("qwen3-0.6b", {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 1024, "num_attention_heads": 16,
                    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "num_hidden_layers": 28,
                    "tie_word_embeddings": True}),
    # Mixture of experts: 8 experts of width 14,336 and a router of 4,096 x 8 per layer.
    ("mixtral-8x7b", {"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "num_attention_heads": 32,
                      "num_key_value_heads": 8, "intermediate_size": 14336, "num_hidden_layers": 32,
                      "num_local_experts": 8}),
    ("qwen3-30b-a3b", {"model_type": "qwen3_moe", "vocab_size": 151936, "hidden_size": 2048, "num_attention_heads": 32,
                       "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144, "num_hidden_layers": 48,
                       "num_experts": 128, "moe_intermediate_size": 768, "decoder_sparse_step": 1}),
    # MHA with 96-wide heads (Phi-3 mini).
    ("phi3-mini", {"model_type": "phi3", "vocab_size": 32064, "hidden_size": 3072, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "intermediate_size": 8192, "num_hidden_layers": 32}),
    ("mistral-7b", {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "num_attention_heads": 32,
                    "num_key_value_heads": 8, "intermediate_size": 14336, "num_hidden_layers": 32}),
]  # fmt: skip


@pytest.mark.parametrize(("builtin_id", "config"), FORMULA_CASES)
def test_parameter_formula(builtin_id, config):
    builtin = load_model(builtin_id)
    assert builtin.params_exact
    assert count_parameters(_text_config(config, "config.json")) == builtin.params_total


def test_parameter_formula_declines_unknown_family():
    assert count_parameters(_text_config({"model_type": "jamba"}, "config.json")) is None


def test_no_parameter_source_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="model.safetensors.index.json"):
        load_model(str(model_folder(tmp_path, "jamba-v0.1")))


# ---------------------------------------------------------------------------
# Errors


def test_malformed_json_names_line(tmp_path, cli):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n', encoding="utf-8")
    code, out, err = cli("estimate", "--model", str(folder), "--ctx", "8k")
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {folder / 'config.json'}:3: invalid JSON")
    assert err.count("\n") == 1


def test_missing_field_is_named(tmp_path, cli):
    folder = model_folder(tmp_path, "meta-llama-3-8b", num_hidden_layers=None, max_position_embeddings=None)
    code, _, err = cli("estimate", "--model", str(folder), "--ctx", "8k")
    assert code == 2
    assert "'num_hidden_layers'" in err
    assert "'max_position_embeddings'" in err
    assert err.count("\n") == 1


def test_unknown_model_type_is_named(tmp_path, cli):
    folder = model_folder(tmp_path, "meta-llama-3-8b", model_type="brand_new_arch")
    code, _, err = cli("estimate", "--model", str(folder), "--ctx", "8k")
    assert code == 2
    assert "unsupported model_type 'brand_new_arch'" in err
    assert "Traceback" not in err


def test_missing_model_type(tmp_path):
    with pytest.raises(SpecError, match="missing field 'model_type'"):
        load_model(str(model_folder(tmp_path, "meta-llama-3-8b", model_type=None)))


def test_folder_without_config(tmp_path, cli):
    (tmp_path / "empty-model").mkdir()
    code, _, err = cli("estimate", "--model", str(tmp_path / "empty-model"), "--ctx", "8k")
    assert code == 2
    assert "has no config.json" in err


def test_missing_config_file():
    with pytest.raises(NotFoundError, match="not found"):
        load_model("/nonexistent/folder/config.json")


def test_wrong_field_type(tmp_path):
    with pytest.raises(SpecError, match="'num_key_value_heads'.*expected an integer"):
        load_model(str(model_folder(tmp_path, "meta-llama-3-8b", num_key_value_heads="eight")))


def test_unsupported_quantization(tmp_path):
    with pytest.raises(SpecError, match="quant_method.*'hqq'"):
        load_model(str(model_folder(tmp_path, "meta-llama-3-8b", quantization_config={"quant_method": "hqq"})))


def test_layer_types_length_mismatch(tmp_path):
    with pytest.raises(SpecError, match="lists 3 layers but num_hidden_layers is 24"):
        load_model(str(model_folder(tmp_path, "gpt-oss-20b", 1, layer_types=["full_attention"] * 3)))


def test_missing_dtype(tmp_path):
    with pytest.raises(SpecError, match="torch_dtype"):
        load_model(str(model_folder(tmp_path, "meta-llama-3-8b", torch_dtype=None)))


def test_hf_model_files_beside(tmp_path):
    folder = model_folder(tmp_path, "meta-llama-3-8b", 10)
    files = HfModelFiles.beside(folder / "config.json", "x")
    assert files.index_path == folder / "model.safetensors.index.json"
    assert files.safetensors_path is None


# ---------------------------------------------------------------------------
# kvsize import


def test_import_prints_yaml_that_loads(tmp_path, cli):
    folder = model_folder(tmp_path, "gemma-3-27b-it", 54_000_000_000)
    code, out, err = cli("import", str(folder), "--id", "my-gemma")
    assert code == 0
    assert err == ""
    path = tmp_path / "my-gemma.yaml"
    path.write_text(out, encoding="utf-8")
    reloaded = load_model(str(path))
    assert reloaded.id == "my-gemma"
    assert "layer_pattern: [sliding, sliding, sliding, sliding, sliding, full]" in out
    assert_same_kv(reloaded, load_model("gemma3-27b"))


def test_import_writes_file_and_validates(tmp_path, cli):
    folder = model_folder(tmp_path, "jamba-v0.1", 103_000_000_000)
    target = tmp_path / "specs" / "models"
    target.mkdir(parents=True)
    code, out, err = cli("import", str(folder), "-o", str(target))
    assert code == 0
    assert out == ""
    written = target / "jamba-v0.1.yaml"
    assert f"wrote {written}" in err
    code, out, _ = cli("validate", str(written))
    assert code == 0
    assert out.startswith("ok:")
    assert_same_kv(load_model(str(written)), load_model("jamba-v0.1"))


def test_import_file_name_sets_id(tmp_path, cli):
    folder = model_folder(tmp_path, "meta-llama-3-8b")
    code, _, _ = cli("import", str(folder), "-o", str(tmp_path / "llama-mine.yaml"))
    assert code == 0
    assert load_model(str(tmp_path / "llama-mine.yaml")).id == "llama-mine"
    code, _, err = cli("import", str(folder), "-o", str(tmp_path / "llama-mine.yaml"))
    assert code == 2
    assert "--force" in err


def test_import_rejects_bad_id(tmp_path, cli):
    code, _, err = cli("import", str(model_folder(tmp_path, "meta-llama-3-8b")), "--id", "Bad Id")
    assert code == 2
    assert "invalid value for --id" in err


def test_import_rejects_catalog_name(cli):
    code, _, err = cli("import", "llama3-8b")
    assert code == 2
    assert "cannot import" in err
