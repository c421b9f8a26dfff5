"""Model and GPU specs: YAML parsing and validation into frozen dataclasses.

Validation is strict because a silently ignored typo (`num_kv_head: 8`) would
produce a wrong number: unknown keys, missing fields, wrong types and
non-positive sizes are rejected with the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from kvsize.errors import SpecError
from kvsize.layers import (
    ChunkedLocalAttention,
    FullAttention,
    LatentAttention,
    Layer,
    RecurrentState,
    SharedKV,
    SlidingWindowAttention,
)
from kvsize.precision import WEIGHT_FORMATS, canonical_dtype_name, is_known_dtype

# ---------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection


class _LineMapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


@lru_cache(maxsize=None)
def _spec_loader() -> type:
    """Build the YAML loader class on first use, so importing kvsize does not import PyYAML.

    It is a safe loader (no Python object tags) that rejects duplicate keys
    and records line numbers; the C parser is used when PyYAML has it.
    """
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class SpecLoader(base):  # type: ignore[misc,valid-type]
        pass

    def construct_mapping(loader, node) -> _LineMapping:
        loader.flatten_mapping(node)
        mapping = _LineMapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise SpecError(f"{loader.spec_path}:{line}: a mapping key must be a plain name, "
                                f"found a {type(key).__name__}")  # fmt: skip
            if key in mapping:
                raise SpecError(
                    f"{loader.spec_path}:{line}: duplicate key {key!r} (first defined on line {mapping.key_lines[key]})"
                )
            mapping[key] = loader.construct_object(value_node, deep=True)
            mapping.key_lines[key] = line
        return mapping

    SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return SpecLoader


def as_line_mapping(value: Any) -> Any:
    """Wrap plain dicts (from JSON) as line mappings without line numbers, recursively."""
    if isinstance(value, dict):
        mapping = _LineMapping((key, as_line_mapping(item)) for key, item in value.items())
        mapping.line = 0
        mapping.key_lines = {}
        return mapping
    if isinstance(value, list):
        return [as_line_mapping(item) for item in value]
    return value


# The largest built-in spec is under 10 KiB; a file a hundred times larger is
# not a spec, and parsing tens of megabytes of YAML would stall the command.
MAX_SPEC_FILE_BYTES = 1024 * 1024


def read_spec_text(path, display: str) -> str:
    """Read a user spec file as UTF-8 text, rejecting files over MAX_SPEC_FILE_BYTES."""
    import stat

    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise SpecError(f"{display}: not a regular file (a folder, device or pipe); give a YAML spec file")
        size = status.st_size
        if size > MAX_SPEC_FILE_BYTES:
            raise SpecError(f"{display}: file is {size:,} bytes, larger than the {MAX_SPEC_FILE_BYTES:,}-byte "
                            "limit for a spec file; check that it is the spec you meant")  # fmt: skip
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{display}: not valid UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    except OSError as error:
        raise SpecError(f"{display}: cannot read the file: {error.strerror}") from None
    except RuntimeError as error:  # pathlib reports a symlink loop this way
        raise SpecError(f"{display}: cannot read the file: {error}") from None


def parse_yaml_mapping(text: str, path: str) -> _LineMapping:
    """Parse YAML text that must hold one mapping; errors name `path` and the line."""
    import yaml

    loader = _spec_loader()(text)
    loader.spec_path = path
    try:
        document = loader.get_single_data()
    except SpecError:
        raise
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise SpecError(f"{where}: invalid YAML: {error.problem}") from None
    except yaml.reader.ReaderError as error:
        raise SpecError(f"{path}: invalid YAML: {error.reason} at byte {error.position}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid YAML: nested too deeply to be a spec") from None
    finally:
        loader.dispose()
    if not isinstance(document, _LineMapping):
        found = "an empty file" if document is None else f"a {type(document).__name__}"
        raise SpecError(f"{path}: expected a mapping of spec fields at the top level, found {found}")
    return document


# ---------------------------------------------------------------------------
# Field checks


class _Fields:
    """Reads typed fields from one mapping and reports errors with file and line."""

    def __init__(self, mapping: _LineMapping, path: str, context: str = "") -> None:
        self.mapping = mapping
        self.path = path
        self.context = context

    def where(self, key: str | None = None) -> str:
        line = self.mapping.key_lines.get(key, self.mapping.line) if key else self.mapping.line
        return f"{self.path}:{line}" if line else self.path

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.where(key)}: field '{self.context}{key}': {message}")

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in self.mapping:
            if key not in allowed:
                import difflib

                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed fields: {', '.join(sorted(allowed))}"
                raise self.fail(str(key), f"unknown field{hint}")

    def _get(self, key: str, required: bool) -> Any:
        value = self.mapping.get(key)
        if value is None and required:
            raise SpecError(f"{self.where()}: missing required field '{self.context}{key}'")
        return value

    def text(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def positive_int(self, key: str, required: bool = True) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a positive integer, got {value!r}")
        if value <= 0:
            raise self.fail(key, f"expected a positive integer, got {value}")
        return value

    def positive_number(self, key: str, required: bool = True) -> float | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise self.fail(key, f"expected a positive number, got {value!r}")
        if value <= 0 or value == float("inf"):
            raise self.fail(key, f"expected a positive finite number, got {value}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def text_list(self, key: str, required: bool = False) -> list[str]:
        value = self._get(key, required)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise self.fail(key, f"expected a list of non-empty strings, got {value!r}")
        if required and not value:
            raise self.fail(key, "expected at least one entry")
        return [item.strip() for item in value]


# ---------------------------------------------------------------------------
# Model specs

_MODEL_FIELDS = {
    "id", "name", "family", "aliases", "hf_id", "params_total", "params_active", "params_exact", "params_unquantized",
    "weights_bytes", "weight_dtype", "max_position_embeddings", "hidden_size", "num_attention_heads",
    "vocab_size", "intermediate_size", "num_layers", "layer_types", "layer_pattern", "layer_sequence",
    "layer_overrides", "source", "notes",
}  # fmt: skip

# No published model has more than a few hundred decoder layers; the cap keeps a
# typo from allocating one Python object per layer of a billion-layer model.
MAX_LAYERS = 100_000

_HEAD_FIELDS = {"num_kv_heads", "head_dim", "k_head_dim", "v_head_dim"}
_LAYER_FIELDS = {
    "full": {"kind"} | _HEAD_FIELDS,
    "sliding": {"kind", "sliding_window"} | _HEAD_FIELDS,
    "chunked": {"kind", "attention_chunk_size"} | _HEAD_FIELDS,
    "mla": {"kind", "kv_lora_rank", "qk_rope_head_dim", "indexer_head_dim"},
    "state": {"kind", "state_elements", "state_dtype"},
    "shared": {"kind", "reuses"},
}


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture, resolved to one Layer object per decoder layer."""

    id: str
    name: str
    family: str
    aliases: tuple[str, ...]
    hf_id: str | None
    params_total: int
    params_active: int | None
    params_exact: bool
    params_unquantized: int | None
    weights_bytes: int | None
    weight_dtype: str
    max_position_embeddings: int
    hidden_size: int
    num_attention_heads: int
    vocab_size: int | None
    intermediate_size: int | None
    layer_type_names: tuple[str, ...]
    layer_types: dict[str, Layer]
    source: tuple[str, ...]
    notes: str | None
    path: str
    variant: tuple[str, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.layer_type_names)

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(self.layer_types[name] for name in self.layer_type_names)

    def layer_counts(self) -> dict[str, int]:
        """Return the number of layers of each layer type name, in first-use order."""
        return dict(self.type_counts)

    @cached_property
    def type_counts(self) -> tuple[tuple[str, int], ...]:
        """Layer type names with their layer counts, in first-use order (computed once per spec)."""
        counts: dict[str, int] = {}
        for name in self.layer_type_names:
            counts[name] = counts.get(name, 0) + 1
        return tuple(counts.items())

    @cached_property
    def layer_type_counts(self) -> tuple[tuple[Layer, int], ...]:
        """Layer objects with their layer counts, as the sizing loops need them."""
        return tuple((self.layer_types[name], count) for name, count in self.type_counts)

    @property
    def attention_summary(self) -> str:
        """Return the attention kinds present, e.g. `sliding+full` or `mla`."""
        kinds: list[str] = []
        for layer in self.layers:
            if layer.kind not in kinds:
                kinds.append(layer.kind)
        return "+".join(kinds)


