"""GGUF files: metadata mapped onto specs, weights summed from the tensor table, and the error paths.

The files are built here with the `gguf` package, with llama.cpp's metadata
keys and a few small tensors. The tests skip when the package is absent.
"""

import sys
from pathlib import Path

import pytest

from kvsize.catalog import load_model
from kvsize.errors import KvsizeError, NotFoundError, SpecError
from kvsize.precision import parse_precision
from kvsize.sizing import bits_to_bytes, kv_bits_per_token, sequence_kv_bytes

gguf = pytest.importorskip("gguf", reason="the GGUF tests need the gguf package (pip install '.[test]')")
np = pytest.importorskip("numpy")

Q = gguf.GGMLQuantizationType
BF16 = parse_precision("bf16")

# Two small tensors every test file carries; hand-sized:
# Q4_K stores 256 elements in 144 bytes, so 2 x 256 elements take 2 x 144 = 288 bytes;
# F32 stores 4 bytes an element, so 4 x 8 elements take 128 bytes.
SMALL_TENSORS = [("token_embd.weight", Q.Q4_K, (2, 256)), ("output_norm.weight", Q.F32, (4, 8))]


def write_gguf(path: Path, arch: str, metadata: dict, tensors=SMALL_TENSORS, split_max_tensors: int = 0) -> Path:
    """Write a GGUF file with `metadata` (keys without the architecture prefix) and zero-filled tensors."""
    writer = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    for key, value in metadata.items():
        full_key = key if key.startswith("general.") else f"{arch}.{key}"
        if isinstance(value, list):
            writer.add_array(full_key, value)
        elif isinstance(value, str):
            writer.add_string(full_key, value)
        else:
            writer.add_uint32(full_key, value)
    for name, ggml_type, shape in tensors:
        if ggml_type == Q.F32:
            writer.add_tensor(name, np.zeros(shape, np.float32))
        else:
            block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
            rows, columns = shape
            writer.add_tensor(name, np.zeros((rows, columns // block_size * type_size), np.uint8), raw_dtype=ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


LLAMA3_8B = {
    "block_count": 32, "context_length": 8192, "embedding_length": 4096, "feed_forward_length": 14336,
    "attention.head_count": 32, "attention.head_count_kv": 8, "vocab_size": 128256,
    "general.name": "Meta Llama 3 8B", "general.file_type": 15,
}  # fmt: skip


def test_llama_matches_builtin(tmp_path):
    spec = load_model(str(write_gguf(tmp_path / "Meta-Llama-3-8B.Q4_K_M.gguf", "llama", LLAMA3_8B)))
    builtin = load_model("llama3-8b")
    # 32 layers x 8 KV heads x (128 + 128) x 2 bytes = 131,072; head_dim 4096 / 32 = 128.
    assert bits_to_bytes(kv_bits_per_token(spec, BF16)) == 131072
    assert sequence_kv_bytes(spec, BF16, 8192) == sequence_kv_bytes(builtin, BF16, 8192)
    assert spec.name == "Meta Llama 3 8B"
    assert spec.id == "meta-llama-3-8b.q4_k_m"
    assert spec.path == str(tmp_path / "Meta-Llama-3-8B.Q4_K_M.gguf")


def test_weights_from_tensor_table(tmp_path):
    tensors = [*SMALL_TENSORS, ("blk.0.attn_q.weight", Q.Q8_0, (4, 64))]
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "llama", LLAMA3_8B, tensors)))
    # Q8_0 stores 32 elements in 34 bytes: 256 elements are 8 blocks, 272 bytes.
    # Total 288 + 128 + 272 = 688 bytes for 512 + 32 + 256 = 800 parameters.
    assert spec.weights_bytes == 688
    assert spec.params_total == 800
    assert spec.params_exact is True
    assert spec.weight_dtype == "int4"  # general.file_type 15 is Q4_K_M


@pytest.mark.parametrize(
    ("file_type", "weight_dtype"),
    [(0, "fp32"), (1, "fp16"), (32, "bf16"), (7, "int8"), (15, "int4"), (38, "mxfp4")],
)
def test_file_type_labels(tmp_path, file_type, weight_dtype):
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "llama", {**LLAMA3_8B, "general.file_type": file_type})))
    assert spec.weight_dtype == weight_dtype


