"""SGLang's KV-cache rules: the static memory fraction, the token pool and its pages.

Read from SGLang's own source (sgl-project/sglang, 2025-2026 main):
python/sglang/srt/model_executor/model_runner_kv_cache_mixin.py
(get_cell_size_per_token, profile_max_num_token, calculate_mla_kv_cache_dim,
_resolve_hybrid_swa_tokens), the older model_runner.py profile_max_num_token, and
python/sglang/srt/server_args.py (page_size 1 and swa_full_tokens_ratio 0.8 by default).

- Budget: `rest = free after weights - free before weights x (1 -
  mem_fraction_static)`. With free-after = free-before - weights that is
  `free before weights x mem_fraction_static - weights`: the fraction applies
  to the memory free when the server starts, not to the GPU's total.
- Token pool: `int(rest) // cell_size`, rounded down to whole pages
  (`--page-size`, 1 token by default). cell_size sums every layer on the
  rank: KV heads per attention-TP rank x (head_dim + v_head_dim) x dtype
  bytes, or `(kv_lora_rank + qk_rope_head_dim) x dtype bytes` for MLA, which
  every rank stores whole.
- FP4 caches store half a byte per value plus one 1-byte scale per 16 values.
- DeepSeek V3.2 (NSA) adds an indexer key of 128 fp8 values and a 4-byte
  scale, 132 bytes per layer. Its fp8 latent is stored as 656 bytes per layer.
- Data-parallel attention divides the attention TP size by the DP size, so
  each attention rank stores `kv_heads / (tp / dp)` heads.
- Hybrid sliding-window models split the memory into a full pool and a
  window pool with `swa_tokens = swa_full_tokens_ratio x full_tokens`
  (0.8 by default); "#tokens" reports the full pool.
"""

from __future__ import annotations

from decimal import Decimal

from kvsize.engines.common import (
    CUDA_CONTEXT_BYTES,
    BudgetTerm,
    EngineEstimate,
    EngineSettings,
    apply_fraction,
    check_fraction,
    engine_visible_memory,
    is_attention,
    kv_precision_for,
    pipeline_stages,
    plain_layer_bytes_per_token,
    pool_verdict,
    requests_per_dp_rank,
    weights_per_gpu,
)
from kvsize.engines.vllm import INDEXER_QUANT_BLOCK
from kvsize.errors import InvalidInputError
from kvsize.layers import LatentAttention, SlidingWindowAttention
from kvsize.precision import Precision
from kvsize.sizing import Estimate, bits_to_bytes
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import format_bytes

# SGLang derives its default mem_fraction_static from the GPU's memory and the
# parallel sizes; 0.88 is an estimate of that choice for a large GPU at TP 1.
DEFAULT_MEM_FRACTION_STATIC = Decimal("0.88")
DEFAULT_SWA_FULL_TOKENS_RATIO = Decimal("0.8")
DEFAULT_PAGE_SIZE = 1


def attention_tp_size(settings: EngineSettings) -> int:
    """Return the tensor-parallel size attention is split over: tp, or tp / dp with DP attention."""
    tp = settings.tensor_parallel_size
    dp = settings.data_parallel_size
    if not settings.enable_dp_attention or dp == 1:
        return tp
    if tp % dp:
        raise InvalidInputError(f"invalid data-parallel size {dp}: DP attention needs it to divide the TP size {tp}")
    return tp // dp


def mla_cell_bytes(layer: LatentAttention, precision: Precision) -> tuple[int, int]:
    """Return (bytes SGLang budgets, bytes its pool stores) per token for one MLA layer.

    The budget counts the latent at the cache dtype plus DeepSeek V3.2's
    132-byte indexer key. The pool stores an fp8 V3.2 latent as 656 bytes:
    512 fp8 values, four fp32 scales and the 64-value RoPE key in bf16.
    """
    latent = bits_to_bytes(precision.vector_bits(layer.kv_lora_rank + layer.qk_rope_head_dim))
    if not layer.indexer_head_dim:
        return latent, latent
    indexer = layer.indexer_head_dim + layer.indexer_head_dim // INDEXER_QUANT_BLOCK * 4
    stored = latent
    if precision.element_bits == 8 and precision.group_size is None:
        stored = layer.kv_lora_rank + layer.kv_lora_rank // INDEXER_QUANT_BLOCK * 4 + layer.qk_rope_head_dim * 2
    return latent + indexer, stored