def _parse_layer_type(name: str, raw: Any, model_fields: _Fields, path: str) -> Layer:
    if not isinstance(raw, _LineMapping):
        raise model_fields.fail("layer_types", f"entry {name!r} must be a mapping with a 'kind', got {raw!r}")
    fields = _Fields(raw, path, context=f"layer_types.{name}.")
    if raw.get("kind") is None:
        raise SpecError(f"{fields.where()}: missing required field '{fields.context}kind' "
                        f"(one of {', '.join(_LAYER_FIELDS)})")  # fmt: skip
    kind = fields.text("kind")
    if kind not in _LAYER_FIELDS:
        raise fields.fail("kind", f"unknown layer kind {kind!r}; expected one of {', '.join(_LAYER_FIELDS)}")
    fields.reject_unknown(_LAYER_FIELDS[kind])

    if kind == "mla":
        return LatentAttention(
            kv_lora_rank=fields.positive_int("kv_lora_rank"),
            qk_rope_head_dim=fields.positive_int("qk_rope_head_dim"),
            indexer_head_dim=fields.positive_int("indexer_head_dim", required=False) or 0,
        )
    if kind == "state":
        state_dtype = canonical_dtype_name(fields.text("state_dtype", required=False) or "bf16")
        if not is_known_dtype(state_dtype):
            raise fields.fail("state_dtype", f"unknown dtype {state_dtype!r}")
        return RecurrentState(state_elements=fields.positive_int("state_elements"), state_dtype=state_dtype)
    if kind == "shared":
        return SharedKV(reuses=fields.text("reuses"))

    num_kv_heads = fields.positive_int("num_kv_heads")
    head_dim = fields.positive_int("head_dim", required=False)
    k_head_dim = fields.positive_int("k_head_dim", required=False)
    v_head_dim = fields.positive_int("v_head_dim", required=False)
    if head_dim is not None and (k_head_dim is not None or v_head_dim is not None):
        raise fields.fail("head_dim", "give either head_dim or k_head_dim and v_head_dim, not both")
    if head_dim is not None:
        k_head_dim = v_head_dim = head_dim
    elif k_head_dim is None or v_head_dim is None:
        raise SpecError(f"{fields.where()}: missing required field '{fields.context}head_dim' "
                        "(or both k_head_dim and v_head_dim)")  # fmt: skip
    if kind == "sliding":
        return SlidingWindowAttention(num_kv_heads, k_head_dim, v_head_dim, fields.positive_int("sliding_window"))
    if kind == "chunked":
        return ChunkedLocalAttention(num_kv_heads, k_head_dim, v_head_dim,
                                     fields.positive_int("attention_chunk_size"))  # fmt: skip
    return FullAttention(num_kv_heads, k_head_dim, v_head_dim)