def test_per_layer_kv_heads(tmp_path):
    metadata = {**LLAMA3_8B, "block_count": 4, "attention.head_count_kv": [8, 4, 8, 4],
                "attention.key_length": 128, "attention.value_length": 64}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "llama", metadata)))
    # (8 + 4 + 8 + 4) heads x (128 + 64) elements x 2 bytes = 9,216.
    assert bits_to_bytes(kv_bits_per_token(spec, BF16)) == 9216


def test_gemma3_sliding_pattern(tmp_path):
    metadata = {"block_count": 34, "context_length": 131072, "embedding_length": 2560, "attention.head_count": 8,
                "attention.head_count_kv": 4, "attention.key_length": 256, "attention.value_length": 256,
                "attention.sliding_window": 1024}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "gemma-3-4b.gguf", "gemma3", metadata)))
    builtin = load_model("gemma3-4b")
    assert [layer.kind for layer in spec.layers] == [layer.kind for layer in builtin.layers]
    for context in (512, 1024, 50000):
        assert sequence_kv_bytes(spec, BF16, context) == sequence_kv_bytes(builtin, BF16, context)


def test_gemma2_default_window(tmp_path):
    metadata = {"block_count": 42, "context_length": 8192, "embedding_length": 3584, "attention.head_count": 16,
                "attention.head_count_kv": 8, "attention.key_length": 256, "attention.value_length": 256}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "gemma-2-9b.gguf", "gemma2", metadata)))
    # Without the key, llama.cpp uses Gemma 2's 4,096-token window on even layers.
    assert spec.layers[0].sliding_window == 4096
    assert sequence_kv_bytes(spec, BF16, 8192) == sequence_kv_bytes(load_model("gemma2-9b"), BF16, 8192)


def test_sliding_window_pattern_array(tmp_path):
    metadata = {**LLAMA3_8B, "block_count": 3, "attention.sliding_window": 512,
                "attention.sliding_window_pattern": [True, False, True]}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "llama", metadata)))
    assert [layer.kind for layer in spec.layers] == ["sliding", "full", "sliding"]


def test_unknown_window_layout_is_full(tmp_path):
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "llama", {**LLAMA3_8B, "attention.sliding_window": 4096})))
    assert {layer.kind for layer in spec.layers} == {"full"}
    assert "upper bound" in spec.notes


def test_deepseek_mla(tmp_path):
    metadata = {"block_count": 61, "context_length": 163840, "embedding_length": 7168, "attention.head_count": 128,
                "attention.head_count_kv": 1, "attention.key_length": 576, "attention.value_length": 512,
                "attention.key_length_mla": 192, "attention.value_length_mla": 128,
                "attention.kv_lora_rank": 512, "rope.dimension_count": 64}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "DeepSeek-V3.gguf", "deepseek2", metadata)))
    # 61 layers x (512 + 64) latent x 2 bytes = 70,272, as the built-in DeepSeek-V3.
    assert bits_to_bytes(kv_bits_per_token(spec, BF16)) == 70272
    assert kv_bits_per_token(spec, BF16) == kv_bits_per_token(load_model("deepseek-v3"), BF16)


def test_nextn_layers_not_counted(tmp_path):
    metadata = {**LLAMA3_8B, "block_count": 33, "nextn_predict_layers": 1}
    spec = load_model(str(write_gguf(tmp_path / "m.gguf", "glm4moe", metadata)))
    assert spec.num_layers == 32
    assert "multi-token-prediction" in spec.notes


def test_llama4_chunked(tmp_path):
    metadata = {"block_count": 48, "context_length": 10485760, "embedding_length": 5120, "attention.head_count": 40,
                "attention.head_count_kv": 8, "attention.key_length": 128, "attention.value_length": 128}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "scout.gguf", "llama4", metadata)))
    builtin = load_model("llama4-scout")
    assert [layer.kind for layer in spec.layers] == [layer.kind for layer in builtin.layers]
    assert sequence_kv_bytes(spec, BF16, 100000) == sequence_kv_bytes(builtin, BF16, 100000)


