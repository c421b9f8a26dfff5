"""What-if techniques: quantization overheads, token eviction, architecture changes, CPU offload,
and the headline numbers of the papers that introduced them."""

import json
from fractions import Fraction

import pytest

from conftest import make_model
from kvsize.catalog import load_gpu, load_model
from kvsize.errors import InvalidInputError
from kvsize.precision import parse_precision
from kvsize.sizing import SizingRequest, TokenPolicy, estimate, kv_bits_per_token, sequence_kv_bytes
from kvsize.units import GiB
from kvsize.whatif import with_cross_layer_sharing, with_kv_heads, with_sliding_window

BF16 = parse_precision("bf16")

GQA = """\
num_layers: 32
layer_types:
  attention: {kind: full, num_kv_heads: 8, head_dim: 128}
"""

HYBRID = """\
num_layers: 4
layer_types:
  ssm: {kind: state, state_elements: 1000}
  attn: {kind: full, num_kv_heads: 1, head_dim: 64}
  local: {kind: sliding, num_kv_heads: 1, head_dim: 64, sliding_window: 100}
layer_pattern: [ssm, attn, local, attn]
"""


# --- paper reproductions --------------------------------------------------------


def test_deepseek_v2_cuts_kv_by_93_3_percent():
    """DeepSeek-V2 technical report (arXiv 2405.04434): MLA cuts the KV cache by 93.3% against DeepSeek 67B.

    The report compares V2's cache as deployed, about 6 bits per element, with the 67B model at bf16:
    60 layers x 576 x 6 bits = 25,920 bytes against 95 layers x 8 heads x 256 x 2 bytes = 389,120 bytes.
    """
    v2 = load_model("deepseek-v2")
    dense = load_model("deepseek-67b")
    deployed = sequence_kv_bytes(v2, parse_precision("int6"), 1)
    baseline = sequence_kv_bytes(dense, BF16, 1)
    assert deployed == 25920
    assert baseline == 389120
    assert round(100 * (1 - deployed / baseline), 1) == 93.3
    # At equal precision the saving is 1 - 69,120 / 389,120 = 82.2%.
    assert round(100 * (1 - sequence_kv_bytes(v2, BF16, 1) / baseline), 1) == 82.2


def test_kvquant_million_tokens_on_one_a100(cli):
    """KVQuant (Hooper et al., arXiv 2401.18079): LLaMA-7B at 1M tokens with a 2-bit cache on one 80 GB A100.

    Plain 2-bit K and V: 32 layers x 4096 x 2 x 2 bits = 65,536 bytes per token, 64 GiB at 1,048,576
    tokens, which beside 12.55 GiB of fp16 weights fits in 80 GiB with the whole card and no reserve.
    """
    args = ["estimate", "-m", "llama-7b", "--ctx", "1m", "--kv-cache-dtype", "int2", "--gpu", "a100-80gb",
            "--gpu-memory-utilization", "1.0", "--reserve", "0", "--json"]  # fmt: skip
    code, out, _ = cli(*args)
    plain = json.loads(out)
    assert code == 0
    assert plain["kv_cache_bytes"] == 64 * GiB
    assert plain["kv_effective_bits"] == 2.0
    assert plain["fits"] is True

    # 1% outliers kept at 16 bits, each with a 16-bit index, plus a 32-bit offset per row of 4096 values:
    # 2 + 0.01 x 32 + 32 / 4096 = 2.3278 bits per element, 74.49 GiB at 1M tokens: no longer fits.
    _, out, _ = cli(*args, "--kv-outlier-fraction", "0.01")
    sparse = json.loads(out)
    assert sparse["kv_effective_bits"] == pytest.approx(2.3278125, abs=1e-6)
    assert round(sparse["kv_effective_bits"], 2) == 2.33
    assert sparse["fits"] is False
    assert any(name.startswith("KV quantization") for name in sparse["techniques"])


def test_cross_layer_attention_halves_mqa():
    """Cross-Layer Attention (Brandon et al., arXiv 2405.12981): sharing factor 2 on a 20-layer MQA model
    with head dim 128 takes the cache from 10,240 to 5,120 bytes per token; factor 3 leaves 7 caches."""
    model = make_model("num_layers: 20\nlayer_types:\n  attn: {kind: full, num_kv_heads: 1, head_dim: 128}\n",
                       num_attention_heads=16)  # fmt: skip
    assert sequence_kv_bytes(model, BF16, 1) == 10240
    assert sequence_kv_bytes(with_cross_layer_sharing(model, 2), BF16, 1) == 5120
    three = with_cross_layer_sharing(model, 3)
    assert sum(layer.kind == "full" for layer in three.layers) == 7
    assert sequence_kv_bytes(three, BF16, 1) == 7 * 512


