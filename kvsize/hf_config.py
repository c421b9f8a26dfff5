"""Hugging Face `config.json` files mapped onto kvsize model specs.

`model_fields_from_hf_config` reads the fields that decide the KV cache
(layers, query and KV heads, head sizes, windows, latent ranks, state sizes)
the way the transformers configuration classes interpret them, and returns
the mapping a spec file would hold. Missing fields are reported by name. A
`model_type` without a rule is rejected, because a guessed attention layout
would produce a wrong number without a warning.

Parameter counts come, in order of preference, from the safetensors index
metadata beside the config (`total_parameters`, then `total_size`), the header
of a single `model.safetensors` file, or the formula in `count_parameters`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvsize.errors import NotFoundError, SpecError
from kvsize.spec_builder import assign_layer_names, compress_layer_sequence

CONFIG_FILE = "config.json"
INDEX_FILE = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"

# Sliding-window placement rule of each text model type, used when the
# config has no explicit `layer_types` list:
#   none       sliding_window is not used by the architecture
#   all        every layer uses sliding_window when it is set
#   qwen       layers at index >= max_window_layers, only when use_sliding_window is true
#   alternate  even layers sliding, odd layers full (Gemma 2, gpt-oss)
#   pattern    layer i is full when (i + 1) % sliding_window_pattern == 0, else sliding
_ATTENTION_MODEL_TYPES = {
    "llama": "none",
    "mistral": "all",
    "ministral": "all",
    "mixtral": "all",
    "qwen2": "qwen",
    "qwen2_moe": "qwen",
    "qwen3": "qwen",
    "qwen3_moe": "qwen",
    "phi3": "all",
    "starcoder2": "all",
    "gemma": "none",
    "gemma2": "alternate",
    "gemma3_text": "pattern",
    "gemma3n_text": "pattern",
    "cohere": "none",
    "cohere2": "pattern",
    "olmo": "none",
    "olmo2": "none",
    "granite": "none",
    "granitemoe": "none",
    "glm4_moe": "none",
    "gpt_oss": "alternate",
    "llama4_text": "none",
}
_MLA_MODEL_TYPES = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2", "glm4_moe_lite"}
_LINEAR_ATTENTION_MODEL_TYPES = {"qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"}
_OTHER_MODEL_TYPES = {"jamba", "falcon", "opt"}

SUPPORTED_MODEL_TYPES = tuple(sorted({*_ATTENTION_MODEL_TYPES, *_MLA_MODEL_TYPES,
                                      *_LINEAR_ATTENTION_MODEL_TYPES, *_OTHER_MODEL_TYPES}))  # fmt: skip

# Multimodal wrappers keep the language model under `text_config`; when that
# block names no model_type, transformers builds this text config class.
_WRAPPER_TEXT_MODEL_TYPES = {
    "gemma3": "gemma3_text",
    "gemma3n": "gemma3n_text",
    "llama4": "llama4_text",
    "mistral3": "mistral",
    "qwen3_5": "qwen3_5_text",
    "qwen3_5_moe": "qwen3_5_moe_text",
}

# Constructor defaults of transformers configuration classes for fields that
# published configs leave out (the google/gemma-3-4b-it text_config sets
# neither heads nor head_dim). Sources: transformers @008f5c8c
# configuration_gemma3.py (Gemma3TextConfig) and configuration_falcon.py
# (FalconConfig). Cohere2's period of 4 is the one llama.cpp's loader uses.
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
        "sliding_window": 4096, "sliding_window_pattern": 6, "tie_word_embeddings": True,
    },
    "cohere2": {"sliding_window_pattern": 4},
    "falcon": {"max_position_embeddings": 2048, "multi_query": True, "new_decoder_architecture": False},
}  # fmt: skip

# Older configs spell some fields the GPT-2 way; transformers maps them.
_FIELD_ALIASES = {
    "num_hidden_layers": ("n_layer",),
    "num_attention_heads": ("n_head",),
}

_TORCH_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float": "fp32", "half": "fp16"}

_MISSING = object()


@dataclass
class HfModelFiles:
    """The files one model is read from: its config.json and, when present, weight metadata beside it."""

    config_path: Path
    index_path: Path | None = None
    safetensors_path: Path | None = None
    display_path: str = ""
    hf_id: str | None = None
    revision: str | None = None

    @classmethod
    def beside(cls, config_path: Path, display_path: str) -> HfModelFiles:
        """Collect the weight metadata files in the config's folder."""
        folder = config_path.parent
        index = folder / INDEX_FILE
        single = folder / SAFETENSORS_FILE
        return cls(
            config_path=config_path,
            index_path=index if index.is_file() else None,
            safetensors_path=single if single.is_file() else None,
            display_path=display_path,
        )