def estimate_sglang(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate) -> EngineEstimate:
    """Predict the KV pool SGLang allocates for `model` on `gpu` with `settings`."""
    check_fraction(settings.mem_fraction_static, "--mem-fraction-static")
    precision = kv_precision_for(model, settings.kv_cache_dtype, "sglang")
    attn_tp = attention_tp_size(settings)
    page_size = settings.block_size or DEFAULT_PAGE_SIZE
    max_model_len = settings.max_model_len or settings.context_tokens
    stages = pipeline_stages(model, settings.pipeline_parallel_size)

    # cell size per stage, split into full and sliding layers for the hybrid SWA pools.
    notes: list[str] = []
    worst = None
    for stage in stages:
        full_bytes = swa_bytes = stored_bytes = 0
        num_swa = 0
        for index in stage:
            layer = model.layers[index]
            if not is_attention(layer):
                continue
            if isinstance(layer, LatentAttention):
                budgeted, stored = mla_cell_bytes(layer, precision)
                full_bytes += budgeted
                stored_bytes += stored
            elif isinstance(layer, SlidingWindowAttention):
                swa_bytes += plain_layer_bytes_per_token(layer, precision, attn_tp)
                num_swa += 1
            else:
                full_bytes += plain_layer_bytes_per_token(layer, precision, attn_tp)
        stage_cell = (full_bytes + swa_bytes, full_bytes, swa_bytes, stored_bytes, len(stage), num_swa)
        if worst is None or stage_cell[0] > worst[0]:
            worst = stage_cell
    assert worst is not None
    cell_size, full_bytes, swa_bytes, stored_bytes, num_layers, num_swa = worst
    if any(layer.kind == "state" for layer in model.layers):
        notes.append("SGLang gives Mamba/linear-attention state a share of the memory set by "
                     "--mamba-full-memory-ratio; kvsize counts only the attention layers here")  # fmt: skip

    terms: list[BudgetTerm] = []
    if settings.kv_cache_memory_bytes is not None:
        rest = settings.kv_cache_memory_bytes
        terms.append(BudgetTerm("KV cache memory (given)", rest, 1, False))
        is_estimate = False
    else:
        fraction = settings.mem_fraction_static or DEFAULT_MEM_FRACTION_STATIC
        if settings.free_memory_before_weights_bytes is not None:
            free_before = settings.free_memory_before_weights_bytes
            terms.append(BudgetTerm("free memory before weights", free_before, 1, False))
        else:
            total, driver_term = engine_visible_memory(gpu, settings)
            terms.append(BudgetTerm("GPU memory", total + (driver_term.bytes if driver_term else 0), 1,
                                    gpu.memory_reported_estimated))  # fmt: skip
            if driver_term is not None:
                terms.append(driver_term)
            terms.append(BudgetTerm("CUDA context", CUDA_CONTEXT_BYTES, -1, True))
            free_before = total - CUDA_CONTEXT_BYTES
        static = apply_fraction(free_before, fraction)
        estimated_fraction = settings.mem_fraction_static is None
        terms.append(BudgetTerm(f"x mem_fraction_static {fraction}", static, 0, estimated_fraction,
                                "static memory for weights and KV cache"))  # fmt: skip
        weights, weights_estimated = weights_per_gpu(base, settings)
        terms.append(BudgetTerm("weights", weights, -1, weights_estimated))
        rest = static - weights
        is_estimate = True

    tokens = max(rest, 0) // cell_size if cell_size else 0
    swa_tokens = None
    if swa_bytes and full_bytes:
        ratio = settings.swa_full_tokens_ratio or DEFAULT_SWA_FULL_TOKENS_RATIO
        total_memory = tokens * cell_size
        tokens = int(Decimal(total_memory) / (Decimal(full_bytes) + ratio * swa_bytes))
        tokens = tokens // page_size * page_size
        swa_tokens = int(tokens * ratio) // page_size * page_size
        notes.append(f"hybrid sliding window: {num_swa} window layers get their own pool of "
                     f"{swa_tokens:,} tokens (swa_full_tokens_ratio {ratio})")  # fmt: skip
    tokens = tokens // page_size * page_size
    details = [
        ("cell size", f"{cell_size:,} bytes per token over {num_layers} layers, attention TP {attn_tp}"),
    ]
    if stored_bytes and stored_bytes != full_bytes:
        stored_total = (tokens + page_size) * stored_bytes
        details.append(("KV size (latent only)", f"{stored_total:,} bytes, the figure SGLang prints"))
    if settings.pipeline_parallel_size > 1:
        details.append(("pipeline stages", f"{[len(stage) for stage in stages]} layers"))
    if settings.data_parallel_size > 1:
        layout = ("DP attention ranks inside the TP group" if settings.enable_dp_attention
                  else "replicas of TP x PP")  # fmt: skip
        details.append(("data parallel", f"{settings.data_parallel_size:,} {layout}, each with this pool"))

    # A request takes whole pages of its tokens in the full pool.
    per_request = -(-max_model_len // page_size) * page_size
    fits, max_requests, reason = pool_verdict(settings, max_model_len, per_request, tokens, "tokens")
    if rest <= 0:
        fits = False
        reason = (f"no: the weights exceed the static memory SGLang keeps by {format_bytes(-rest)} per GPU; "
                  "raise --mem-fraction-static or use more GPUs")  # fmt: skip

    return EngineEstimate(
        engine="sglang",
        rules="SGLang",
        base=base,
        settings=settings,
        kv_cache_dtype=precision.name,
        kv_bytes_per_token_per_gpu=cell_size,
        block_size=page_size,
        max_model_len=max_model_len,
        budget_terms=tuple(terms),
        kv_cache_memory_bytes=rest,
        kv_cache_memory_is_estimate=is_estimate,
        kv_cache_tokens=tokens,
        max_concurrency=tokens / max_model_len,
        num_gpu_blocks=tokens // page_size if page_size > 1 else None,
        sliding_window_tokens=swa_tokens,
        fits=fits,
        details=tuple(details),
        notes=tuple(notes),
        requests_per_dp_rank=requests_per_dp_rank(settings),
        max_requests_per_dp_rank=max_requests,
        fit_reason=reason,
    )


def kv_size_bytes(model: ModelSpec, settings: EngineSettings, tokens: int) -> int:
    """Return the "KV size" SGLang prints for an MLA pool of `tokens`: one page more, latent only."""
    precision = kv_precision_for(model, settings.kv_cache_dtype)
    page_size = settings.block_size or DEFAULT_PAGE_SIZE
    stored = 0
    for layer in model.layers:
        if isinstance(layer, LatentAttention):
            stored += mla_cell_bytes(layer, precision)[1]
    return (tokens + page_size) * stored


__all__ = ["attention_tp_size", "estimate_sglang", "kv_size_bytes", "mla_cell_bytes"]
