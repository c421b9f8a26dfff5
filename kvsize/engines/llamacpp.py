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
from kvsize.sizing import Estimate, bits_to_bytes
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


def parse_cache_type(name: str | None) -> Precision:
    """Return the precision of a llama.cpp `--cache-type-k` value (f16 when not given)."""
    cleaned = (name or "f16").strip().lower()
    if cleaned in GGML_CACHE_TYPES:
        bits, values, overhead = GGML_CACHE_TYPES[cleaned]
        return Precision(cleaned, bits, values, overhead)
    aliases = {"f16": "fp16", "f32": "fp32", "auto": "fp16"}
    try:
        return parse_precision(aliases.get(cleaned, cleaned))
    except InvalidInputError:
        raise InvalidInputError(f"invalid llama.cpp cache type {name!r}; expected one of {CACHE_TYPE_HELP}") from None


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


def estimate_llamacpp(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate) -> EngineEstimate:
    """Size llama.cpp's KV cache for `batch_size` sequences of `context_tokens` and check it fits."""
    if settings.tensor_parallel_size != 1:
        raise InvalidInputError("llama.cpp splits layers across GPUs rather than heads; use "
                                "--pipeline-parallel-size for the number of GPUs")  # fmt: skip
    precision = parse_cache_type(settings.kv_cache_dtype)
    n_seq = settings.batch_size
    ubatch = settings.ubatch_size or DEFAULT_UBATCH_SIZE
    padding = FLASH_ATTN_PADDING if settings.flash_attn else DEFAULT_PADDING
    cells = pad_cells(settings.context_tokens * n_seq, padding)
    stages = pipeline_stages(model, settings.pipeline_parallel_size)

    window = None
    kv_bytes = 0
    per_cell = 0
    for stage in stages:
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
    if settings.kv_cache_memory_bytes is not None:
        # Memory the user knows is free for the cache replaces the estimate of the room left.
        terms = [BudgetTerm("KV cache memory (given)", settings.kv_cache_memory_bytes, 1, False)]
        room = settings.kv_cache_memory_bytes
    terms.append(BudgetTerm("KV cache", kv_bytes, -1, False, f"{cells:,} cells"))

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
        fits=kv_bytes <= room,
        details=(("room for KV", f"{format_bytes(room)} per GPU"),),
        notes=tuple(notes),
    )


__all__ = ["estimate_llamacpp", "parse_cache_type"]