def find_config_file(path: Path) -> Path:
    """Return the config.json a path names: the file itself, or `config.json` in a model folder."""
    if path.is_dir():
        candidate = path / CONFIG_FILE
        if not candidate.is_file():
            raise NotFoundError(
                f"{path}: the folder has no {CONFIG_FILE}; give a model folder downloaded from the "
                "Hugging Face Hub, a config.json, a .gguf file or a spec YAML"
            )
        return candidate
    if not path.is_file():
        raise NotFoundError(f"model file not found: {path}")
    return path


def read_json_object(path: Path, display: str) -> dict[str, Any]:
    """Read a JSON file that must hold one object; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{display}: not valid UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecError(f"{display}: cannot read the file: {error.strerror}") from None
    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise SpecError(f"{display}: duplicate key {key!r}; a config must give each field once")
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=reject_duplicates)
    except json.JSONDecodeError as error:
        raise SpecError(f"{display}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise SpecError(f"{display}: invalid JSON: nested too deeply to be a model config") from None
    if not isinstance(data, dict):
        raise SpecError(f"{display}: expected a JSON object, found {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------
# Reading fields


class _TextConfig:
    """The language-model part of a config.json, with typed reads that name the field on error."""

    def __init__(self, data: dict[str, Any], outer: dict[str, Any], model_type: str, display: str, prefix: str) -> None:
        self.data = data
        self.outer = outer
        self.model_type = model_type
        self.display = display
        self.prefix = prefix
        self.defaults_used: dict[str, Any] = {}

    def _lookup(self, name: str) -> Any:
        for key in (name, *_FIELD_ALIASES.get(name, ())):
            if self.data.get(key) is not None:
                return self.data[key]
        return _MISSING

    def has(self, name: str) -> bool:
        return self._lookup(name) is not _MISSING or name in _CLASS_DEFAULTS.get(self.model_type, {})

    def raw(self, name: str, default: Any = None) -> Any:
        value = self._lookup(name)
        if value is not _MISSING:
            return value
        class_defaults = _CLASS_DEFAULTS.get(self.model_type, {})
        if name in class_defaults:
            self.defaults_used[name] = class_defaults[name]
            return class_defaults[name]
        return default

    def fail(self, name: str, message: str) -> SpecError:
        return SpecError(f"{self.display}: field '{self.prefix}{name}' (model_type {self.model_type}): {message}")

    def require(self, *names: str) -> None:
        """Raise one error listing every field in `names` that the config lacks."""
        missing = [name for name in names if not self.has(name)]
        if missing:
            listed = ", ".join(f"'{self.prefix}{name}'" for name in missing)
            raise SpecError(f"{self.display}: missing field{'s' if len(missing) > 1 else ''} {listed} "
                            f"for model_type {self.model_type}; kvsize needs "
                            f"{'them' if len(missing) > 1 else 'it'} to size the KV cache")  # fmt: skip

    def integer(self, name: str, default: Any = _MISSING, minimum: int = 1) -> int:
        value = self.raw(name, None)
        if value is None:
            if default is _MISSING:
                self.require(name)
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(name, f"expected an integer of at least {minimum}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name, None)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {value!r}")
        return value

    def string_list(self, name: str) -> list[str] | None:
        value = self.raw(name, None)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(name, f"expected a list of strings, got {value!r}")
        return value

    def inherited(self, name: str) -> Any:
        """Return a field of the text config, falling back to the wrapper's top level."""
        value = self.data.get(name)
        return value if value is not None else self.outer.get(name)