def _layer_name_list(fields: _Fields, key: str, known: dict[str, Layer]) -> list[str] | None:
    names = fields.text_list(key) if fields.mapping.get(key) is not None else None
    if names is None:
        return None
    if not names:
        raise fields.fail(key, "expected at least one layer type name")
    for name in names:
        if name not in known:
            raise fields.fail(key, f"unknown layer type {name!r}; defined types: {', '.join(known)}")
    return names


def _assign_layer_types(fields: _Fields, num_layers: int, layer_types: dict[str, Layer]) -> list[str]:
    pattern = _layer_name_list(fields, "layer_pattern", layer_types)
    sequence = _layer_name_list(fields, "layer_sequence", layer_types)
    if pattern is not None and sequence is not None:
        raise fields.fail("layer_sequence", "give either layer_pattern or layer_sequence, not both")

    if sequence is not None:
        if len(sequence) != num_layers:
            raise fields.fail("layer_sequence", f"lists {len(sequence)} layers but num_layers is {num_layers}")
        assigned = list(sequence)
    elif pattern is not None:
        assigned = [pattern[index % len(pattern)] for index in range(num_layers)]
    elif len(layer_types) == 1:
        assigned = [next(iter(layer_types))] * num_layers
    else:
        raise SpecError(f"{fields.where('layer_types')}: {len(layer_types)} layer types are defined; "
                        "add layer_pattern or layer_sequence to say which layer has which type")  # fmt: skip

    overrides = fields.mapping.get("layer_overrides")
    if overrides is not None:
        if not isinstance(overrides, dict):
            raise fields.fail("layer_overrides", f"expected a mapping of layer type to layer indices, got {overrides!r}")
        for name, indices in overrides.items():
            if name not in layer_types:
                raise fields.fail("layer_overrides", f"unknown layer type {name!r}")
            if not isinstance(indices, list) or not all(type(index) is int for index in indices):
                raise fields.fail("layer_overrides", f"{name}: expected a list of layer indices, got {indices!r}")
            for index in indices:
                if not 0 <= index < num_layers:
                    raise fields.fail("layer_overrides",
                                      f"{name}: layer index {index} is outside 0..{num_layers - 1}")  # fmt: skip
                assigned[index] = name
    return assigned


