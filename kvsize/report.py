"""Machine-readable results: the stable JSON form of an estimate.

Keys are part of kvsize's interface and are documented in docs/json.md.
Memory values are integer bytes; `schema_version` changes when a key is
renamed or removed, not when one is added.
"""

from __future__ import annotations

import json
from typing import Any

from kvsize import __version__
from kvsize.sizing import Estimate

SCHEMA_VERSION = 1


def estimate_to_dict(result: Estimate) -> dict[str, Any]:
    """Return the JSON-ready mapping of one estimate."""
    request = result.request
    kv = result.kv_precision
    return {
        "schema_version": SCHEMA_VERSION,
        "kvsize_version": __version__,
        "model": result.model.id,
        "model_name": result.model.name,
        "gpu": result.gpu.id,
        "gpu_name": result.gpu.name,
        "context_tokens": request.context_tokens,
        "batch_size": request.batch_size,
        "kv_cache_dtype": kv.name,
        "kv_group_size": kv.group_size,
        "kv_group_overhead_bits": kv.group_overhead_bits,
        "weights_dtype": result.weight_precision.name,
        "tensor_parallel_size": request.tensor_parallel_size,
        "gpu_memory_utilization": float(request.gpu_memory_utilization),
        "kv_bytes_per_token": result.kv_bytes_per_token,
        "kv_bytes_per_token_per_gpu": result.kv_bytes_per_token_per_gpu,
        "kv_cache_bytes": result.kv_cache_bytes,
        "kv_cache_bytes_per_gpu": result.kv_cache_bytes_per_gpu,
        "kv_cache_bytes_per_sequence_per_gpu": result.sequence_kv_bytes_per_gpu,
        "breakdown": [
            {
                "kind": usage.kind,
                "num_layers": usage.num_layers,
                "bytes_per_token": usage.bytes_per_token,
                "bytes_per_token_per_gpu": usage.bytes_per_token_per_gpu,
                "cached_tokens_per_layer": usage.cached_tokens_per_layer,
                "state_bytes_per_sequence_per_gpu": usage.state_bytes_per_sequence_per_gpu,
                "kv_cache_bytes_per_gpu": usage.kv_cache_bytes_per_gpu,
            }
            for usage in result.breakdown
        ],
        "weights_bytes": result.weights_bytes,
        "weights_bytes_per_gpu": result.weights_bytes_per_gpu,
        "weights_from_checkpoint": result.weights_from_checkpoint,
        "params_total": result.model.params_total,
        "params_exact": result.model.params_exact,
        "gpu_memory_bytes": result.gpu_memory_bytes,
        "gpu_memory_is_estimate": result.gpu.memory_reported_estimated,
        "usable_memory_bytes_per_gpu": result.usable_memory_bytes,
        "reserve_bytes_per_gpu": request.reserve_bytes,
        "reserve_is_estimate": request.reserve_is_default,
        "kv_budget_bytes_per_gpu": result.kv_budget_bytes_per_gpu,
        "weights_fit": result.weights_fit,
        "fits": result.fits,
        "max_context_tokens": result.max_context_tokens,
        "max_batch_size": result.max_batch_size,
        "max_position_embeddings": result.model.max_position_embeddings,
        "kv_effective_bits": round(result.kv_effective_bits, 6),
        "kv_quant_axis": kv.group_axis if kv.group_size is not None else None,
        "kv_outlier_fraction": float(kv.outlier_fraction) if kv.outlier_fraction else None,
        "kv_keep_ratio": float(request.token_policy.keep_ratio) if request.token_policy and request.token_policy.keep_ratio is not None else None,
        "kv_token_budget": request.token_policy.token_budget if request.token_policy else None,
        "kv_keep_recent_tokens": request.token_policy.keep_recent_tokens if request.token_policy else 0,
        "cpu_offload_bytes": request.cpu_offload_bytes,
        "kv_on_gpu_bytes_per_gpu": result.kv_on_gpu_bytes_per_gpu,
        "kv_on_host_bytes": result.kv_on_host_bytes,
        "gpu_tokens_per_sequence": result.gpu_tokens_per_sequence,
        "host_tokens_per_sequence": result.host_tokens_per_sequence,
        "max_context_tokens_gpu_only": result.max_context_tokens_gpu_only,
        "max_batch_size_gpu_only": result.max_batch_size_gpu_only,
        "techniques": list(result.techniques),
        "warnings": list(result.warnings),
    }


def estimate_to_json(result: Estimate) -> str:
    """Return the estimate as an indented JSON document."""
    return json.dumps(estimate_to_dict(result), indent=2)


def flat_keys(row: dict[str, Any]) -> list[str]:
    """Return the keys of an estimate mapping whose values are scalars (CSV-able)."""
    return [key for key, value in row.items() if not isinstance(value, (list, dict))]


def render_estimate(result: Estimate, output_format: str) -> str:
    """Render one estimate as JSON, CSV (one row of scalar keys) or a Markdown key/value table."""
    from kvsize.formats import Column, format_cell, to_csv, to_json, to_markdown

    row = estimate_to_dict(result)
    if output_format == "json":
        return to_json(row) + "\n"
    columns = [Column(key, key) for key in flat_keys(row)]
    if output_format == "csv":
        return to_csv([row], columns)
    pairs = [{"quantity": key, "value": format_cell(key, row[key])} for key in flat_keys(row)]
    return to_markdown(pairs, [Column("quantity", "quantity"), Column("value", "value")])


# Default columns of `kvsize compare`, keyed by estimate JSON keys.
COMPARE_COLUMN_SPECS = (
    ("model", "model"),
    ("gpu", "GPU"),
    ("tensor_parallel_size", "TP"),
    ("context_tokens", "context"),
    ("batch_size", "batch"),
    ("kv_cache_dtype", "KV dtype"),
    ("weights_dtype", "weights"),
    ("kv_bytes_per_token", "KV/token"),
    ("kv_cache_bytes_per_gpu", "KV/GPU"),
    ("weights_bytes_per_gpu", "weights/GPU"),
    ("kv_budget_bytes_per_gpu", "budget/GPU"),
    ("fits", "fits"),
    ("max_context_tokens", "max context"),
    ("max_batch_size", "max batch"),
)