def _text_config(config: dict[str, Any], display: str) -> _TextConfig:
    model_type = config.get("model_type")
    text = config.get("text_config")
    if isinstance(text, dict):
        text_type = text.get("model_type") or _WRAPPER_TEXT_MODEL_TYPES.get(str(model_type))
        if text_type is None:
            raise SpecError(f"{display}: field 'text_config.model_type' is missing and the wrapper model_type "
                            f"{model_type!r} is not one kvsize knows; add the text model's model_type")  # fmt: skip
        return _TextConfig(text, config, str(text_type), display, "text_config.")
    if model_type is None:
        raise SpecError(f"{display}: missing field 'model_type'; kvsize needs it to know the attention layout "
                        f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")  # fmt: skip
    if not isinstance(model_type, str):
        raise SpecError(f"{display}: field 'model_type': expected a string, got {model_type!r}")
    if model_type in _WRAPPER_TEXT_MODEL_TYPES:
        raise SpecError(f"{display}: model_type {model_type!r} keeps its language model under 'text_config', "
                        "which is missing")  # fmt: skip
    return _TextConfig(config, config, model_type, display, "")


# ---------------------------------------------------------------------------
# Layers


def _head_dim(cfg: _TextConfig) -> int:
    """Return the explicit head_dim, else hidden_size / num_attention_heads (which must divide)."""
    if cfg.raw("head_dim") is not None:
        return cfg.integer("head_dim")
    hidden = cfg.integer("hidden_size")
    heads = cfg.integer("num_attention_heads")
    if hidden % heads:
        raise cfg.fail("head_dim", f"missing, and hidden_size {hidden} is not divisible by "
                       f"num_attention_heads {heads}; add head_dim")  # fmt: skip
    return hidden // heads


def _kv_heads(cfg: _TextConfig) -> int:
    """Return the KV heads; a config without num_key_value_heads is multi-head attention."""
    if cfg.model_type == "falcon":
        # transformers FalconAttention: grouped KV heads only with the new decoder architecture.
        if cfg.flag("new_decoder_architecture", False):
            return cfg.integer("num_kv_heads")
        return 1 if cfg.flag("multi_query", True) else cfg.integer("num_attention_heads")
    if cfg.raw("num_key_value_heads") is None:
        return cfg.integer("num_attention_heads")
    return cfg.integer("num_key_value_heads")


def _explicit_layer_kinds(cfg: _TextConfig, num_layers: int) -> list[str] | None:
    kinds = cfg.string_list("layer_types")
    if kinds is None:
        kinds = cfg.string_list("layers_block_type")
    if kinds is not None and len(kinds) != num_layers:
        key = "layer_types" if cfg.raw("layer_types") is not None else "layers_block_type"
        raise cfg.fail(key, f"lists {len(kinds)} layers but num_hidden_layers is {num_layers}")
    return kinds


def _sliding_kinds(cfg: _TextConfig, num_layers: int, rule: str) -> list[str]:
    """Return `full_attention` or `sliding_attention` per layer by the model type's rule."""
    window = cfg.raw("sliding_window")
    if rule == "none" or window is None:
        return ["full_attention"] * num_layers
    if rule == "all":
        return ["sliding_attention"] * num_layers
    if rule == "qwen":
        if not cfg.flag("use_sliding_window", False):
            return ["full_attention"] * num_layers
        first = cfg.integer("max_window_layers", minimum=0)
        return ["sliding_attention" if index >= first else "full_attention" for index in range(num_layers)]
    if rule == "alternate":
        return ["sliding_attention" if index % 2 == 0 else "full_attention" for index in range(num_layers)]
    period = cfg.integer("sliding_window_pattern")
    return ["full_attention" if (index + 1) % period == 0 else "sliding_attention" for index in range(num_layers)]


def _llama4_kinds(cfg: _TextConfig, num_layers: int) -> list[str]:
    """Return Llama 4's per-layer kinds: RoPE layers are chunked, NoPE layers attend globally.

    `no_rope_layers[i]` is 1 when layer i uses RoPE (transformers
    Llama4TextConfig); without the list, every `no_rope_layer_interval`-th
    layer (default 4) is a NoPE layer.
    """
    if cfg.raw("attention_chunk_size") is None:
        return ["full_attention"] * num_layers
    flags = cfg.raw("no_rope_layers")
    if not flags:
        interval = cfg.integer("no_rope_layer_interval", default=4)
        flags = [int((index + 1) % interval != 0) for index in range(num_layers)]
    if not isinstance(flags, list) or len(flags) != num_layers or not all(flag in (0, 1) for flag in flags):
        raise cfg.fail("no_rope_layers", f"expected {num_layers} entries of 0 or 1, got {flags!r}")
    return ["chunked_attention" if flag else "full_attention" for flag in flags]


def _attention_layer(kind: str, cfg: _TextConfig, kv_heads: int, head_dim: int, max_positions: int) -> tuple[dict[str, Any], str]:
    if kind == "sliding_attention":
        window = cfg.integer("sliding_window")
        if window < max_positions:
            return {"kind": "sliding", "num_kv_heads": kv_heads, "head_dim": head_dim, "sliding_window": window}, "sliding"
    if kind == "chunked_attention":
        chunk = cfg.integer("attention_chunk_size")
        if chunk < max_positions:
            return ({"kind": "chunked", "num_kv_heads": kv_heads, "head_dim": head_dim, "attention_chunk_size": chunk},
                    "chunked")  # fmt: skip
    return {"kind": "full", "num_kv_heads": kv_heads, "head_dim": head_dim}, "full"


def _mamba_state_elements(cfg: _TextConfig) -> int:
    """Return one Mamba layer's state: conv (d_conv - 1) x d_inner plus SSM d_inner x d_state.

    d_inner = mamba_expand x hidden_size. Jamba v0.1: 3 x 8192 + 8192 x 16 = 155,648.
    """
    d_inner = cfg.integer("mamba_expand") * cfg.integer("hidden_size")
    return (cfg.integer("mamba_d_conv") - 1) * d_inner + d_inner * cfg.integer("mamba_d_state")


def _gated_delta_net_state_elements(cfg: _TextConfig) -> int:
    """Return one Gated DeltaNet layer's state: conv state plus recurrent state.

    conv (kernel - 1) x (2 x key_heads x key_dim + value_heads x value_dim) and
    recurrent value_heads x value_dim x key_dim. Qwen3-Next 80B:
    3 x (2 x 16 x 128 + 32 x 128) + 32 x 128 x 128 = 24,576 + 524,288 = 548,864.
    """
    key_heads = cfg.integer("linear_num_key_heads")
    key_dim = cfg.integer("linear_key_head_dim")
    value_heads = cfg.integer("linear_num_value_heads")
    value_dim = cfg.integer("linear_value_head_dim")
    conv = (cfg.integer("linear_conv_kernel_dim") - 1) * (2 * key_heads * key_dim + value_heads * value_dim)
    return conv + value_heads * value_dim * key_dim


@dataclass
class _Layers:
    definitions: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, definition: dict[str, Any], name: str) -> None:
        self.definitions.append(definition)
        self.names.append(name)


