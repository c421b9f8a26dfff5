"""Checking spec files and reporting every problem, each with its file and line.

The spec parser (kvsize.specs) stops at the first error, which suits loading.
`check_spec_file` first checks every field against the tables of
kvsize.schema, listing all unknown, missing, mistyped and out-of-range fields
at once. When those pass, it runs the parser for the rules that span fields
(layer assignment, windows within the context limit, the id matching the file
name), which reports the first such problem.
"""

from __future__ import annotations

import os

import difflib
import re
from pathlib import Path
from typing import Any, Iterable

from kvsize.errors import InvalidInputError, KvsizeError, NotFoundError
from kvsize.schema import GPU_FIELDS, LAYER_FIELDS, MODEL_FIELDS, STATE_DTYPE_PATTERN, SpecField, weight_dtype_names
from kvsize.specs import GpuSpec, ModelSpec

SPEC_SUFFIXES = (".yaml", ".yml")


def expand_spec_paths(names: Iterable[str]) -> list[Path]:
    """Return the given files, with each folder replaced by the spec YAML files under it, sorted."""
    paths: list[Path] = []
    for name in names:
        if not name.strip():
            raise InvalidInputError("invalid spec path: an empty name; give a YAML file or a folder of them")
        path = Path(name)
        if path.is_dir():
            found = sorted(item for item in path.rglob("*") if item.suffix in SPEC_SUFFIXES and item.is_file())
            if not found:
                raise NotFoundError(f"{name}: the folder has no .yaml spec files")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