def parse_model_spec(mapping: _LineMapping, path: str) -> ModelSpec:
    """Validate a parsed model mapping and build its ModelSpec."""
    fields = _Fields(mapping, path)
    fields.reject_unknown(_MODEL_FIELDS)

    weight_dtype = canonical_dtype_name(fields.text("weight_dtype"))
    if weight_dtype not in WEIGHT_FORMATS:
        raise fields.fail("weight_dtype", f"unknown weight dtype {weight_dtype!r}; expected one of {', '.join(WEIGHT_FORMATS)}")
    max_position_embeddings = fields.positive_int("max_position_embeddings")
    num_layers = fields.positive_int("num_layers")
    if num_layers > MAX_LAYERS:
        raise fields.fail("num_layers", f"{num_layers:,} layers is more than {MAX_LAYERS:,}; check the value")

    raw_types = fields.mapping.get("layer_types")
    if not isinstance(raw_types, dict) or not raw_types:
        raise fields.fail("layer_types", f"expected a mapping of layer type names to layer definitions, got {raw_types!r}")
    layer_types = {str(name): _parse_layer_type(str(name), raw, fields, path) for name, raw in raw_types.items()}

    num_attention_heads = fields.positive_int("num_attention_heads")
    for name, layer in layer_types.items():
        if isinstance(layer, FullAttention) and num_attention_heads % layer.num_kv_heads:
            raise fields.fail("layer_types", f"{name}.num_kv_heads: {layer.num_kv_heads} KV heads do not divide the "
                              f"{num_attention_heads} attention heads; each KV head must serve a whole group of query heads")  # fmt: skip
        if isinstance(layer, SharedKV):
            target = layer_types.get(layer.reuses)
            if target is None or isinstance(target, (SharedKV, RecurrentState)):
                raise fields.fail("layer_types", f"{name}.reuses: {layer.reuses!r} must name an attention layer type")
        window = getattr(layer, "sliding_window", None) or getattr(layer, "attention_chunk_size", None)
        if window is not None and window > max_position_embeddings:
            raise fields.fail("layer_types", f"{name}: window of {window} tokens exceeds "
                              f"max_position_embeddings ({max_position_embeddings})")  # fmt: skip

    params_total = fields.positive_int("params_total")
    params_active = fields.positive_int("params_active", required=False)
    if params_active is not None and params_active > params_total:
        raise fields.fail("params_active", f"{params_active} exceeds params_total ({params_total})")
    params_unquantized = fields.positive_int("params_unquantized", required=False)
    if params_unquantized is not None and params_unquantized > params_total:
        raise fields.fail("params_unquantized", f"{params_unquantized} exceeds params_total ({params_total})")

    return ModelSpec(
        id=fields.text("id"),
        name=fields.text("name"),
        family=fields.text("family").lower(),
        aliases=tuple(fields.text_list("aliases")),
        hf_id=fields.text("hf_id", required=False),
        params_total=params_total,
        params_active=params_active,
        params_exact=fields.flag("params_exact", default=False),
        params_unquantized=params_unquantized,
        weights_bytes=fields.positive_int("weights_bytes", required=False),
        weight_dtype=weight_dtype,
        max_position_embeddings=max_position_embeddings,
        hidden_size=fields.positive_int("hidden_size"),
        num_attention_heads=num_attention_heads,
        vocab_size=fields.positive_int("vocab_size", required=False),
        intermediate_size=fields.positive_int("intermediate_size", required=False),
        layer_type_names=tuple(_assign_layer_types(fields, num_layers, layer_types)),
        layer_types=layer_types,
        source=tuple(fields.text_list("source", required=True)),
        notes=fields.text("notes", required=False),
        path=path,
    )