def _add_hybrid_layers(cfg, layers, kinds: list[str], field: str, definitions: dict[str, dict[str, Any]]):
    """Add one layer per entry of `kinds` (a state or an attention layer name) and return `layers`."""
    for kind in kinds:
        if kind not in definitions:
            expected = " or ".join(definitions)
            raise cfg.fail(field, f"unknown layer kind {kind!r}; expected {expected}")
        layers.add(definitions[kind], kind)
    return layers


def _layers(cfg: _TextConfig, dtype: str, max_positions: int, notes: list[str]) -> _Layers:
    model_type = cfg.model_type
    num_layers = cfg.integer("num_hidden_layers")
    layers = _Layers()

    if model_type in _MLA_MODEL_TYPES:
        cfg.require("kv_lora_rank", "qk_rope_head_dim")
        latent: dict[str, Any] = {"kind": "mla", "kv_lora_rank": cfg.integer("kv_lora_rank"),
                                  "qk_rope_head_dim": cfg.integer("qk_rope_head_dim")}  # fmt: skip
        if model_type == "deepseek_v32":
            latent["indexer_head_dim"] = cfg.integer("index_head_dim")
        for _ in range(num_layers):
            layers.add(latent, "attention")
        return layers

    kv_heads = _kv_heads(cfg)
    head_dim = _head_dim(cfg)
    explicit = _explicit_layer_kinds(cfg, num_layers)

    if model_type == "jamba":
        if explicit is None:
            period = cfg.integer("attn_layer_period")
            offset = cfg.integer("attn_layer_offset", minimum=0)
            explicit = ["attention" if index % period == offset else "mamba" for index in range(num_layers)]
        state = {"kind": "state", "state_elements": _mamba_state_elements(cfg), "state_dtype": dtype}
        attention = {"kind": "full", "num_kv_heads": kv_heads, "head_dim": head_dim}
        return _add_hybrid_layers(cfg, layers, explicit, "layers_block_type", {"mamba": state, "attention": attention})

    if model_type in _LINEAR_ATTENTION_MODEL_TYPES:
        if explicit is None:
            interval = cfg.integer("full_attention_interval")
            explicit = ["full_attention" if (index + 1) % interval == 0 else "linear_attention" for index in range(num_layers)]
        state = {"kind": "state", "state_elements": _gated_delta_net_state_elements(cfg), "state_dtype": dtype}
        attention = {"kind": "full", "num_kv_heads": kv_heads, "head_dim": head_dim}
        return _add_hybrid_layers(cfg, layers, explicit, "layer_types",
                                  {"linear_attention": state, "full_attention": attention})  # fmt: skip

    if explicit is None:
        if model_type == "llama4_text":
            explicit = _llama4_kinds(cfg, num_layers)
        else:
            explicit = _sliding_kinds(cfg, num_layers, _ATTENTION_MODEL_TYPES.get(model_type, "none"))
    for kind in explicit:
        if kind not in ("full_attention", "sliding_attention", "chunked_attention"):
            raise cfg.fail("layer_types", f"unknown layer kind {kind!r}; kvsize supports full_attention, "
                           "sliding_attention and chunked_attention for this model type")  # fmt: skip
        layers.add(*_attention_layer(kind, cfg, kv_heads, head_dim, max_positions))
    if any(kind != "full_attention" for kind in explicit) and set(layers.names) == {"full"}:
        notes.append(f"The window of the windowed layers is not smaller than max_position_embeddings "
                     f"({max_positions}), so every layer is sized as full attention.")  # fmt: skip

    shared = cfg.integer("num_kv_shared_layers", default=0, minimum=0)
    if shared:
        _share_kv(layers, num_layers - shared, cfg)
        notes.append(f"The last {shared} layers reuse the KV cache of the last earlier layer of the same "
                     "attention kind (num_kv_shared_layers) and store nothing.")  # fmt: skip
    return layers


