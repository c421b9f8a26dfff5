"""Machine-readable engine results: the estimate's JSON keys plus the engine's own.

`engine_estimate_to_dict` starts from `report.estimate_to_dict` of the
theoretical estimate and only adds keys, so a reader of the plain estimate
keeps working. Memory is integer bytes per GPU; keys are listed in docs/json.md.
"""

from __future__ import annotations

import json
from typing import Any

from kvsize.engine_logs import LogComparison
from kvsize.engines.common import EngineEstimate
from kvsize.sizing import DEFAULT_GPU_MEMORY_UTILIZATION


def engine_estimate_to_dict(result: EngineEstimate) -> dict[str, Any]:
    """Return the JSON-ready mapping of an estimate made with an engine profile.

    The keys of the engine-neutral verdict (`fits`, `max_batch_size` and the
    budget they come from) are replaced by the engine's, so the object carries
    one verdict. The architecture's keys (bytes per token, the request's
    cache, weights) stay as `estimate` computes them.
    """
    from kvsize.report import estimate_to_dict

    data = estimate_to_dict(result.base)
    settings = result.settings
    data.update(
        {
            # The engine's verdict: batch_size requests of max_model_len in the engine's pool.
            "fits": result.fits,
            "max_batch_size": result.max_requests,
            "max_batch_size_gpu_only": result.max_requests,
            # The engine sizes its pool for max_model_len; see max_concurrency.
            "max_context_tokens": None,
            "max_context_tokens_gpu_only": None,
            # The neutral budget's terms do not apply, and budget_terms lists the engine's.
            "gpu_memory_utilization": (float(settings.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION)
                                       if result.engine == "vllm" else None),  # fmt: skip
            "usable_memory_bytes_per_gpu": None,
            "reserve_bytes_per_gpu": None,
            "reserve_is_estimate": None,
            "kv_budget_bytes_per_gpu": result.kv_budget_bytes,
            "weights_fit": result.kv_budget_bytes > 0,
            "warnings": list(dict.fromkeys(result.base.warnings + result.warnings)),
            "engine": result.engine,
            "engine_version": settings.engine_version,
            "engine_rules": result.rules,
            "pipeline_parallel_size": settings.pipeline_parallel_size,
            "data_parallel_size": settings.data_parallel_size,
            "engine_kv_cache_dtype": result.kv_cache_dtype,
            "engine_kv_bytes_per_token_per_gpu": result.kv_bytes_per_token_per_gpu,
            "block_size": result.block_size,
            "max_model_len": result.max_model_len,
            "kv_cache_memory_bytes_per_gpu": result.kv_cache_memory_bytes,
            "kv_cache_memory_is_estimate": result.kv_cache_memory_is_estimate,
            "kv_cache_tokens": result.kv_cache_tokens,
            "num_gpu_blocks": result.num_gpu_blocks,
            "num_cpu_blocks": result.num_cpu_blocks,
            "max_concurrency": round(result.max_concurrency, 4),
            "sliding_window_tokens": result.sliding_window_tokens,
            "engine_fits": result.fits,
            "engine_fit_reason": result.fit_reason,
            "requests_per_dp_rank": result.requests_per_dp_rank,
            "max_requests_per_dp_rank": result.max_requests_per_dp_rank,
            "budget_terms": [
                {
                    "name": term.name,
                    "bytes": term.bytes,
                    "sign": term.sign,
                    "is_estimate": term.is_estimate,
                    "note": term.note,
                }
                for term in result.budget_terms
            ],
            "engine_notes": list(result.notes),
        }
    )
    return data


def engine_estimate_to_json(result: EngineEstimate) -> str:
    """Return the engine estimate as an indented JSON document."""
    return json.dumps(engine_estimate_to_dict(result), indent=2)


ENGINE_COLUMNS = (
    "model", "gpu", "engine", "tensor_parallel_size", "pipeline_parallel_size", "engine_kv_cache_dtype",
    "max_model_len", "kv_cache_memory_bytes_per_gpu", "kv_cache_tokens", "num_gpu_blocks", "block_size",
    "max_concurrency",
)  # fmt: skip
LOG_COLUMNS = ("figure", "printed", "predicted", "difference", "unit", "within_tolerance", "basis")


def render_engine_estimate(result: EngineEstimate, output_format: str) -> str:
    """Return the engine estimate as JSON, or as one CSV or Markdown row of its main keys."""
    from kvsize.formats import Column, to_csv, to_markdown

    data = engine_estimate_to_dict(result)
    if output_format == "json":
        return json.dumps(data, indent=2) + "\n"
    columns = [Column(key, key) for key in ENGINE_COLUMNS]
    return to_csv([data], columns) if output_format == "csv" else to_markdown([data], columns)


def render_log_comparison(comparison: LogComparison, model_id: str, gpu_id: str | None, output_format: str) -> str:
    """Return a `kvsize log` check as JSON, or its rows as CSV or Markdown."""
    from kvsize.formats import Column, to_csv, to_markdown

    data = log_comparison_to_dict(comparison, model_id, gpu_id)
    if output_format == "json":
        return json.dumps(data, indent=2) + "\n"
    columns = [Column(key, key) for key in LOG_COLUMNS]
    return to_csv(data["rows"], columns) if output_format == "csv" else to_markdown(data["rows"], columns)


def log_comparison_to_dict(comparison: LogComparison, model_id: str, gpu_id: str | None) -> dict[str, Any]:
    """Return the JSON-ready mapping of a `kvsize log` check; `gpu_id` is None when no --gpu was given."""
    facts = comparison.facts
    return {
        "engine": facts.engine,
        "engine_version": facts.engine_version,
        "model": model_id,
        "gpu": gpu_id,
        "gpu_memory_bytes": facts.total_gpu_memory.bytes if facts.total_gpu_memory is not None else None,
        "tensor_parallel_size": facts.tensor_parallel_size or 1,
        "pipeline_parallel_size": facts.pipeline_parallel_size or 1,
        "startups": facts.startups,
        "startup_line": facts.startup_line,
        "unchecked_reason": comparison.unchecked_reason,
        "rows": [
            {
                "figure": row.figure,
                "printed": row.printed,
                "predicted": row.predicted,
                "difference": row.difference,
                "unit": row.unit,
                "tolerance": row.tolerance,
                "within_tolerance": row.within_tolerance,
                "kind": row.kind,
                "basis": row.basis,
            }
            for row in comparison.rows
        ],
        "notes": list(comparison.notes),
        "lines": list(facts.lines),
    }
