"""The fields of model and GPU spec files, and their JSON Schema.

One table per spec kind describes every field: its type, whether it is
required, its lower bound and what it means. `json_schema` turns the tables
into a JSON Schema (draft 2020-12) that editors such as VS Code's YAML
extension use to check and complete spec files, and kvsize.spec_check uses the
same tables to report every problem of a file at once. The tables must list
exactly the fields kvsize.specs accepts; a test compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kvsize.precision import WEIGHT_FORMATS, _ALIASES, _PLAIN_FORMATS

FieldType = Literal["string", "integer", "number", "boolean", "string_list", "layer_types", "layer_names",
                    "layer_overrides", "dtype", "weight_dtype"]  # fmt: skip

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class SpecField:
    """One field of a spec file: its type, whether it is required, its lower bound, and its meaning."""

    type: FieldType
    description: str
    required: bool = False
    positive: bool = False


def weight_dtype_names() -> list[str]:
    """Return every spelling the parser accepts for weight_dtype, canonical names first."""
    aliases = [alias for alias, canonical in _ALIASES.items() if canonical in WEIGHT_FORMATS]
    return [*WEIGHT_FORMATS, *aliases]


# A state dtype is any KV format: the named ones or intN for N = 1..16.
STATE_DTYPE_PATTERN = (
    "^(" + "|".join([*_PLAIN_FORMATS, "nvfp4", "mxfp4", *_ALIASES]) + "|int([1-9]|1[0-6]))$"
)

MODEL_FIELDS: dict[str, SpecField] = {
    "id": SpecField("string", "Spec id; equals the file name without .yaml.", required=True),
    "name": SpecField("string", "Display name.", required=True),
    "family": SpecField("string", "Model family, lower case (llama, qwen, deepseek, ...).", required=True),
    "aliases": SpecField("string_list", "Other names that resolve to this id."),
    "hf_id": SpecField("string", "Hugging Face repository, e.g. meta-llama/Llama-3.1-8B."),
    "params_total": SpecField("integer", "All parameters, every expert of a MoE model included.", required=True, positive=True),
    "params_active": SpecField("integer", "Parameters used per token (MoE only).", positive=True),
    "params_exact": SpecField("boolean", "True when params_total is an exact count from a source, false when nominal."),
    "params_unquantized": SpecField("integer", "Parameters a quantized checkpoint keeps at 16 bits.", positive=True),
    "weights_bytes": SpecField("integer", "Exact size in bytes of the published checkpoint's tensors.", positive=True),
    "weight_dtype": SpecField("weight_dtype", "Dtype of the published weights.", required=True),
    "max_position_embeddings": SpecField("integer", "The model's context limit in tokens.", required=True, positive=True),
    "hidden_size": SpecField("integer", "Hidden size (model width).", required=True, positive=True),
    "num_attention_heads": SpecField("integer", "Query heads; tensor-parallel sizes must divide it.", required=True, positive=True),
    "vocab_size": SpecField("integer", "Vocabulary size.", positive=True),
    "intermediate_size": SpecField("integer", "Dense MLP width.", positive=True),
    "num_layers": SpecField("integer", "Decoder layers.", required=True, positive=True),
    "layer_types": SpecField("layer_types", "Named layer kinds; see the layer definitions.", required=True),
    "layer_pattern": SpecField("layer_names", "Layer type names repeated from layer 0 and cut at num_layers."),
    "layer_sequence": SpecField("layer_names", "One layer type name per layer."),
    "layer_overrides": SpecField("layer_overrides", "Layer type name to 0-based layer indices, applied last."),
    "source": SpecField("string_list", "One entry per document the numbers came from.", required=True),
    "notes": SpecField("string", "Free text shown by 'kvsize show'."),
}  # fmt: skip

_HEAD_FIELDS = {
    "num_kv_heads": SpecField("integer", "KV heads of the layer.", required=True, positive=True),
    "head_dim": SpecField("integer", "Size of each K and V head; or give k_head_dim and v_head_dim.", positive=True),
    "k_head_dim": SpecField("integer", "Size of each K head when K and V differ.", positive=True),
    "v_head_dim": SpecField("integer", "Size of each V head when K and V differ.", positive=True),
}

LAYER_FIELDS: dict[str, dict[str, SpecField]] = {
    "full": dict(_HEAD_FIELDS),
    "sliding": {**_HEAD_FIELDS, "sliding_window": SpecField("integer", "Tokens the layer attends to and keeps.", required=True, positive=True)},
    "chunked": {**_HEAD_FIELDS, "attention_chunk_size": SpecField("integer", "Tokens per local attention chunk.", required=True, positive=True)},
    "mla": {
        "kv_lora_rank": SpecField("integer", "Elements of the compressed KV latent.", required=True, positive=True),
        "qk_rope_head_dim": SpecField("integer", "Elements of the decoupled RoPE key.", required=True, positive=True),
        "indexer_head_dim": SpecField("integer", "Elements of the sparse-attention indexer key per token.", positive=True),
    },
    "state": {
        "state_elements": SpecField("integer", "State elements per sequence, all state tensors summed.", required=True, positive=True),
        "state_dtype": SpecField("dtype", "Dtype of the state (default bf16)."),
    },
    "shared": {"reuses": SpecField("string", "Layer type name whose cache this layer reads.", required=True)},
}  # fmt: skip

LAYER_KIND_DESCRIPTIONS = {
    "full": "Full attention (MHA, GQA, MQA): K and V for every token.",
    "sliding": "Sliding-window attention: K and V for at most sliding_window tokens.",
    "chunked": "Chunked local attention: K and V for at most attention_chunk_size tokens.",
    "mla": "Multi-head latent attention: one latent of kv_lora_rank + qk_rope_head_dim per token.",
    "state": "A fixed state per sequence (Mamba, Gated DeltaNet).",
    "shared": "Reads another layer type's cache and stores nothing.",
}

GPU_FIELDS: dict[str, SpecField] = {
    "id": SpecField("string", "Spec id; equals the file name without .yaml.", required=True),
    "name": SpecField("string", "Display name.", required=True),
    "vendor": SpecField("string", "nvidia, amd or google.", required=True),
    "aliases": SpecField("string_list", "Other names that resolve to this id."),
    "memory_marketed_gb": SpecField("number", "Capacity as sold, in the vendor's decimal GB.", required=True, positive=True),
    "memory_reported_bytes": SpecField("integer", "Capacity the driver reports, in bytes.", required=True, positive=True),
    "memory_reported_estimated": SpecField("boolean", "True when memory_reported_bytes is derived from the marketed figure."),
    "memory_type": SpecField("string", "Memory technology, e.g. HBM3."),
    "memory_bandwidth_gb_per_s": SpecField("number", "Memory bandwidth in decimal GB/s.", required=True, positive=True),
    "bf16_dense_tflops": SpecField("number", "Dense bf16 throughput in TFLOPS, without sparsity.", positive=True),
    "supports_fp8": SpecField("boolean", "Whether the GPU computes in fp8."),
    "form_factor": SpecField("string", "Form factor, e.g. SXM5 or PCIe."),
    "source": SpecField("string_list", "One entry per document the numbers came from.", required=True),
    "notes": SpecField("string", "Free text shown by 'kvsize show'."),
}  # fmt: skip


def _nullable(schema: dict[str, Any], field: SpecField) -> dict[str, Any]:
    # Optional fields may be written as `null`, which the parser treats as absent.
    if field.required:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _field_schema(field: SpecField) -> dict[str, Any]:
    schema: dict[str, Any]
    if field.type == "string":
        schema = {"type": "string", "minLength": 1, "pattern": r"\S"}
    elif field.type == "integer":
        schema = {"type": "integer", **({"minimum": 1} if field.positive else {})}
    elif field.type == "number":
        schema = {"type": "number", **({"exclusiveMinimum": 0} if field.positive else {})}
    elif field.type == "boolean":
        schema = {"type": "boolean"}
    elif field.type == "string_list":
        schema = {"type": "array", "items": {"type": "string", "minLength": 1}, **({"minItems": 1} if field.required else {})}
    elif field.type == "layer_names":
        schema = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
    elif field.type == "layer_overrides":
        schema = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer", "minimum": 0}}}
    elif field.type == "layer_types":
        schema = {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/layer"}}
    elif field.type == "weight_dtype":
        schema = {"type": "string", "enum": weight_dtype_names()}
    else:
        schema = {"type": "string", "pattern": STATE_DTYPE_PATTERN}
    return {"description": field.description, **_nullable(schema, field)}


def _object_schema(fields: dict[str, SpecField]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [name for name, field in fields.items() if field.required],
        "properties": {name: _field_schema(field) for name, field in fields.items()},
    }


def _layer_schema(kind: str) -> dict[str, Any]:
    schema = _object_schema(LAYER_FIELDS[kind])
    schema["description"] = LAYER_KIND_DESCRIPTIONS[kind]
    schema["properties"] = {"kind": {"const": kind}, **schema["properties"]}
    schema["required"] = ["kind", *schema["required"]]
    if "head_dim" in LAYER_FIELDS[kind]:
        schema["oneOf"] = [{"required": ["head_dim"]}, {"required": ["k_head_dim", "v_head_dim"]}]
    return schema


def json_schema(kind: Literal["model", "gpu"]) -> dict[str, Any]:
    """Return the JSON Schema of a model or GPU spec file."""
    if kind == "gpu":
        return {"$schema": SCHEMA_DIALECT, "title": "kvsize GPU spec", **_object_schema(GPU_FIELDS)}
    schema = {"$schema": SCHEMA_DIALECT, "title": "kvsize model spec", **_object_schema(MODEL_FIELDS)}
    schema["$defs"] = {"layer": {"oneOf": [_layer_schema(kind) for kind in LAYER_FIELDS]}}
    return schema
