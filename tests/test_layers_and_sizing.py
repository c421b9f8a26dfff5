"""The sizing engine on small specs built in the test, each value worked by hand."""

import pytest

from conftest import make_model
from kvsize.catalog import load_gpu
from kvsize.errors import InvalidInputError, SpecError
from kvsize.precision import parse_precision
from kvsize.sizing import (
    SizingRequest,
    estimate,
    kv_bits_per_token,
    max_context_tokens,
    sequence_kv_bytes,
)
from kvsize.units import GiB

BF16 = parse_precision("bf16")

GQA = """\
num_layers: 32
layer_types:
  attention: {kind: full, num_kv_heads: 8, head_dim: 128}
"""


def test_gqa_bytes_per_token():
    # 32 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes = 131,072.
    model = make_model(GQA)
    assert kv_bits_per_token(model, BF16) == 131072 * 8


def test_mqa_and_mha():
    # MQA: 1 head -> 32 x 1 x 128 x 2 x 2 = 16,384. MHA: 32 heads -> 524,288.
    mqa = make_model("num_layers: 32\nlayer_types:\n  a: {kind: full, num_kv_heads: 1, head_dim: 128}\n")
    mha = make_model("num_layers: 32\nlayer_types:\n  a: {kind: full, num_kv_heads: 32, head_dim: 128}\n")
    assert sequence_kv_bytes(mqa, BF16, 1) == 16384
    assert sequence_kv_bytes(mha, BF16, 1) == 524288


def test_different_k_and_v_head_sizes():
    # 10 layers x 4 heads x (192 + 128) x 2 bytes = 25,600.
    model = make_model("num_layers: 10\nlayer_types:\n  a: {kind: full, num_kv_heads: 4, k_head_dim: 192, v_head_dim: 128}\n")
    assert sequence_kv_bytes(model, BF16, 1) == 25600


def test_mla_latent_has_no_factor_two():
    # 61 layers x (512 + 64) x 2 bytes = 70,272 (DeepSeek-V3 shape).
    model = make_model("num_layers: 61\nlayer_types:\n  mla: {kind: mla, kv_lora_rank: 512, qk_rope_head_dim: 64}\n")
    assert sequence_kv_bytes(model, BF16, 1) == 70272


def test_mla_indexer_adds_per_token_key():
    # (512 + 64 + 128) x 2 bytes = 1,408 per layer.
    model = make_model(
        "num_layers: 1\nlayer_types:\n  mla: {kind: mla, kv_lora_rank: 512, qk_rope_head_dim: 64, indexer_head_dim: 128}\n"
    )
    assert sequence_kv_bytes(model, BF16, 1) == 1408


def test_sliding_window_caps_tokens():
    # Mistral 7B v0.1 shape at 32k: every layer keeps 4096 tokens.
    # 32 x 8 x 128 x 2 x 2 x 4096 = 536,870,912 bytes.
    model = make_model("num_layers: 32\nlayer_types:\n  s: {kind: sliding, num_kv_heads: 8, head_dim: 128, sliding_window: 4096}\n")
    assert sequence_kv_bytes(model, BF16, 32768) == 536870912
    assert sequence_kv_bytes(model, BF16, 1000) == 1000 * 131072


def test_pattern_of_local_and_global_layers():
    # 12 layers, pattern 5 sliding + 1 full: 10 sliding, 2 full (layers 5 and 11).
    model = make_model(
        """\
num_layers: 12
layer_types:
  local: {kind: sliding, num_kv_heads: 1, head_dim: 256, sliding_window: 512}
  global: {kind: full, num_kv_heads: 1, head_dim: 256}
layer_pattern: [local, local, local, local, local, global]
"""
    )
    assert model.layer_counts() == {"local": 10, "global": 2}
    assert model.layer_type_names[5] == "global"
    assert model.layer_type_names[11] == "global"
    # Per layer per token: 1 x 256 x 2 x 2 = 1,024 bytes. At 8192 tokens:
    # 10 x 512 x 1024 + 2 x 8192 x 1024 = 5,242,880 + 16,777,216 = 22,020,096.
    assert sequence_kv_bytes(model, BF16, 8192) == 22020096