def _share_kv(layers: _Layers, first_shared: int, cfg: _TextConfig) -> None:
    """Turn layers from `first_shared` on into readers of the last earlier layer of the same kind (Gemma 3n)."""
    if first_shared < 1:
        raise cfg.fail("num_kv_shared_layers", "must be smaller than num_hidden_layers")
    for index in range(first_shared, len(layers.names)):
        target = layers.names[index]
        if target not in layers.names[:first_shared]:
            raise cfg.fail("num_kv_shared_layers", f"layer {index} ({target}) has no earlier layer of its kind to reuse")
        layers.definitions[index] = {"kind": "shared", "reuses": target}
        layers.names[index] = f"shared_{target}"


# ---------------------------------------------------------------------------
# Precision and parameters


def _activation_dtype(cfg: _TextConfig) -> str:
    raw = cfg.inherited("torch_dtype") or cfg.inherited("dtype")
    if raw is None:
        raise SpecError(f"{cfg.display}: missing field 'torch_dtype' (or 'dtype'); kvsize needs the checkpoint's "
                        "dtype (bfloat16, float16 or float32) for the default KV-cache and weight precision")  # fmt: skip
    dtype = _TORCH_DTYPES.get(str(raw).removeprefix("torch."))
    if dtype is None:
        raise SpecError(f"{cfg.display}: field 'torch_dtype': unsupported dtype {raw!r}; "
                        f"expected one of {', '.join(sorted(_TORCH_DTYPES))}")  # fmt: skip
    return dtype