def test_jamba_recurrent_layers(tmp_path):
    kv_heads = [8 if index % 8 == 4 else 0 for index in range(32)]
    metadata = {"block_count": 32, "context_length": 262144, "embedding_length": 4096, "attention.head_count": 32,
                "attention.head_count_kv": kv_heads, "ssm.conv_kernel": 4, "ssm.inner_size": 8192,
                "ssm.state_size": 16, "ssm.time_step_rank": 256}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "jamba.gguf", "jamba", metadata)))
    builtin = load_model("jamba-v0.1")
    assert [layer.kind for layer in spec.layers] == [layer.kind for layer in builtin.layers]
    assert kv_bits_per_token(spec, BF16) == kv_bits_per_token(builtin, BF16)
    # Conv 3 x 8192 + SSM 8192 x 16 = 155,648 elements, kept in f32 by llama.cpp: 622,592 bytes a layer.
    state = next(layer for layer in spec.layers if layer.kind == "state")
    assert state.state_elements == 155648
    assert state.state_dtype == "fp32"


def test_gemma3n_shared_layers(tmp_path):
    metadata = {"block_count": 30, "context_length": 32768, "embedding_length": 2048, "attention.head_count": 8,
                "attention.head_count_kv": 2, "attention.key_length": 256, "attention.value_length": 256,
                "attention.sliding_window": 512, "attention.shared_kv_layers": 10}  # fmt: skip
    spec = load_model(str(write_gguf(tmp_path / "gemma-3n-e2b.gguf", "gemma3n", metadata)))
    builtin = load_model("gemma3n-e2b")
    assert [layer.kind for layer in spec.layers] == [layer.kind for layer in builtin.layers]
    assert sequence_kv_bytes(spec, BF16, 32768) == sequence_kv_bytes(builtin, BF16, 32768)


def test_split_files_are_summed(tmp_path):
    write_gguf(tmp_path / "m.gguf", "llama", LLAMA3_8B, split_max_tensors=1)
    spec = load_model(str(tmp_path / "m-00001-of-00002.gguf"))
    # Both shards' tensors: 288 + 128 bytes.
    assert spec.weights_bytes == 416


def test_missing_shard(tmp_path):
    write_gguf(tmp_path / "m.gguf", "llama", LLAMA3_8B, split_max_tensors=1)
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(NotFoundError, match="m-00002-of-00002.gguf"):
        load_model(str(tmp_path / "m-00001-of-00002.gguf"))


def test_missing_key_is_named(tmp_path, cli):
    metadata = {key: value for key, value in LLAMA3_8B.items() if key != "block_count"}
    path = write_gguf(tmp_path / "m.gguf", "llama", metadata)
    code, out, err = cli("estimate", "--model", str(path), "--ctx", "8k")
    assert code == 2
    assert out == ""
    assert "'llama.block_count'" in err
    assert err.count("\n") == 1


def test_unknown_recurrent_architecture(tmp_path):
    metadata = {**LLAMA3_8B, "block_count": 2, "attention.head_count_kv": [8, 0]}
    with pytest.raises(SpecError, match="recurrent"):
        load_model(str(write_gguf(tmp_path / "m.gguf", "somehybrid", metadata)))


def test_not_a_gguf_file(tmp_path, cli):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"this is not a gguf file at all" * 10)
    code, _, err = cli("estimate", "--model", str(path), "--ctx", "8k")
    assert code == 2
    assert err.startswith(f"error: {path}: not a readable GGUF file")


def test_file_without_tensors(tmp_path):
    with pytest.raises(SpecError, match="no tensors"):
        load_model(str(write_gguf(tmp_path / "vocab.gguf", "llama", LLAMA3_8B, tensors=[])))


def test_missing_gguf_file():
    with pytest.raises(NotFoundError, match="not found"):
        load_model("/nonexistent/model.gguf")


def test_without_gguf_package(tmp_path, monkeypatch):
    path = write_gguf(tmp_path / "m.gguf", "llama", LLAMA3_8B)
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(KvsizeError, match=r"pip install 'kvsize\[gguf\]'"):
        load_model(str(path))


def test_vocab_from_tokenizer(tmp_path):
    metadata = {key: value for key, value in LLAMA3_8B.items() if key != "vocab_size"}
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in metadata.items():
        full_key = key if key.startswith("general.") else f"llama.{key}"
        if isinstance(value, str):
            writer.add_string(full_key, value)
        else:
            writer.add_uint32(full_key, value)
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_tensor("output_norm.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert load_model(str(path)).vocab_size == 3


def test_import_gguf(tmp_path, cli):
    path = write_gguf(tmp_path / "m.gguf", "llama", LLAMA3_8B)
    code, out, _ = cli("import", str(path), "--id", "llama3-8b-q4")
    assert code == 0
    assert "weights_bytes: 416" in out
    assert "params_exact: true" in out
