"""Building model specs from imported metadata, and writing them as YAML.

The importers (Hugging Face `config.json`, GGUF) describe a model as the same
mapping a YAML spec file holds. This module turns one per-layer list of layer
definitions into `layer_types` plus a compact `layer_pattern`,
`layer_overrides` or `layer_sequence`, validates the mapping with the same
parser as spec files, and writes it back out as reviewable YAML.
"""

from __future__ import annotations

import re
from typing import Any

from kvsize.specs import ModelSpec, _LineMapping, parse_model_spec

# Field order of a spec file, as docs/spec-format.md lists it.
MODEL_FIELD_ORDER = (
    "id", "name", "family", "aliases", "hf_id", "params_total", "params_active", "params_exact",
    "params_unquantized", "weights_bytes", "weight_dtype", "max_position_embeddings", "hidden_size", "num_attention_heads",
    "vocab_size", "intermediate_size", "num_layers", "layer_types", "layer_pattern", "layer_sequence",
    "layer_overrides", "source", "notes",
)  # fmt: skip

# Maximum pattern length tried when compressing a per-layer list into a pattern.
_MAX_PATTERN_LENGTH = 8


def slugify_id(text: str) -> str:
    """Return a spec id made of lower-case letters, digits, dots, hyphens and underscores."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-._")
    return slug or "imported-model"


def assign_layer_names(layers: list[dict[str, Any]], names: list[str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Group identical per-layer definitions under names; return (layer_types, one name per layer).

    `names` gives each layer's preferred type name. Two layers with the same
    preferred name but different definitions (a hybrid whose sliding layers
    differ in width, say) get numbered names.
    """
    layer_types: dict[str, dict[str, Any]] = {}
    sequence: list[str] = []
    for definition, preferred in zip(layers, names):
        name = preferred
        suffix = 2
        while name in layer_types and layer_types[name] != definition:
            name = f"{preferred}_{suffix}"
            suffix += 1
        layer_types.setdefault(name, definition)
        sequence.append(name)
    return layer_types, sequence


def compress_layer_sequence(sequence: list[str]) -> dict[str, Any]:
    """Return the shortest of `layer_pattern` (+ `layer_overrides`) or `layer_sequence` for a per-layer list.

    A pattern repeats from layer 0 and is cut at the layer count, as the spec
    format defines. Overrides are used when they are fewer than a third of
    the layers (Gemma 3n: a 5-layer pattern plus its KV-sharing layers).
    """
    if len(set(sequence)) == 1:
        return {}
    best: tuple[int, list[str], dict[str, list[int]]] | None = None
    for period in range(1, min(_MAX_PATTERN_LENGTH, len(sequence) - 1) + 1):
        pattern = sequence[:period]
        overrides: dict[str, list[int]] = {}
        for index, name in enumerate(sequence):
            if name != pattern[index % period]:
                overrides.setdefault(name, []).append(index)
        mismatches = sum(len(indices) for indices in overrides.values())
        if best is None or mismatches < best[0]:
            best = (mismatches, pattern, overrides)
        if mismatches == 0:
            break
    assert best is not None
    mismatches, pattern, overrides = best
    if mismatches == 0:
        return {"layer_pattern": pattern}
    if mismatches * 3 <= len(sequence):
        return {"layer_pattern": pattern, "layer_overrides": overrides}
    return {"layer_sequence": list(sequence)}


def _line_mapping(value: Any) -> Any:
    """Convert nested dicts to the parser's mapping type, with no line numbers."""
    if isinstance(value, dict):
        mapping = _LineMapping()
        mapping.line = 0
        mapping.key_lines = {}
        for key, item in value.items():
            mapping[key] = _line_mapping(item)
        return mapping
    if isinstance(value, list):
        return [_line_mapping(item) for item in value]
    return value


def build_model_spec(fields: dict[str, Any], path: str) -> ModelSpec:
    """Validate spec fields with the spec-file parser and return the ModelSpec; errors name `path`."""
    return parse_model_spec(_line_mapping(fields), path)


def _yaml_scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.removesuffix("\n...\n").rstrip("\n")


def _yaml_flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml_scalar(key)}: {_yaml_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_flow(item) for item in value) + "]"
    return _yaml_scalar(value)


def model_spec_yaml(fields: dict[str, Any]) -> str:
    """Return spec fields as a YAML document in the layout of the built-in spec files."""
    lines = []
    for key in MODEL_FIELD_ORDER:
        if key not in fields:
            continue
        value = fields[key]
        if key in ("layer_types", "layer_overrides") and isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {_yaml_scalar(name)}: {_yaml_flow(item)}" for name, item in value.items())
        elif key == "source":
            lines.append("source:")
            lines.extend(f"  - {_yaml_scalar(item)}" for item in value)
        elif key == "notes" and value:
            lines.append("notes: >-")
            lines.extend(_wrap(value, width=110, indent="  "))
        else:
            lines.append(f"{key}: {_yaml_flow(value)}")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int, indent: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)  # fmt: skip