def _quantized_weight_dtype(cfg: _TextConfig, notes: list[str]) -> str | None:
    """Return the weight format a `quantization_config` declares, or None when there is none."""
    quant = cfg.inherited("quantization_config")
    if quant is None:
        return None
    if not isinstance(quant, dict):
        raise SpecError(f"{cfg.display}: field 'quantization_config': expected an object, got {quant!r}")
    method = str(quant.get("quant_method", "")).lower()
    bits = quant.get("bits")
    if method in ("fp8", "fbgemm_fp8"):
        dtype = "fp8"
    elif method == "mxfp4":
        dtype = "mxfp4"
    elif method in ("gptq", "awq", "auto-round", "autoround") and bits in (4, 8):
        dtype = "int4" if bits == 4 else "int8"
    elif method == "bitsandbytes" and (quant.get("load_in_4bit") or quant.get("load_in_8bit")):
        dtype = "int4" if quant.get("load_in_4bit") else "int8"
    elif method == "compressed-tensors":
        dtype = _compressed_tensors_dtype(quant, cfg)
    elif method == "modelopt":
        algorithm = str(quant.get("quant_algo", "")).upper()
        dtype = {"FP8": "fp8", "NVFP4": "nvfp4", "W4A16_AWQ": "int4", "W4A8_AWQ": "int4"}.get(algorithm, "")
        if not dtype:
            raise SpecError(f"{cfg.display}: field 'quantization_config.quant_algo': unsupported value {algorithm!r}")
        if quant.get("kv_cache_quant_algo"):
            notes.append(f"The checkpoint ships {quant['kv_cache_quant_algo']} KV-cache scales "
                         "(kv_cache_quant_algo); pass --kv-cache-dtype fp8 when the server uses them.")  # fmt: skip
    else:
        raise SpecError(f"{cfg.display}: field 'quantization_config.quant_method': unsupported value {method!r}"
                        f"{f' with bits {bits!r}' if bits is not None else ''}; kvsize reads fp8, mxfp4, "
                        "gptq/awq (4 or 8 bits), bitsandbytes, compressed-tensors and modelopt")  # fmt: skip
    notes.append(f"quantization_config: {method} weights, recorded as weight_dtype {dtype}.")
    return dtype


def _compressed_tensors_dtype(quant: dict[str, Any], cfg: _TextConfig) -> str:
    groups = quant.get("config_groups") or {}
    weights = [group.get("weights") for group in groups.values() if isinstance(group, dict)]
    weights = [item for item in weights if isinstance(item, dict)]
    if not weights:
        raise SpecError(f"{cfg.display}: field 'quantization_config.config_groups': no weight scheme found")
    scheme = weights[0]
    bits, kind = scheme.get("num_bits"), scheme.get("type")
    if kind == "float" and bits == 8:
        return "fp8"
    if kind == "float" and bits == 4:
        return "nvfp4" if scheme.get("group_size") == 16 else "mxfp4"
    if kind == "int" and bits in (4, 8):
        return "int4" if bits == 4 else "int8"
    raise SpecError(f"{cfg.display}: field 'quantization_config.config_groups': unsupported weight scheme "
                    f"({bits!r}-bit {kind!r})")  # fmt: skip


def _kv_cache_scheme_note(cfg: _TextConfig) -> str | None:
    quant = cfg.inherited("quantization_config")
    scheme = quant.get("kv_cache_scheme") if isinstance(quant, dict) else None
    if not isinstance(scheme, dict):
        return None
    bits, kind = scheme.get("num_bits"), scheme.get("type")
    name = "fp8" if (bits, kind) == (8, "float") else f"{bits}-bit {kind}"
    return (f"The checkpoint ships {name} KV-cache scales (kv_cache_scheme). Engines use them only when "
            f"told to store the cache in {name}, so pass --kv-cache-dtype {name if name == 'fp8' else 'intN'} "
            "to size that cache.")  # fmt: skip


def count_parameters(cfg: _TextConfig) -> int | None:
    """Count the parameters of a dense or mixture-of-experts Llama-style decoder from its dimensions.

    embeddings  vocab x hidden (twice unless tie_word_embeddings)
    per layer   attention q, k, v, o: hidden x (heads x head_dim), 2 x hidden x (kv_heads x head_dim),
                (heads x head_dim) x hidden, plus biases (Qwen2 on q/k/v; attention_bias on all four)
                and per-head q/k norms (Qwen3); MLP gate, up, down: 3 x hidden x intermediate, or for a
                MoE layer experts x 3 x hidden x expert width plus a router of hidden x experts;
                two RMSNorm weights of hidden each
    final norm  hidden
    Llama 3 8B: 2 x 525,336,576 + 32 x 218,112,000 + 4,096 = 8,030,261,248.
    Returns None for model types the formula does not describe.
    """
    families = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi3"}
    if cfg.model_type not in families:
        return None
    hidden = cfg.integer("hidden_size")
    vocab = cfg.integer("vocab_size")
    heads = cfg.integer("num_attention_heads")
    num_layers = cfg.integer("num_hidden_layers")
    kv_width = _kv_heads(cfg) * _head_dim(cfg)
    q_width = heads * _head_dim(cfg)

    attention = 2 * hidden * q_width + 2 * hidden * kv_width
    if cfg.model_type == "qwen2":
        attention += q_width + 2 * kv_width
    elif cfg.flag("attention_bias", False):
        attention += q_width + 2 * kv_width + hidden
    if cfg.model_type in ("qwen3", "qwen3_moe"):
        attention += 2 * _head_dim(cfg)

    def dense_mlp() -> int:
        width = cfg.integer("intermediate_size")
        mlp = 3 * hidden * width
        if cfg.flag("mlp_bias", False):
            mlp += 2 * width + hidden
        return mlp

    total = 0
    for index in range(num_layers):
        if cfg.model_type == "mixtral":
            experts = cfg.integer("num_local_experts")
            mlp = experts * 3 * hidden * cfg.integer("intermediate_size") + hidden * experts
        elif cfg.model_type == "qwen3_moe" and _is_qwen_moe_layer(cfg, index):
            experts = cfg.integer("num_experts")
            mlp = experts * 3 * hidden * cfg.integer("moe_intermediate_size") + hidden * experts
        else:
            mlp = dense_mlp()
        total += attention + mlp + 2 * hidden

    embeddings = vocab * hidden
    tied = cfg.flag("tie_word_embeddings", False)
    return total + embeddings * (1 if tied else 2) + hidden