def test_llama3_70b_dtypes_side_by_side(cli):
    # 128k tokens: bf16 40 GiB, fp8 20 GiB, int4 with an fp16 scale per 32 values (4.5 bits) 11.25 GiB.
    _, out, _ = cli("compare", "-m", "llama3-70b", "--ctx", "128k", "--kv-cache-dtype", "bf16,fp8,int4",
                    "--kv-group-size", "32", "--tp", "4", "--json")  # fmt: skip
    sizes = {row["kv_cache_dtype"]: row["kv_cache_bytes"] for row in json.loads(out)["rows"]}
    assert sizes == {"bf16": 40 * GiB, "fp8": 21760 * 2**20, "int4": 11520 * 2**20}


# --- quantization ----------------------------------------------------------------


def test_effective_bits_count_every_overhead():
    # int4, group 64 per token, scale and zero point: 4 + 32 / 64 = 4.5 bits; with 2% outliers
    # (32 bits each) 0.64 more; row offsets add 32 bits per 1024-value row (8 heads x 128).
    precision = parse_precision("int4", 64, True, outlier_fraction=Fraction(2, 100))
    model = make_model(GQA)
    elements = 32 * 8 * 256
    bits = kv_bits_per_token(model, precision)
    assert bits == elements * Fraction(514, 100) + 32 * 2 * 32


def test_per_channel_groups_span_tokens():
    # Per-channel int2 with one fp16 scale per 128 tokens: 100 tokens still need one whole group.
    # Each of 32 x 8 x 2 vectors: 100 x 128 x 2 bits + 1 x 128 x 16 bits = 27,648 bits.
    model = make_model(GQA)
    precision = parse_precision("int2", 128, group_axis="channel")
    assert sequence_kv_bytes(model, precision, 100) == 32 * 8 * 2 * 27648 // 8
    # At 128 tokens the group is full: 128 x 128 x 2 + 2,048 = 34,816 bits per vector.
    assert sequence_kv_bytes(model, precision, 128) == 32 * 8 * 2 * 34816 // 8


def test_channel_axis_needs_group(cli):
    code, _, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--kv-cache-dtype", "int2", "--kv-quant-axis", "channel")
    assert code == 2
    assert "--kv-group-size" in err


# --- eviction ---------------------------------------------------------------------


def test_keep_ratio_one_changes_nothing():
    model = make_model(GQA)
    policy = TokenPolicy(keep_ratio=Fraction(1))
    assert sequence_kv_bytes(model, BF16, 5000, policy=policy) == sequence_kv_bytes(model, BF16, 5000)


def test_budget_above_context_changes_nothing():
    model = make_model(GQA)
    assert sequence_kv_bytes(model, BF16, 3000, policy=TokenPolicy(token_budget=4096)) == sequence_kv_bytes(model, BF16, 3000)


def test_keep_ratio_rounds_up():
    # 20% of 1001 tokens is 200.2: 201 tokens stay.
    model = make_model(GQA)
    assert sequence_kv_bytes(model, BF16, 1001, policy=TokenPolicy(keep_ratio=Fraction(1, 5))) == 201 * 131072


def test_budget_with_recent_window():
    # SnapKV-style: 4096 selected tokens plus the last 32 of the prompt.
    model = make_model(GQA)
    policy = TokenPolicy(token_budget=4096, keep_recent_tokens=32)
    assert sequence_kv_bytes(model, BF16, 100000, policy=policy) == 4128 * 131072


def test_eviction_spares_state_and_sliding_layers():
    # Budget 10: the full layers keep 10 tokens; the sliding layer keeps its own 100; the state stays.
    # ssm 1000 x 2 bytes + 2 full layers x 10 x 256 bytes + 1 sliding layer x 100 x 256 bytes.
    model = make_model(HYBRID)
    policy = TokenPolicy(token_budget=10)
    assert sequence_kv_bytes(model, BF16, 5000, policy=policy) == 2000 + 2 * 10 * 256 + 100 * 256


def test_budget_makes_context_unbounded(cli):
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "128k", "--kv-token-budget", "4k", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["kv_cache_bytes"] == 4096 * 131072
    assert data["max_context_tokens"] is None
    assert data["kv_token_budget"] == 4096


def test_ratio_and_budget_conflict(cli):
    code, _, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--kv-keep-ratio", "0.2", "--kv-token-budget", "4k")
    assert code == 2
    assert "conflict" in err


@pytest.mark.parametrize("ratio", ["0", "1.5", "nan", "-0.2", "abc"])
def test_invalid_keep_ratio(cli, ratio):
    code, _, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--kv-keep-ratio", ratio)
    assert code == 2
    assert "--kv-keep-ratio" in err


