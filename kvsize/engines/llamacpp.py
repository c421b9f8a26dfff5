"""llama.cpp's KV-cache rules: a fixed number of cells, padded, with a separate window cache.

Read from ggml-org/llama.cpp src/llama-kv-cache.cpp (get_padding: 256 cells
with flash attention, 32 without), src/llama-kv-cache-iswa.cpp (the sliding
window cache keeps `min(n_ctx, pad(n_swa x n_seq + n_ubatch))` cells, or
n_ctx with --swa-full) and the log line `llama_kv_cache: size = ... MiB (N
cells, L layers, S/1 seqs), K (f16): ..., V (f16): ...`, 2025 builds.

llama.cpp has no memory fraction: the user sets the context (`-c`, shared by
`-np` parallel sequences) and the cache is allocated whole at start-up, so
kvsize reports whether it fits next to the weights. Quantized cache types
store blocks of 32 values with fp16 scales: q8_0 is 34 bytes per block, q4_0
18, q4_1 20, q5_0 22, q5_1 24, iq4_nl 18.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvsize.engines.common import (
    CUDA_CONTEXT_BYTES,
    BudgetTerm,
    EngineEstimate,
    EngineSettings,
    activation_peak_bytes,
    engine_visible_memory,
    pipeline_stages,
    weights_per_gpu,
)
from kvsize.errors import InvalidInputError
from kvsize.layers import LatentAttention, RecurrentState, SlidingWindowAttention
from kvsize.precision import Precision, parse_precision
from kvsize.sizing import MAX_BATCH_SIZE, Estimate, bits_to_bytes
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import format_bytes

DEFAULT_UBATCH_SIZE = 512
FLASH_ATTN_PADDING = 256
DEFAULT_PADDING = 32

# ggml block types: (bits per value, values per block, bits of scale and minimum per block).
GGML_CACHE_TYPES = {
    "q8_0": (8, 32, 16),
    "q4_0": (4, 32, 16),
    "q4_1": (4, 32, 32),
    "q5_0": (5, 32, 16),
    "q5_1": (5, 32, 32),
    "iq4_nl": (4, 32, 16),
}
CACHE_TYPE_HELP = "f16, bf16, f32, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl"


# llama.cpp's float cache types, with the kvsize spellings of the same formats.
_FLOAT_CACHE_TYPES = {"f16": "fp16", "fp16": "fp16", "float16": "fp16", "auto": "fp16",
                      "bf16": "bf16", "bfloat16": "bf16", "f32": "fp32", "fp32": "fp32", "float32": "fp32"}  # fmt: skip


def parse_cache_type(name: str | None) -> Precision:
    """Return the precision of a llama.cpp `--cache-type-k` value (f16 when not given).

    Only the types llama.cpp's --cache-type-k accepts are taken: it has no
    fp8, int4 or nvfp4 cache.
    """
    cleaned = (name or "f16").strip().lower()
    if cleaned in GGML_CACHE_TYPES:
        bits, values, overhead = GGML_CACHE_TYPES[cleaned]
        return Precision(cleaned, bits, values, overhead)
    if cleaned in _FLOAT_CACHE_TYPES:
        return parse_precision(_FLOAT_CACHE_TYPES[cleaned])
    raise InvalidInputError(f"invalid KV cache dtype {name!r} for llama.cpp: its cache types are {CACHE_TYPE_HELP}")


def pad_cells(cells: int, padding: int) -> int:
    """Round a cell count up to the padding the attention kernels need."""
    return -(-cells // padding) * padding


def layer_bytes_per_cell(layer: object, precision: Precision) -> int:
    """Return the bytes one cell costs in one layer.

    llama.cpp caches MLA as a K latent of kv_lora_rank + qk_rope_head_dim
    values and a V latent of kv_lora_rank values (builds from April 2025 on).
    """
    if isinstance(layer, LatentAttention):
        key = precision.vector_bits(layer.kv_lora_rank + layer.qk_rope_head_dim)
        value = precision.vector_bits(layer.kv_lora_rank)
        return bits_to_bytes(key + value)
    if isinstance(layer, (RecurrentState,)) or not hasattr(layer, "num_kv_heads"):
        return 0
    return bits_to_bytes(layer.bits_per_token(precision, 1))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Cache:
    cells: int
    kv_bytes: int  # on the GPU with the most, over its layers
    bytes_per_cell: int  # on that GPU, every layer counted as full
    window_cells: int | None


def _cache_for(model: ModelSpec, settings: EngineSettings, precision: Precision, n_seq: int) -> _Cache:
    """Size the cache llama.cpp allocates for `n_seq` sequences of `context_tokens` each."""
    ubatch = settings.ubatch_size or DEFAULT_UBATCH_SIZE
    padding = FLASH_ATTN_PADDING if settings.flash_attn else DEFAULT_PADDING
    cells = pad_cells(settings.context_tokens * n_seq, padding)
    window = None
    kv_bytes = 0
    per_cell = 0
    for stage in pipeline_stages(model, settings.pipeline_parallel_size):
        stage_bytes = 0
        stage_per_cell = 0
        for index in stage:
            layer = model.layers[index]
            layer_bytes = layer_bytes_per_cell(layer, precision)
            stage_per_cell += layer_bytes
            layer_cells = cells
            if isinstance(layer, SlidingWindowAttention) and not settings.swa_full:
                layer_cells = min(cells, pad_cells(layer.sliding_window * n_seq + ubatch, padding))
                window = layer_cells
            stage_bytes += layer_cells * layer_bytes
            if isinstance(layer, RecurrentState):
                stage_bytes += n_seq * bits_to_bytes(layer.state_bits(1))
        if stage_bytes > kv_bytes:
            kv_bytes, per_cell = stage_bytes, stage_per_cell
    return _Cache(cells, kv_bytes, per_cell, window)


def _max_sequences(model: ModelSpec, settings: EngineSettings, precision: Precision, room: int) -> int:
    """Return the most sequences of `context_tokens` whose cache fits in `room` bytes (0 when one does not)."""
    if room <= 0 or _cache_for(model, settings, precision, 1).kv_bytes > room:
        return 0
    low, high = 1, 2
    while high <= MAX_BATCH_SIZE and _cache_for(model, settings, precision, high).kv_bytes <= room:
        low, high = high, high * 2
    high = min(high, MAX_BATCH_SIZE + 1)
    # The cache grows with the sequence count, so bisect between a count that fits and one that does not.
    while high - low > 1:
        middle = (low + high) // 2
        if _cache_for(model, settings, precision, middle).kv_bytes <= room:
            low = middle
        else:
            high = middle
    return low


def estimate_llamacpp(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate) -> EngineEstimate:
    """Size llama.cpp's KV cache for `batch_size` sequences of `context_tokens` and check it fits."""
    if settings.tensor_parallel_size != 1:
        raise InvalidInputError("llama.cpp splits layers across GPUs rather than heads; use "
                                "--pipeline-parallel-size for the number of GPUs")  # fmt: skip
    precision = parse_cache_type(settings.kv_cache_dtype)
    n_seq = settings.batch_size
    ubatch = settings.ubatch_size or DEFAULT_UBATCH_SIZE
    padding = FLASH_ATTN_PADDING if settings.flash_attn else DEFAULT_PADDING
    cache = _cache_for(model, settings, precision, n_seq)
    cells, kv_bytes, per_cell, window = cache.cells, cache.kv_bytes, cache.bytes_per_cell, cache.window_cells

    total, driver_term = engine_visible_memory(gpu, settings)
    terms = [BudgetTerm("GPU memory", total + (driver_term.bytes if driver_term else 0), 1, gpu.memory_reported_estimated)]
    if driver_term is not None:
        terms.append(driver_term)
    terms.append(BudgetTerm("CUDA context", CUDA_CONTEXT_BYTES, -1, True))
    weights, weights_estimated = weights_per_gpu(base, settings)
    terms.append(BudgetTerm("weights", weights, -1, weights_estimated))
    compute = activation_peak_bytes(model, ubatch, ubatch, 1)
    terms.append(BudgetTerm("compute buffer", compute, -1, True, f"n_ubatch {ubatch}"))
    room = total - CUDA_CONTEXT_BYTES - weights - compute
    room_origin = "left after the weights, CUDA context and compute buffer"
    if settings.kv_cache_memory_bytes is not None:
        # Memory the user knows is free for the cache replaces the estimate of the room left.
        terms = [BudgetTerm("memory free for the KV cache (given)", settings.kv_cache_memory_bytes, 1, False)]
        room = settings.kv_cache_memory_bytes
        room_origin = "given as free for it"
    terms.append(BudgetTerm("KV cache", kv_bytes, -1, False, f"{cells:,} cells"))

    plural = "sequence" if n_seq == 1 else "sequences"
    verb = "takes" if n_seq == 1 else "take"
    subject = f"{n_seq:,} {plural} of {settings.context_tokens:,} tokens {verb} {format_bytes(kv_bytes)} ({cells:,} cells)"
    fits = kv_bytes <= room
    max_requests = _max_sequences(model, settings, precision, room)
    if fits:
        reason = f"yes: {subject} of the {format_bytes(room)} {room_origin}"
    elif room <= 0:
        reason = f"no: the weights, CUDA context and compute buffer exceed the GPU's memory by {format_bytes(-room)}"
    else:
        reason = f"no: {subject}, more than the {format_bytes(room)} {room_origin}, which has room for {max_requests:,}"

    notes = []
    if window is not None:
        notes.append(f"sliding-window layers keep {window:,} cells (window x sequences + n_ubatch, padded)")
    return EngineEstimate(
        engine="llama.cpp",
        rules="llama.cpp",
        base=base,
        settings=settings,
        kv_cache_dtype=precision.name,
        kv_bytes_per_token_per_gpu=per_cell,
        block_size=padding,
        max_model_len=settings.context_tokens,
        budget_terms=tuple(terms),
        kv_cache_memory_bytes=kv_bytes,
        kv_cache_memory_is_estimate=False,
        kv_cache_tokens=cells,
        max_concurrency=cells / settings.context_tokens,
        sliding_window_tokens=window,
        fits=fits,
        details=(("room for KV", f"{format_bytes(room)} per GPU"),),
        notes=tuple(notes),
        requests_per_dp_rank=n_seq,
        max_requests_per_dp_rank=max_requests,
        fit_reason=reason,
        kv_room_bytes=room,
    )


__all__ = ["estimate_llamacpp", "parse_cache_type"]