def _is_qwen_moe_layer(cfg: _TextConfig, index: int) -> bool:
    """Return whether a Qwen MoE layer is sparse (transformers: not in mlp_only_layers, on the sparse step)."""
    dense_layers = cfg.raw("mlp_only_layers") or []
    step = cfg.integer("decoder_sparse_step", default=1)
    return index not in dense_layers and cfg.integer("num_experts") > 0 and (index + 1) % step == 0


def read_safetensors_header(path: Path) -> tuple[int, int, bool]:
    """Read only the JSON header of a .safetensors file; return (parameters, tensor bytes, all floating point).

    The file starts with an 8-byte little-endian header length and the header,
    which lists each tensor's dtype, shape and byte offsets.
    """
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= 100 * 2**20:
                raise SpecError(f"{path}: not a safetensors file (header length {length})")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as error:
        raise SpecError(f"{path}: cannot read the safetensors header: {error}") from None
    params = 0
    total_bytes = 0
    floating = True
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        params += math.prod(entry.get("shape", []))
        start, end = entry.get("data_offsets", (0, 0))
        total_bytes += end - start
        floating = floating and str(entry.get("dtype", "")).startswith(("F", "BF"))
    return params, total_bytes, floating


def _weights_and_params(cfg: _TextConfig, files: HfModelFiles, weight_dtype: str,
                        notes: list[str], sources: list[str]) -> dict[str, Any]:  # fmt: skip
    formula = count_parameters(cfg)
    if files.index_path is not None:
        index = read_json_object(files.index_path, str(files.index_path))
        metadata = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
        total_size = metadata.get("total_size")
        if not isinstance(total_size, int) or isinstance(total_size, bool) or total_size <= 0:
            raise SpecError(f"{files.index_path}: field 'metadata.total_size': expected a positive integer, "
                            f"got {total_size!r}")  # fmt: skip
        sources.append(f"{files.index_path.name} beside the config: metadata total_size {total_size}")
        total_parameters = metadata.get("total_parameters")
        if isinstance(total_parameters, int) and total_parameters > 0:
            return {"params_total": total_parameters, "params_exact": True, "weights_bytes": total_size}
        if formula is not None:
            notes.append("params_total is computed from the config dimensions (an estimate); "
                         "weights_bytes is the checkpoint's total_size.")  # fmt: skip
            return {"params_total": formula, "params_exact": False, "weights_bytes": total_size}
        bits = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int8": 8, "int4": 4, "mxfp4": 4, "nvfp4": 4}[weight_dtype]
        notes.append(f"params_total is the checkpoint's total_size divided by {bits} bits per weight "
                     f"({weight_dtype}), an estimate; weights_bytes is the exact total_size.")  # fmt: skip
        return {"params_total": total_size * 8 // bits, "params_exact": False, "weights_bytes": total_size}

    if files.safetensors_path is not None:
        params, total_bytes, floating = read_safetensors_header(files.safetensors_path)
        sources.append(f"{SAFETENSORS_FILE} header beside the config: {params} parameters, {total_bytes} bytes")
        if params > 0:
            if not floating:
                notes.append("params_total counts the stored elements of packed quantized tensors, an estimate.")
            return {"params_total": params, "params_exact": floating, "weights_bytes": total_bytes}

    if formula is not None:
        notes.append("params_total is computed from the config dimensions (an estimate; the formula is in "
                     "docs/importing.md) because no safetensors index was found beside the config.")  # fmt: skip
        return {"params_total": formula, "params_exact": False}
    raise SpecError(f"{files.display_path}: cannot count the parameters of model_type {cfg.model_type} from "
                    f"config.json alone; put {INDEX_FILE} (or {SAFETENSORS_FILE}) from the model repository "
                    "beside it")  # fmt: skip


# ---------------------------------------------------------------------------
# The mapping


def model_fields_from_hf_config(config: dict[str, Any], files: HfModelFiles, model_id: str,
                                name: str) -> dict[str, Any]:  # fmt: skip
    """Map a parsed config.json onto the fields of a kvsize model spec (the mapping a spec YAML holds)."""
    display = files.display_path
    cfg = _text_config(config, display)
    if cfg.model_type not in SUPPORTED_MODEL_TYPES:
        raise SpecError(f"{display}: unsupported model_type {cfg.model_type!r}; kvsize maps "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)}. For another architecture, write a spec YAML "
                        "(docs/spec-format.md); 'kvsize import' of a similar model gives a starting point")  # fmt: skip
    required = ["num_hidden_layers", "num_attention_heads", "hidden_size", "max_position_embeddings"]
    if cfg.model_type in ("jamba",):
        required += ["mamba_d_state", "mamba_d_conv", "mamba_expand"]
    if cfg.model_type in _LINEAR_ATTENTION_MODEL_TYPES:
        required += ["linear_conv_kernel_dim", "linear_num_key_heads", "linear_key_head_dim",
                     "linear_num_value_heads", "linear_value_head_dim"]  # fmt: skip
    if cfg.model_type in _MLA_MODEL_TYPES:
        required += ["kv_lora_rank", "qk_rope_head_dim"]
    cfg.require(*required)

    notes: list[str] = []
    sources = [f"{display}: Hugging Face config.json, model_type {cfg.model_type}"
               + (f" inside {config.get('model_type')} text_config" if cfg.prefix else "")]  # fmt: skip
    activation_dtype = _activation_dtype(cfg)
    weight_dtype = _quantized_weight_dtype(cfg, notes) or activation_dtype
    max_positions = cfg.integer("max_position_embeddings")
    layers = _layers(cfg, activation_dtype, max_positions, notes)
    layer_types, sequence = assign_layer_names(layers.definitions, layers.names)

    nextn = cfg.integer("num_nextn_predict_layers", default=0, minimum=0) or cfg.integer(
        "mtp_num_hidden_layers", default=0, minimum=0)
    if nextn:
        notes.append(f"The {nextn} multi-token-prediction layer(s) are not counted in num_layers; an engine "
                     "that runs them for speculative decoding keeps a cache for them too.")  # fmt: skip
    kv_scheme_note = _kv_cache_scheme_note(cfg)
    if kv_scheme_note:
        notes.append(kv_scheme_note)
    if cfg.defaults_used:
        listed = ", ".join(f"{key} {value}" for key, value in sorted(cfg.defaults_used.items()))
        notes.append(f"config.json omits fields that kvsize filled with the transformers defaults for "
                     f"{cfg.model_type}: {listed}.")  # fmt: skip

    fields: dict[str, Any] = {
        "id": model_id,
        "name": name,
        "family": cfg.model_type.removesuffix("_text").replace("_", "-"),
    }
    if files.hf_id:
        fields["hf_id"] = files.hf_id
    fields.update(_weights_and_params(cfg, files, weight_dtype, notes, sources))
    fields.update({
        "weight_dtype": weight_dtype,
        "max_position_embeddings": max_positions,
        "hidden_size": cfg.integer("hidden_size"),
        "num_attention_heads": cfg.integer("num_attention_heads"),
    })  # fmt: skip
    vocab = cfg.raw("vocab_size")
    if isinstance(vocab, int) and vocab > 0:
        fields["vocab_size"] = vocab
    intermediate = cfg.raw("intermediate_size") if cfg.model_type != "opt" else cfg.raw("ffn_dim")
    if isinstance(intermediate, int) and intermediate > 0:
        fields["intermediate_size"] = intermediate
    fields["num_layers"] = len(sequence)
    fields["layer_types"] = layer_types
    fields.update(compress_layer_sequence(sequence))
    fields["source"] = sources
    if notes:
        fields["notes"] = " ".join(notes)
    return fields
