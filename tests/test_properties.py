"""Properties of the sizing maths over generated model specs and requests (hypothesis)."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_model
from kvsize.catalog import load_gpu
from kvsize.layers import LatentAttention
from kvsize.precision import parse_precision
from kvsize.sizing import (
    SizingRequest,
    estimate,
    max_context_tokens,
    sequence_kv_bytes,
    valid_tensor_parallel_sizes,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PRECISIONS = ["fp32", "bf16", "fp8", "int8", "int6", "int4", "int3", "int2", "int1"]
ATTENTION_HEADS = 32


@st.composite
def layer_types(draw):
    kind = draw(st.sampled_from(["full", "sliding", "chunked", "mla", "state", "full_kv"]))
    heads = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    head_dim = draw(st.sampled_from([3, 32, 64, 100, 128, 256]))
    window = draw(st.integers(min_value=1, max_value=100_000))
    if kind == "full":
        return f"{{kind: full, num_kv_heads: {heads}, head_dim: {head_dim}}}"
    if kind == "full_kv":
        return f"{{kind: full, num_kv_heads: {heads}, k_head_dim: {head_dim}, v_head_dim: {head_dim // 2 + 1}}}"
    if kind == "sliding":
        return f"{{kind: sliding, num_kv_heads: {heads}, head_dim: {head_dim}, sliding_window: {window}}}"
    if kind == "chunked":
        return f"{{kind: chunked, num_kv_heads: {heads}, head_dim: {head_dim}, attention_chunk_size: {window}}}"
    if kind == "mla":
        rank = draw(st.integers(min_value=1, max_value=1024))
        return f"{{kind: mla, kv_lora_rank: {rank}, qk_rope_head_dim: {draw(st.integers(1, 128))}}}"
    return f"{{kind: state, state_elements: {draw(st.integers(1, 10**6))}}}"


@st.composite
def models(draw):
    types = draw(st.lists(layer_types(), min_size=1, max_size=4))
    names = [f"t{index}" for index in range(len(types))]
    num_layers = draw(st.integers(min_value=1, max_value=96))
    body = f"num_layers: {num_layers}\nlayer_types:\n" + "".join(f"  {name}: {text}\n" for name, text in zip(names, types))
    if len(names) > 1:
        pattern = draw(st.lists(st.sampled_from(names), min_size=1, max_size=8))
        body += f"layer_pattern: [{', '.join(pattern)}]\n"
    return make_model(body, num_attention_heads=ATTENTION_HEADS, max_position_embeddings=10**7)


contexts = st.integers(min_value=1, max_value=10**9)
precisions = st.sampled_from(PRECISIONS).map(parse_precision)


@SETTINGS
@given(models(), contexts, contexts, precisions)
def test_memory_never_decreases_with_context(model, first, second, precision):
    low, high = sorted((first, second))
    assert sequence_kv_bytes(model, precision, low) <= sequence_kv_bytes(model, precision, high)


@SETTINGS
@given(models(), contexts, st.integers(1, 10**6), precisions)
def test_exactly_linear_in_batch(model, context, batch, precision):
    gpu = load_gpu("h100")
    one = estimate(model, gpu, SizingRequest(context_tokens=context, kv_precision=precision))
    many = estimate(model, gpu, SizingRequest(context_tokens=context, batch_size=batch, kv_precision=precision))
    assert many.kv_cache_bytes == batch * one.kv_cache_bytes
    assert many.kv_cache_bytes >= one.kv_cache_bytes


@SETTINGS
@given(models(), contexts)
def test_sliding_layers_never_exceed_window(model, context):
    for layer in model.layer_types.values():
        bound = layer.max_cached_tokens()
        if bound is not None:
            assert layer.cached_tokens(context) <= bound
        assert layer.cached_tokens(context) <= context


@SETTINGS
@given(st.integers(1, 128), st.sampled_from([1, 2, 4, 8, 16, 32, 64]), contexts)
def test_mla_independent_of_heads(rank, heads, context):
    body = f"num_layers: 4\nlayer_types:\n  mla: {{kind: mla, kv_lora_rank: {rank}, qk_rope_head_dim: 64}}\n"
    reference = make_model(body, num_attention_heads=128)
    other = make_model(body, num_attention_heads=heads)
    bf16 = parse_precision("bf16")
    assert sequence_kv_bytes(reference, bf16, context) == sequence_kv_bytes(other, bf16, context)
    assert all(isinstance(layer, LatentAttention) for layer in other.layers)


@SETTINGS
@given(models(), st.integers(0, 10**13), st.integers(1, 64), precisions)
def test_max_context_is_tight(model, budget, batch, precision):
    best = max_context_tokens(model, precision, budget, batch)
    if best is None:
        # Unbounded: the largest context kvsize accepts still fits.
        assert batch * sequence_kv_bytes(model, precision, 2**40) <= budget
        return
    if best > 0:
        assert batch * sequence_kv_bytes(model, precision, best) <= budget
    assert batch * sequence_kv_bytes(model, precision, best + 1) > budget


@SETTINGS
@given(models(), contexts, precisions)
def test_max_batch_is_tight(model, context, precision):
    result = estimate(model, load_gpu("h200"), SizingRequest(context_tokens=context, kv_precision=precision))
    per_sequence = result.sequence_kv_bytes_per_gpu
    if result.kv_budget_bytes_per_gpu < 0:
        assert result.max_batch_size == 0
        return
    assert result.max_batch_size * per_sequence <= result.kv_budget_bytes_per_gpu
    assert (result.max_batch_size + 1) * per_sequence > result.kv_budget_bytes_per_gpu


@SETTINGS
@given(models(), contexts, precisions, st.data())
def test_tensor_parallel_never_shrinks_total(model, context, precision, data):
    tp = data.draw(st.sampled_from(valid_tensor_parallel_sizes(model)))
    unsharded = sequence_kv_bytes(model, precision, context)
    per_rank = sequence_kv_bytes(model, precision, context, tensor_parallel_size=tp)
    # A state split across ranks rounds up per rank, so the sum only grows.
    assert per_rank * tp >= unsharded


@SETTINGS
@given(models(), contexts, st.sampled_from(PRECISIONS), st.sampled_from(PRECISIONS))
def test_lower_precision_never_grows_cache(model, context, first, second):
    wide, narrow = sorted((parse_precision(first), parse_precision(second)), key=lambda p: -p.element_bits)
    assert sequence_kv_bytes(model, narrow, context) <= sequence_kv_bytes(model, wide, context)


_RAW_BYTES = re.compile(r"\(([0-9,]+) bytes\)")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["llama3.1-8b", "gemma3-27b", "deepseek-v3", "jamba-v0.1", "gpt-oss-20b", "mistral-7b"]),
       st.sampled_from(["1k", "32k", "128k"]), st.sampled_from(["1", "3"]), st.sampled_from(["1", "2"]))  # fmt: skip
def test_json_matches_table(cli, model, context, batch, tp):
    args = ["estimate", "-m", model, "--ctx", context, "--batch", batch, "--tp", tp, "--gpu", "b200"]
    _, table, _ = cli(*args)
    _, out, _ = cli(*args, "--json")
    data = json.loads(out)
    raw = [int(text.replace(",", "")) for text in _RAW_BYTES.findall(table)]
    assert data["kv_bytes_per_token"] == raw[0]
    assert data["kv_cache_bytes_per_gpu"] in raw
    assert f"{data['max_batch_size']:,} sequence" in table