# ---------------------------------------------------------------------------
# GPU specs

_GPU_FIELDS = {
    "id", "name", "vendor", "aliases", "memory_marketed_gb", "memory_reported_bytes",
    "memory_reported_estimated", "memory_type", "memory_bandwidth_gb_per_s", "bf16_dense_tflops",
    "supports_fp8", "form_factor", "source", "notes",
}  # fmt: skip


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator device as a framework addresses it (one GPU, one MI250X GCD, one TPU chip)."""

    id: str
    name: str
    vendor: str
    aliases: tuple[str, ...]
    memory_marketed_gb: float
    memory_reported_bytes: int
    memory_reported_estimated: bool
    memory_type: str | None
    memory_bandwidth_gb_per_s: float
    bf16_dense_tflops: float | None
    supports_fp8: bool | None
    form_factor: str | None
    source: tuple[str, ...]
    notes: str | None
    path: str


def parse_gpu_spec(mapping: _LineMapping, path: str) -> GpuSpec:
    """Validate a parsed GPU mapping and build its GpuSpec."""
    fields = _Fields(mapping, path)
    fields.reject_unknown(_GPU_FIELDS)
    supports_fp8 = mapping.get("supports_fp8")
    if supports_fp8 is not None:
        supports_fp8 = fields.flag("supports_fp8", default=False)
    return GpuSpec(
        id=fields.text("id"),
        name=fields.text("name"),
        vendor=fields.text("vendor").lower(),
        aliases=tuple(fields.text_list("aliases")),
        memory_marketed_gb=fields.positive_number("memory_marketed_gb"),
        memory_reported_bytes=fields.positive_int("memory_reported_bytes"),
        memory_reported_estimated=fields.flag("memory_reported_estimated", default=False),
        memory_type=fields.text("memory_type", required=False),
        memory_bandwidth_gb_per_s=fields.positive_number("memory_bandwidth_gb_per_s"),
        bf16_dense_tflops=fields.positive_number("bf16_dense_tflops", required=False),
        supports_fp8=supports_fp8,
        form_factor=fields.text("form_factor", required=False),
        source=tuple(fields.text_list("source", required=True)),
        notes=fields.text("notes", required=False),
        path=path,
    )