# --- architecture what-ifs ----------------------------------------------------------


def test_kv_heads_to_mqa():
    # Llama 3.1 8B with one KV head: 32 layers x 1 x 256 x 2 bytes = 16,384 bytes per token.
    model = with_kv_heads(load_model("llama3.1-8b"), 1)
    assert sequence_kv_bytes(model, BF16, 1) == 16384
    assert model.variant == ("1 KV head per attention layer",)


def test_kv_heads_must_divide_heads():
    with pytest.raises(InvalidInputError, match="--kv-heads"):
        with_kv_heads(load_model("llama3.1-8b"), 5)


def test_kv_heads_rejects_mla_only_model():
    with pytest.raises(InvalidInputError, match="no layer with KV heads"):
        with_kv_heads(load_model("deepseek-v3"), 1)


def test_share_factor_above_layer_count_leaves_one_cache():
    model = with_cross_layer_sharing(make_model(GQA), 100)
    assert sum(layer.kind == "full" for layer in model.layers) == 1
    assert sequence_kv_bytes(model, BF16, 1) == 4096


def test_share_skips_state_layers():
    # Attention layers 1, 2, 3 with factor 2: layers 1 and 3 keep caches, 2 shares; the state stays.
    model = with_cross_layer_sharing(make_model(HYBRID), 2)
    assert [layer.kind for layer in model.layers] == ["state", "full", "shared", "full"]


def test_sliding_window_all_and_alternate():
    base = make_model(GQA)
    everywhere = with_sliding_window(base, 1024, "all")
    assert sequence_kv_bytes(everywhere, BF16, 8192) == 32 * 1024 * 4096
    alternate = with_sliding_window(base, 1024, "alternate")
    kinds = [layer.kind for layer in alternate.layers]
    assert kinds[:4] == ["sliding", "full", "sliding", "full"]
    assert sequence_kv_bytes(alternate, BF16, 8192) == 16 * 1024 * 4096 + 16 * 8192 * 4096


def test_whatif_named_in_json(cli):
    _, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--cross-layer-share", "2", "--kv-heads", "4", "--json")
    data = json.loads(out)
    # 16 caches x 4 heads x 256 x 2 bytes = 32,768 bytes per token.
    assert data["kv_bytes_per_token"] == 32768
    assert data["techniques"] == [
        "architecture: 4 KV heads per attention layer",
        "architecture: cross-layer KV sharing, factor 2",
    ]


# --- CPU offload ----------------------------------------------------------------------


def test_cpu_offload_places_overflow_on_host():
    # Llama 3.1 8B on an L40S: the GPU budget fits 192,773 tokens of one sequence
    # (25,267,213,107 bytes // 131,072). With 256 GiB of host memory a 1M-token sequence fits.
    model, gpu = load_model("llama3.1-8b"), load_gpu("l40s")
    gpu_only = estimate(model, gpu, SizingRequest(context_tokens=1048576))
    offloaded = estimate(model, gpu, SizingRequest(context_tokens=1048576, cpu_offload_bytes=256 * GiB))
    assert not gpu_only.fits
    assert offloaded.fits
    assert offloaded.gpu_tokens_per_sequence == gpu_only.max_context_tokens
    assert offloaded.gpu_tokens_per_sequence + offloaded.host_tokens_per_sequence == 1048576
    assert offloaded.kv_on_gpu_bytes_per_gpu == gpu_only.kv_budget_bytes_per_gpu
    assert offloaded.kv_on_host_bytes == 128 * GiB - gpu_only.kv_budget_bytes_per_gpu
    # Capacity = budget + 256 GiB: max context (budget + 256 GiB) // 131,072.
    assert offloaded.max_context_tokens == (gpu_only.kv_budget_bytes_per_gpu + 256 * GiB) // 131072
    assert offloaded.max_context_tokens_gpu_only == gpu_only.max_context_tokens
    assert any("latency" in warning for warning in offloaded.warnings)


def test_cpu_offload_does_not_hold_weights():
    result = estimate(load_model("llama3.1-70b"), load_gpu("l40s"),
                      SizingRequest(context_tokens=1024, cpu_offload_bytes=1024 * GiB))  # fmt: skip
    assert not result.weights_fit
    assert not result.fits


def test_cpu_offload_split_across_tp():
    result = estimate(load_model("llama3.1-70b"), load_gpu("h100"),
                      SizingRequest(context_tokens=1048576, tensor_parallel_size=4, cpu_offload_bytes=400 * GiB))  # fmt: skip
    # Each of 4 ranks gets 100 GiB of host memory for its 80 GiB share of a 1M-token cache.
    assert result.fits
    assert result.kv_cache_bytes_per_gpu == 80 * GiB
