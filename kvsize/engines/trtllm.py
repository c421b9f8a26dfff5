"""TensorRT-LLM's KV-cache rules: a fraction of the memory still free, cut into blocks.

Read from NVIDIA/TensorRT-LLM: cpp/include/tensorrt_llm/batch_manager/kvCacheConfig.h
(kDefaultGpuMemFraction = 0.9), tensorrt_llm/llmapi/llm_args.py (KvCacheConfig,
tokens_per_block = 32), and the startup lines of 0.8 to 0.13 ("Memory usage when
calculating max tokens in paged kv cache: total: ..., available: ...", "Number
of blocks in KV cache primary pool", "Number of tokens per block", "Allocated ...
for max tokens in paged KV cache (N)").

- Budget: `free_gpu_memory_fraction` (0.9 by default) of the memory free
  after the engine or weights, the execution context and the runtime buffers
  are allocated.
- Pool: whole blocks of `tokens_per_block` tokens (32 by default in the LLM
  API; the trtllm-build engines of the 0.12 and 0.13 logs printed 64). Each
  block spans every layer of the rank, so a sliding-window layer costs as much
  per block as a full one. The reported capacity therefore gets no
  sliding-window discount.
- Tensor parallelism stores max(1, kv_heads / tp) heads per rank; pipeline
  parallelism stores only the stage's layers.
"""

from __future__ import annotations

from decimal import Decimal

from kvsize.engines.common import (
    CUDA_CONTEXT_BYTES,
    BudgetTerm,
    EngineEstimate,
    EngineSettings,
    activation_peak_bytes,
    apply_fraction,
    check_fraction,
    engine_visible_memory,
    is_attention,
    kv_precision_for,
    non_torch_bytes,
    pipeline_stages,
    plain_layer_bytes_per_token,
    pool_verdict,
    requests_per_dp_rank,
    weights_per_gpu,
)
from kvsize.sizing import Estimate
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import format_bytes

DEFAULT_FREE_GPU_MEMORY_FRACTION = Decimal("0.9")
DEFAULT_TOKENS_PER_BLOCK = 32
DEFAULT_MAX_NUM_TOKENS = 8192  # trtllm-serve's default max_num_tokens


def _estimate_free_memory(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate,
                          terms: list[BudgetTerm]) -> int:  # fmt: skip
    """Estimate the memory still free after TensorRT-LLM loads the model, appending each term."""
    tp = settings.tensor_parallel_size
    total, driver_term = engine_visible_memory(gpu, settings)
    terms.append(BudgetTerm("GPU memory", total + (driver_term.bytes if driver_term else 0), 1,
                            gpu.memory_reported_estimated))  # fmt: skip
    if driver_term is not None:
        terms.append(driver_term)
    terms.append(BudgetTerm("CUDA context", CUDA_CONTEXT_BYTES, -1, True))
    weights, weights_estimated = weights_per_gpu(base, settings)
    terms.append(BudgetTerm("weights", weights, -1, weights_estimated))
    num_tokens = settings.max_num_batched_tokens or DEFAULT_MAX_NUM_TOKENS
    num_seqs = settings.max_num_seqs or 256
    activation = activation_peak_bytes(model, num_tokens, num_seqs, tp)
    terms.append(BudgetTerm("activations and runtime buffers", activation, -1, True,
                            f"{num_tokens:,} tokens per iteration"))  # fmt: skip
    communication = non_torch_bytes(tp * settings.pipeline_parallel_size)
    terms.append(BudgetTerm("communication buffers", communication, -1, True))
    return total - CUDA_CONTEXT_BYTES - weights - activation - communication


def estimate_trtllm(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate) -> EngineEstimate:
    """Predict the KV pool TensorRT-LLM allocates for `model` on `gpu` with `settings`."""
    check_fraction(settings.free_gpu_memory_fraction, "--free-gpu-memory-fraction")
    precision = kv_precision_for(model, settings.kv_cache_dtype, "trtllm")
    tp = settings.tensor_parallel_size
    tokens_per_block = settings.block_size or DEFAULT_TOKENS_PER_BLOCK
    max_model_len = settings.max_model_len or settings.context_tokens
    stages = pipeline_stages(model, settings.pipeline_parallel_size)

    # Every attention layer is sized for every token of the block, windows included.
    bytes_per_token = max(
        sum(plain_layer_bytes_per_token(model.layers[index], precision, tp)
            for index in stage if is_attention(model.layers[index]))
        for stage in stages
    )  # fmt: skip

    terms: list[BudgetTerm] = []
    fraction = settings.free_gpu_memory_fraction or DEFAULT_FREE_GPU_MEMORY_FRACTION
    free_memory = None
    if settings.kv_cache_memory_bytes is not None:
        kv_memory = settings.kv_cache_memory_bytes
        terms.append(BudgetTerm("KV cache memory (given)", kv_memory, 1, False))
        is_estimate = False
    else:
        if settings.free_memory_after_load_bytes is not None:
            free_memory = settings.free_memory_after_load_bytes
            terms.append(BudgetTerm("free memory after load (given)", free_memory, 1, False))
            is_estimate = False
        else:
            free_memory = _estimate_free_memory(model, gpu, settings, base, terms)
            is_estimate = True
        kv_memory = apply_fraction(max(free_memory, 0), fraction)
        terms.append(BudgetTerm(f"x free_gpu_memory_fraction {fraction}", kv_memory, 0, False, "KV cache memory"))

    block_bytes = tokens_per_block * bytes_per_token
    num_blocks = kv_memory // block_bytes if block_bytes else 0
    tokens = num_blocks * tokens_per_block
    blocks_per_request = -(-max_model_len // tokens_per_block)
    fits, max_requests, reason = pool_verdict(settings, max_model_len, blocks_per_request, num_blocks,
                                      f"blocks of {tokens_per_block} tokens")  # fmt: skip
    if kv_memory <= 0:
        fits = False
        reason = "no: no memory is left for the KV cache"
        if free_memory is not None and free_memory < 0:
            reason = f"no: the weights and overhead exceed the GPU's memory by {format_bytes(-free_memory)} per GPU"
    notes = []
    if any(getattr(layer, "sliding_window", None) for layer in model.layers):
        notes.append("sliding-window layers are sized like full layers in each block, so the "
                     "reported token capacity gets no window discount")  # fmt: skip
    return EngineEstimate(
        engine="trtllm",
        rules="TensorRT-LLM",
        base=base,
        settings=settings,
        kv_cache_dtype=precision.name,
        kv_bytes_per_token_per_gpu=bytes_per_token,
        block_size=tokens_per_block,
        max_model_len=max_model_len,
        budget_terms=tuple(terms),
        kv_cache_memory_bytes=kv_memory,
        kv_cache_memory_is_estimate=is_estimate,
        kv_cache_tokens=tokens,
        max_concurrency=num_blocks / blocks_per_request,
        num_gpu_blocks=num_blocks,
        fits=fits,
        details=(("block", f"{tokens_per_block} tokens x {bytes_per_token:,} bytes = {block_bytes:,} bytes"),),
        notes=tuple(notes),
        requests_per_dp_rank=requests_per_dp_rank(settings),
        max_requests_per_dp_rank=max_requests,
        fit_reason=reason,
    )


__all__ = ["estimate_trtllm"]