class _Problems:
    """Collects problems of one file, each as `file:line: message`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.messages: list[str] = []

    def add(self, line: int, message: str) -> None:
        where = f"{self.path}:{line}" if line else self.path
        self.messages.append(f"{where}: {message}")


def _line(mapping: Any, key: str | None = None) -> int:
    lines = getattr(mapping, "key_lines", {})
    return lines.get(key, getattr(mapping, "line", 0)) if key else getattr(mapping, "line", 0)


def _type_problem(field: SpecField, value: Any) -> str | None:
    """Return what is wrong with a present, non-null value, or None when it fits the field."""
    if field.type in ("integer",):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected {'a positive' if field.positive else 'an'} integer, got {value!r}"
        if field.positive and value <= 0:
            return f"expected a positive integer, got {value}"
    elif field.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return f"expected a number, got {value!r}"
        if field.positive and not 0 < value < float("inf"):
            return f"expected a positive finite number, got {value}"
    elif field.type == "boolean":
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif field.type in ("string_list", "layer_names"):
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            return f"expected a list of non-empty strings, got {value!r}"
        if (field.required or field.type == "layer_names") and not value:
            return "expected at least one entry"
    elif field.type == "weight_dtype":
        if not isinstance(value, str) or value.strip().lower() not in weight_dtype_names():
            return f"unknown weight dtype {value!r}; expected one of {', '.join(weight_dtype_names()[:8])}"
    elif field.type == "dtype":
        if not isinstance(value, str) or not re.fullmatch(STATE_DTYPE_PATTERN, value.strip().lower()):
            return f"unknown dtype {value!r}"
    elif field.type == "string":
        if not isinstance(value, str) or not value.strip():
            return f"expected a non-empty string, got {value!r}"
    return None


def _check_fields(mapping: Any, fields: dict[str, SpecField], problems: _Problems, context: str = "",
                  allowed: tuple[str, ...] = ()) -> None:  # fmt: skip
    for key in mapping:
        if key not in fields and key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            hint = f"; did you mean '{context}{close[0]}'?" if close else ""
            problems.add(_line(mapping, key), f"unknown field '{context}{key}'{hint}")
    for key, field in fields.items():
        value = mapping.get(key)
        if value is None:
            if field.required:
                problems.add(_line(mapping), f"missing required field '{context}{key}'")
            continue
        if field.type in ("layer_types", "layer_overrides"):
            continue
        message = _type_problem(field, value)
        if message:
            problems.add(_line(mapping, key), f"field '{context}{key}': {message}")


def _check_layer_types(mapping: Any, problems: _Problems) -> None:
    layer_types = mapping.get("layer_types")
    if layer_types is None:
        return
    if not isinstance(layer_types, dict) or not layer_types:
        problems.add(_line(mapping, "layer_types"), "field 'layer_types': expected a mapping of layer type names "
                     f"to layer definitions, got {layer_types!r}")  # fmt: skip
        return
    for name, layer in layer_types.items():
        context = f"layer_types.{name}."
        if not isinstance(layer, dict):
            problems.add(_line(layer_types, name), f"field 'layer_types.{name}': expected a mapping with a 'kind', got {layer!r}")
            continue
        kind = layer.get("kind")
        if kind not in LAYER_FIELDS:
            problems.add(_line(layer, "kind"), f"field '{context}kind': unknown layer kind {kind!r}; "
                         f"expected one of {', '.join(LAYER_FIELDS)}")  # fmt: skip
            continue
        _check_fields(layer, LAYER_FIELDS[kind], problems, context, allowed=("kind",))
        if "head_dim" in LAYER_FIELDS[kind]:
            has_head = layer.get("head_dim") is not None
            has_pair = layer.get("k_head_dim") is not None and layer.get("v_head_dim") is not None
            if has_head and (layer.get("k_head_dim") is not None or layer.get("v_head_dim") is not None):
                problems.add(_line(layer, "head_dim"), f"field '{context}head_dim': give either head_dim or "
                             "k_head_dim and v_head_dim, not both")  # fmt: skip
            elif not has_head and not has_pair:
                problems.add(_line(layer), f"missing required field '{context}head_dim' (or both k_head_dim and v_head_dim)")
        if kind == "shared" and isinstance(layer.get("reuses"), str) and layer["reuses"] not in layer_types:
            problems.add(_line(layer, "reuses"), f"field '{context}reuses': unknown layer type {layer['reuses']!r}")

    for key in ("layer_pattern", "layer_sequence"):
        names = mapping.get(key)
        if isinstance(names, list):
            for item in names:
                if isinstance(item, str) and item not in layer_types:
                    problems.add(_line(mapping, key), f"field '{key}': unknown layer type {item!r}; "
                                 f"defined types: {', '.join(map(str, layer_types))}")  # fmt: skip
    overrides = mapping.get("layer_overrides")
    if overrides is not None:
        if not isinstance(overrides, dict):
            problems.add(_line(mapping, "layer_overrides"), "field 'layer_overrides': expected a mapping of "
                         f"layer type to layer indices, got {overrides!r}")  # fmt: skip
            return
        for name, indices in overrides.items():
            if name not in layer_types:
                problems.add(_line(overrides, name), f"field 'layer_overrides': unknown layer type {name!r}")
            if not isinstance(indices, list) or not all(type(index) is int and index >= 0 for index in indices):
                problems.add(_line(overrides, name), f"field 'layer_overrides.{name}': expected a list of "
                             f"layer indices, got {indices!r}")  # fmt: skip


def check_spec_file(kind: str, path: Path) -> tuple[list[str], ModelSpec | GpuSpec | None]:
    """Check one spec file; return (problems, spec), where spec is None unless there are no problems."""
    from kvsize.catalog import load_spec_file
    from kvsize.specs import parse_yaml_mapping, read_spec_text

    display = str(path)
    problems = _Problems(display)
    try:
        exists = os.path.lexists(path)
    except OSError:
        exists = True
    if not exists:
        return [f"{display}: file not found"], None
    try:
        mapping = parse_yaml_mapping(read_spec_text(path, display), display)
    except KvsizeError as error:
        return [str(error)], None

    _check_fields(mapping, MODEL_FIELDS if kind == "models" else GPU_FIELDS, problems)
    if kind == "models":
        _check_layer_types(mapping, problems)
    if problems.messages:
        return problems.messages, None
    try:
        return [], load_spec_file(kind, path)  # type: ignore[arg-type]
    except KvsizeError as error:
        return [str(error)], None