def test_explicit_sequence_and_overrides():
    model = make_model(
        """\
num_layers: 4
layer_types:
  a: {kind: full, num_kv_heads: 2, head_dim: 64}
  b: {kind: full, num_kv_heads: 4, head_dim: 64}
layer_sequence: [a, a, a, a]
layer_overrides: {b: [0, 3]}
"""
    )
    assert model.layer_type_names == ("b", "a", "a", "b")
    # Per-layer KV heads: 4 + 2 + 2 + 4 = 12 heads x 64 x 2 x 2 bytes = 3,072.
    assert sequence_kv_bytes(model, BF16, 1) == 3072


def test_chunked_local_caps_at_chunk():
    # Llama 4 shape: 3 of 4 layers chunked (8192), every 4th full. 8 layers -> 6 chunked, 2 full.
    model = make_model(
        """\
num_layers: 8
layer_types:
  chunked: {kind: chunked, num_kv_heads: 8, head_dim: 128, attention_chunk_size: 8192}
  full: {kind: full, num_kv_heads: 8, head_dim: 128}
layer_pattern: [chunked, chunked, chunked, full]
"""
    )
    per_layer_token = 8 * 128 * 2 * 2  # 4,096 bytes
    assert sequence_kv_bytes(model, BF16, 100000) == 6 * 8192 * per_layer_token + 2 * 100000 * per_layer_token


def test_state_layers_are_fixed_per_sequence():
    # 3 state layers of 1,000 elements at bf16 = 6,000 bytes whatever the context,
    # plus 1 full layer of 1 head x 64 x 2 x 2 = 256 bytes per token.
    model = make_model(
        """\
num_layers: 4
layer_types:
  ssm: {kind: state, state_elements: 1000}
  attn: {kind: full, num_kv_heads: 1, head_dim: 64}
layer_pattern: [ssm, ssm, ssm, attn]
"""
    )
    assert sequence_kv_bytes(model, BF16, 1) == 6000 + 256
    assert sequence_kv_bytes(model, BF16, 1000) == 6000 + 256000
    assert kv_bits_per_token(model, BF16) == 256 * 8


def test_state_keeps_its_own_dtype():
    # An fp32 state of 1,000 elements is 4,000 bytes even with an fp8 KV cache.
    model = make_model("num_layers: 1\nlayer_types:\n  ssm: {kind: state, state_elements: 1000, state_dtype: fp32}\n")
    assert sequence_kv_bytes(model, parse_precision("fp8"), 5000) == 4000


def test_shared_layers_store_nothing():
    # 4 layers, the last 2 reuse the first layers' cache: only 2 store KV.
    model = make_model(
        """\
num_layers: 4
layer_types:
  attn: {kind: full, num_kv_heads: 2, head_dim: 128}
  reuse: {kind: shared, reuses: attn}
layer_pattern: [attn, attn, reuse, reuse]
"""
    )
    assert sequence_kv_bytes(model, BF16, 10) == 2 * 10 * (2 * 128 * 2 * 2)


def test_sub_byte_widths_round_once_per_sequence():
    # 1 layer, 1 head, head_dim 3 at int1: 6 bits per token. Three tokens = 18 bits,
    # which occupy 3 bytes; the rounding happens once, not per token.
    model = make_model("num_layers: 1\nlayer_types:\n  a: {kind: full, num_kv_heads: 1, head_dim: 3}\n")
    int1 = parse_precision("int1")
    assert kv_bits_per_token(model, int1) == 6
    assert sequence_kv_bytes(model, int1, 3) == 3
    assert sequence_kv_bytes(model, int1, 4) == 3  # 24 bits


