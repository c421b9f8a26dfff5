"""Serving-engine profiles: what vLLM, SGLang, TensorRT-LLM and llama.cpp allocate.

`estimate_engine` runs the theoretical sizing of `kvsize.sizing` and then the
chosen engine's rules for its memory budget, blocks or pages, token pool and
concurrency. Each engine lives in its own module, imported only when used.
"""

from __future__ import annotations

from dataclasses import replace

from kvsize.engines.common import BudgetTerm, EngineEstimate, EngineSettings
from kvsize.errors import InvalidInputError
from kvsize.precision import Precision
from kvsize.specs import GpuSpec, ModelSpec

ENGINE_NAMES = ("vllm", "sglang", "trtllm", "llama.cpp")

_ENGINE_ALIASES = {
    "vllm": "vllm",
    "sglang": "sglang",
    "trtllm": "trtllm",
    "trt-llm": "trtllm",
    "tensorrt-llm": "trtllm",
    "tensorrt_llm": "trtllm",
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
}


def parse_engine_name(text: str) -> str:
    """Return the canonical engine name for `text` (case-insensitive, with common spellings)."""
    name = _ENGINE_ALIASES.get(text.strip().lower())
    if name is None:
        raise InvalidInputError(f"invalid value for --engine: {text!r}; expected one of {', '.join(ENGINE_NAMES)}")
    return name


def _kv_precision(model: ModelSpec, settings: EngineSettings) -> Precision:
    if settings.engine == "llama.cpp":
        from kvsize.engines.llamacpp import parse_cache_type

        return parse_cache_type(settings.kv_cache_dtype)
    from kvsize.engines.common import kv_precision_for

    return kv_precision_for(model, settings.kv_cache_dtype, settings.engine)


def _engine_warnings(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings) -> list[str]:
    """Warn about settings an engine accepts but that are unlikely to be what the user meant."""
    from kvsize.engines.common import ENGINE_TITLES
    from kvsize.units import format_bytes

    warnings = []
    kv_memory = settings.kv_cache_memory_bytes
    if kv_memory is not None and kv_memory > gpu.memory_reported_bytes:
        warnings.append(f"KV cache memory of {format_bytes(kv_memory)} per GPU is more than the "
                        f"{format_bytes(gpu.memory_reported_bytes)} {gpu.name} reports")  # fmt: skip
    length = settings.max_model_len
    if length is not None and length > model.max_position_embeddings:
        warning = (f"max_model_len of {length:,} tokens exceeds {model.id}'s max_position_embeddings "
                   f"({model.max_position_embeddings:,})")  # fmt: skip
        if settings.engine == "vllm":
            warning += "; vLLM rejects it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set"
        elif settings.engine == "sglang":
            warning += "; SGLang rejects it unless SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 is set"
        else:
            warning += f"; the model was not trained for it and {ENGINE_TITLES[settings.engine]} may reject it"
        warnings.append(warning)
    return warnings


def estimate_engine(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings,
                    weight_precision: Precision | None = None) -> EngineEstimate:  # fmt: skip
    """Predict what `settings.engine` allocates for `model` on `gpu`."""
    from kvsize.engines.common import check_parallel_sizes
    from kvsize.sizing import DEFAULT_GPU_MEMORY_UTILIZATION, SizingRequest, estimate

    engine = parse_engine_name(settings.engine)
    check_parallel_sizes(settings)
    if settings.context_tokens < 1:
        raise InvalidInputError(f"invalid context length {settings.context_tokens}: it must be at least 1 token")
    if settings.max_model_len is not None and settings.max_model_len < 1:
        raise InvalidInputError(f"invalid value for --max-model-len: {settings.max_model_len}; it must be at least 1")
    request = SizingRequest(
        context_tokens=settings.context_tokens,
        batch_size=settings.batch_size,
        kv_precision=_kv_precision(model, settings),
        weight_precision=weight_precision,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION,
    )
    base = estimate(model, gpu, request)

    if engine == "vllm":
        from kvsize.engines.vllm import estimate_vllm as profile
    elif engine == "sglang":
        from kvsize.engines.sglang import estimate_sglang as profile
    elif engine == "trtllm":
        from kvsize.engines.trtllm import estimate_trtllm as profile
    else:
        from kvsize.engines.llamacpp import estimate_llamacpp as profile
    result = profile(model, gpu, settings, base)
    return replace(result, warnings=tuple(_engine_warnings(model, gpu, settings)))


__all__ = ["ENGINE_NAMES", "BudgetTerm", "EngineEstimate", "EngineSettings", "estimate_engine", "parse_engine_name"]