def test_three_bit_cache_is_not_zero():
    # 32 x 8 x 2 vectors x 128 x 3 bits = 196,608 bits = 24,576 bytes per token.
    model = make_model(GQA)
    assert sequence_kv_bytes(model, parse_precision("int3"), 1) == 24576


def test_grouped_int4_overhead_in_cache():
    # int4, group 32, fp16 scale and zero point: a 128-element vector is 640 bits = 80 bytes.
    # 32 layers x 8 heads x 2 vectors x 80 = 40,960 bytes per token.
    model = make_model(GQA)
    assert sequence_kv_bytes(model, parse_precision("int4", 32, True), 1) == 40960


# --- tensor parallelism ------------------------------------------------------


def test_kv_heads_split_across_ranks():
    # 8 KV heads at TP 4: 2 heads per rank -> 32 x 2 x 128 x 2 x 2 = 32,768 per token per GPU.
    model = make_model(GQA)
    assert sequence_kv_bytes(model, BF16, 1, tensor_parallel_size=4) == 32768


def test_kv_heads_replicated_past_head_count():
    # 4 KV heads at TP 8: each rank still stores 1 head -> 32 x 1 x 128 x 4 = 16,384 per GPU,
    # so the total over 8 GPUs (131,072) is twice the unsharded 65,536.
    model = make_model("num_layers: 32\nlayer_types:\n  a: {kind: full, num_kv_heads: 4, head_dim: 128}\n")
    assert sequence_kv_bytes(model, BF16, 1, tensor_parallel_size=8) == 16384


def test_mla_replicated_on_every_rank():
    model = make_model("num_layers: 61\nlayer_types:\n  mla: {kind: mla, kv_lora_rank: 512, qk_rope_head_dim: 64}\n")
    assert sequence_kv_bytes(model, BF16, 1, tensor_parallel_size=8) == 70272


def test_tp_must_divide_heads():
    model = make_model(GQA)
    gpu = load_gpu("h100-sxm")
    with pytest.raises(InvalidInputError, match="tensor-parallel size 3"):
        estimate(model, gpu, SizingRequest(context_tokens=1024, tensor_parallel_size=3))


# --- budget, fit, max context, max batch --------------------------------------


def test_budget_arithmetic_on_h100():
    # H100 SXM reports 85,520,809,984 bytes. x 0.9 = 76,968,728,985.6 -> 76,968,728,985.
    # Weights: 1e9 params x 2 bytes = 2,000,000,000. Reserve 2 GiB = 2,147,483,648.
    # Budget = 76,968,728,985 - 2,000,000,000 - 2,147,483,648 = 72,821,245,337.
    model = make_model(GQA)
    result = estimate(model, load_gpu("h100-sxm"), SizingRequest(context_tokens=8192))
    assert result.usable_memory_bytes == 76968728985
    assert result.weights_bytes == 2_000_000_000
    assert result.kv_budget_bytes_per_gpu == 72821245337
    # One sequence of 8192 tokens: 8192 x 131,072 = 1,073,741,824 (1 GiB). 72,821,245,337 // 1 GiB = 67.
    assert result.kv_cache_bytes_per_gpu == GiB
    assert result.max_batch_size == 67
    # Longest context: 72,821,245,337 // 131,072 = 555,582 tokens (555,582 x 131,072 = 72,821,194,752).
    assert result.max_context_tokens == 555582
    assert result.fits


def test_max_context_is_tight():
    model = make_model(GQA)
    budget = 10 * GiB + 12345
    best = max_context_tokens(model, BF16, budget)
    assert sequence_kv_bytes(model, BF16, best) <= budget
    assert sequence_kv_bytes(model, BF16, best + 1) > budget


def test_max_context_with_batch():
    # 4 sequences share the budget: each gets a quarter.
    model = make_model(GQA)
    assert max_context_tokens(model, BF16, 4 * 131072 * 1000, batch_size=4) == 1000


def test_max_context_unbounded_for_sliding_only():
    model = make_model("num_layers: 32\nlayer_types:\n  s: {kind: sliding, num_kv_heads: 8, head_dim: 128, sliding_window: 4096}\n")
    assert max_context_tokens(model, BF16, GiB) is None
    # With less than a full window of budget, the answer is finite and exact: 1000 tokens.
    assert max_context_tokens(model, BF16, 1000 * 131072) == 1000


def test_max_context_zero_when_nothing_fits():
    model = make_model(GQA)
    assert max_context_tokens(model, BF16, 1000) == 0
    assert max_context_tokens(model, BF16, -5) == 0


def test_weights_that_do_not_fit_are_an_answer():
    model = make_model(GQA, params_total=100_000_000_000)  # 200 GB of bf16 weights
    result = estimate(model, load_gpu("h100-sxm"), SizingRequest(context_tokens=1024))
    assert not result.weights_fit
    assert not result.fits
    assert result.kv_budget_bytes_per_gpu < 0
    assert result.max_batch_size == 0
    assert result.max_context_tokens == 0


def test_weights_split_evenly_across_tp():
    model = make_model(GQA)
    result = estimate(model, load_gpu("h100-sxm"), SizingRequest(context_tokens=1024, tensor_parallel_size=4))
    assert result.weights_bytes_per_gpu == 500_000_000
    assert result.kv_cache_bytes == 4 * result.kv_cache_bytes_per_gpu


def test_context_over_model_limit_warns():
    model = make_model(GQA, max_position_embeddings=4096)
    result = estimate(model, load_gpu("h100-sxm"), SizingRequest(context_tokens=8192))
    assert any("max_position_embeddings" in warning for warning in result.warnings)


@pytest.mark.parametrize(
    ("field", "value"),
    [("context_tokens", 0), ("batch_size", 0), ("reserve_bytes", -1)],
)
def test_invalid_request_rejected(field, value):
    model = make_model(GQA)
    request = SizingRequest(**{"context_tokens": 1024, field: value})
    with pytest.raises(InvalidInputError):
        estimate(model, load_gpu("h100-sxm"), request)


# --- spec validation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_head: 8, head_dim: 128}\n", "num_kv_heads"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 0, head_dim: 128}\n", "positive integer"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8}\n", "head_dim"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128, kv_lora_rank: 512}\n", "unknown field"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: fancy, num_kv_heads: 8, head_dim: 128}\n", "unknown layer kind"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: sliding, num_kv_heads: 8, head_dim: 128, sliding_window: 99999999}\n", "exceeds"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\n  b: {kind: full, num_kv_heads: 8, head_dim: 64}\n", "layer_pattern"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\nlayer_sequence: [a]\n", "lists 1 layers"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\nlayer_overrides: {a: [5]}\n", "outside"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: shared, reuses: b}\n", "reuses"),
        ("num_layers: true\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\n", "positive integer"),
        ("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\nextra_field: 1\n", "unknown field"),
    ],
)
def test_spec_validation_errors(body, message):
    with pytest.raises(SpecError, match=message) as error:
        make_model(body)
    assert "test-model.yaml" in str(error.value)


def test_spec_error_names_line():
    with pytest.raises(SpecError) as error:
        make_model("num_layers: 2\nlayer_types:\n  a: {kind: full, num_kv_heads: -1, head_dim: 128}\n")
    # The base fields take 9 lines, so the layer type is on line 12.
    assert "test-model.yaml:12" in str(error.value)


def test_duplicate_key_rejected():
    with pytest.raises(SpecError, match="duplicate key 'num_layers'"):
        make_model("num_layers: 2\nnum_layers: 3\nlayer_types:\n  a: {kind: full, num_kv_heads: 8, head_dim: 128}\n")


def test_yaml_python_tags_rejected():
    with pytest.raises(SpecError, match="invalid YAML"):
        make_model("num_layers: !!python/object/apply:os.system ['true']\n")
