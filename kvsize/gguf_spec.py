"""GGUF files mapped onto kvsize model specs (the optional `gguf` extra).

The `gguf` package memory-maps the file and parses the metadata and the
tensor table at its start; tensor data pages are never read. The KV shape
comes from llama.cpp's metadata keys (`{arch}.block_count`,
`{arch}.attention.head_count_kv`, ...). The weights size is the sum of the
tensors' stored sizes, so quantized files (Q4_K_M, Q8_0, ...) are sized
exactly, and the parameter count is the sum of their element counts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kvsize.errors import KvsizeError, NotFoundError, SpecError
from kvsize.spec_builder import assign_layer_names, compress_layer_sequence

# llama.cpp fixes the sliding-window layout per architecture in its model
# loader (src/llama-model.cpp, `hparams.set_swa_pattern(n)`): in every group
# of n layers the last one attends globally and the others use the window.
_SWA_PERIODS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2}
# Gemma 2 GGUFs written before the key existed use Gemma 2's window.
_DEFAULT_SLIDING_WINDOW = {"gemma2": 4096}
# Llama 4: llama.cpp hard-codes 8192-token chunks with every fourth layer global.
_LLAMA4_CHUNK_SIZE = 8192
_LLAMA4_PERIOD = 4
# Architectures whose recurrent layers hold a Mamba-1 state (conv + SSM).
_MAMBA1_ARCHITECTURES = {"mamba", "jamba"}

# Encoder-only architectures keep no KV cache during generation.
_ENCODER_ARCHITECTURES = {"bert", "nomic-bert", "jina-bert-v2", "t5encoder", "roberta", "xlm-roberta"}

# general.file_type values (llama.cpp's llama_ftype) and the weight format
# kvsize records for them. The weights size itself comes from the tensor
# table, so this name only labels the file and sets the default KV dtype.
_FILE_TYPE_WEIGHT_DTYPE = {0: "fp32", 1: "fp16", 32: "bf16", 7: "int8", 38: "mxfp4", 39: "nvfp4"}


class _Metadata:
    """The key-value metadata of one GGUF file, read with the architecture prefix."""

    def __init__(self, fields: dict[str, Any], display: str) -> None:
        self.fields = fields
        self.display = display
        architecture = fields.get("general.architecture")
        if not isinstance(architecture, str) or not architecture:
            raise SpecError(f"{display}: missing GGUF key 'general.architecture'")
        if architecture in _ENCODER_ARCHITECTURES:
            raise SpecError(f"{display}: architecture {architecture!r} is an encoder without a KV cache; "
                            "kvsize sizes decoder models")  # fmt: skip
        self.arch = architecture

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def get(self, suffix: str, default: Any = None) -> Any:
        return self.fields.get(self.key(suffix), default)

    def require(self, *suffixes: str) -> None:
        missing = [self.key(suffix) for suffix in suffixes if self.key(suffix) not in self.fields]
        if missing:
            raise SpecError(f"{self.display}: missing GGUF key{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(key) for key in missing)} for architecture {self.arch!r}")  # fmt: skip

    def integer(self, suffix: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.get(suffix)
        if value is None:
            if default is None:
                self.require(suffix)
            return default  # type: ignore[return-value]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(f"{self.display}: GGUF key '{self.key(suffix)}': expected an integer of at least "
                            f"{minimum}, got {value!r}")  # fmt: skip
        return value

    def per_layer(self, suffix: str, num_layers: int, default: int | None = None, minimum: int = 0) -> list[int]:
        """Return a scalar or per-layer array key as one value per layer."""
        value = self.get(suffix)
        if value is None:
            if default is None:
                self.require(suffix)
            return [default] * num_layers  # type: ignore[list-item]
        values = value if isinstance(value, list) else [value] * num_layers
        if len(values) != num_layers or not all(isinstance(item, int) and item >= minimum for item in values):
            raise SpecError(f"{self.display}: GGUF key '{self.key(suffix)}': expected {num_layers} integers "
                            f"of at least {minimum}, got {value!r}")  # fmt: skip
        return values


def read_gguf(path: Path) -> tuple[dict[str, Any], list[tuple[int, int, int]]]:
    """Read a GGUF file's metadata and its tensor table as (type, elements, bytes) per tensor."""
    try:
        from gguf import GGML_QUANT_SIZES, GGUFReader
    except ImportError:
        raise KvsizeError(f"{path}: reading GGUF files needs the optional 'gguf' extra; "
                          "run: pip install 'kvsize[gguf]'") from None
    if not path.is_file():
        raise NotFoundError(f"model file not found: {path}")
    try:
        reader = GGUFReader(path, "r")
    except (ValueError, OSError, KeyError, IndexError) as error:
        raise SpecError(f"{path}: not a readable GGUF file: {error}") from None

    fields: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if name.startswith("tokenizer.ggml."):
            # Vocabularies hold 100k+ strings; only their length is used, so skip decoding them.
            fields[f"{name}#count"] = len(field.data)
            continue
        fields[name] = field.contents()
    tensors = []
    for tensor in reader.tensors:
        # Each ggml type stores blocks of `block_size` elements in `type_size` bytes
        # (Q4_K: 256 elements in 144 bytes, 4.5 bits each).
        block_size, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
        elements = int(tensor.n_elements)
        tensors.append((int(tensor.tensor_type), elements, elements // block_size * type_size))
    return fields, tensors


def _split_files(path: Path, fields: dict[str, Any]) -> list[Path]:
    """Return every shard of a split GGUF (`name-00001-of-00003.gguf`); the first contains the metadata."""
    count = fields.get("split.count")
    if not isinstance(count, int) or count <= 1:
        return [path]
    match = re.fullmatch(r"(.*)-(\d{5})-of-(\d{5})\.gguf", path.name)
    if match is None:
        raise SpecError(f"{path}: the file is one of {count} shards, but its name does not follow the "
                        "NAME-00001-of-0000N.gguf pattern that locates the others")  # fmt: skip
    shards = [path.with_name(f"{match.group(1)}-{index:05d}-of-{count:05d}.gguf") for index in range(1, count + 1)]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise NotFoundError(f"{path}: missing shard file(s) {', '.join(missing)}; kvsize needs every shard's tensor table")
    return shards


def _weight_dtype(fields: dict[str, Any], tensors: list[tuple[int, int, int]]) -> str:
    file_type = fields.get("general.file_type")
    if isinstance(file_type, int) and file_type in _FILE_TYPE_WEIGHT_DTYPE:
        return _FILE_TYPE_WEIGHT_DTYPE[file_type]
    if isinstance(file_type, int):
        return "int4"
    # No file type: label the file by the type holding most of its bytes (ggml F32 = 0, F16 = 1, BF16 = 30).
    by_type: dict[int, int] = {}
    for ggml_type, _, size in tensors:
        by_type[ggml_type] = by_type.get(ggml_type, 0) + size
    dominant = max(by_type, key=by_type.__getitem__) if by_type else 30
    return {0: "fp32", 1: "fp16", 30: "bf16", 8: "int8"}.get(dominant, "int4")


def _sliding_flags(meta: _Metadata, num_layers: int) -> list[bool] | None:
    """Return which layers use the sliding window, or None when the file sets no window."""
    window = meta.get("attention.sliding_window", _DEFAULT_SLIDING_WINDOW.get(meta.arch))
    if not window:
        return None
    pattern = meta.get("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        if len(pattern) != num_layers:
            raise SpecError(f"{meta.display}: GGUF key '{meta.key('attention.sliding_window_pattern')}' lists "
                            f"{len(pattern)} layers but block_count is {num_layers}")  # fmt: skip
        return [bool(flag) for flag in pattern]
    period = pattern if isinstance(pattern, int) and pattern > 0 else _SWA_PERIODS.get(meta.arch)
    if period is None:
        return None
    return [index % period < period - 1 for index in range(num_layers)]


def _state_elements(meta: _Metadata) -> int:
    """Return one Mamba-1 layer's state: conv (d_conv - 1) x d_inner plus SSM d_inner x d_state."""
    meta.require("ssm.conv_kernel", "ssm.inner_size", "ssm.state_size")
    d_inner = meta.integer("ssm.inner_size")
    return (meta.integer("ssm.conv_kernel") - 1) * d_inner + d_inner * meta.integer("ssm.state_size")


def _layers(meta: _Metadata, num_layers: int, max_positions: int, notes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    heads = meta.per_layer("attention.head_count", num_layers)
    query_heads = next((count for count in heads if count), 0)
    kv_heads = meta.per_layer("attention.head_count_kv", num_layers, default=query_heads)
    embedding = meta.integer("embedding_length")
    default_head_dim = embedding // query_heads if query_heads else None
    has_lengths = meta.fields.get(meta.key("attention.key_length")) is not None
    if query_heads and embedding % query_heads and not has_lengths:
        raise SpecError(f"{meta.display}: embedding_length {embedding} is not a multiple of the {query_heads} "
                        "attention heads and the file gives no attention.key_length; the head size is unknown")  # fmt: skip
    key_length = meta.integer("attention.key_length", default=default_head_dim)
    value_length = meta.integer("attention.value_length", default=default_head_dim)

    definitions: list[dict[str, Any]] = []
    names: list[str] = []
    if meta.get("attention.kv_lora_rank") is not None:
        # llama.cpp caches MLA as one latent of kv_lora_rank plus the RoPE part of the key.
        latent: dict[str, Any] = {"kind": "mla", "kv_lora_rank": meta.integer("attention.kv_lora_rank"),
                                  "qk_rope_head_dim": meta.integer("rope.dimension_count")}  # fmt: skip
        if meta.get("attention.indexer.key_length") is not None:
            latent["indexer_head_dim"] = meta.integer("attention.indexer.key_length")
        return [latent] * num_layers, ["attention"] * num_layers

    chunked = meta.arch == "llama4" and meta.get("attention.sliding_window", _LLAMA4_CHUNK_SIZE) != 0
    sliding = None if chunked else _sliding_flags(meta, num_layers)
    if meta.get("attention.sliding_window") and sliding is None:
        notes.append(f"The file sets a sliding window but kvsize does not know which layers of architecture "
                     f"{meta.arch} use it, so every layer is sized as full attention (an upper bound).")  # fmt: skip
    head_fields = ({"head_dim": key_length} if key_length == value_length
                   else {"k_head_dim": key_length, "v_head_dim": value_length})  # fmt: skip

    for index in range(num_layers):
        if kv_heads[index] == 0:
            if meta.arch not in _MAMBA1_ARCHITECTURES:
                raise SpecError(f"{meta.display}: layer {index} has no KV heads (a recurrent layer), and kvsize "
                                f"does not know the state size of architecture {meta.arch!r}'s recurrent layers")  # fmt: skip
            # llama.cpp keeps recurrent states in f32 by default.
            definitions.append({"kind": "state", "state_elements": _state_elements(meta), "state_dtype": "fp32"})
            names.append("mamba")
            continue
        attention = {"kind": "full", "num_kv_heads": kv_heads[index], **head_fields}
        if chunked and index % _LLAMA4_PERIOD < _LLAMA4_PERIOD - 1:
            attention = {**attention, "kind": "chunked", "attention_chunk_size": _LLAMA4_CHUNK_SIZE}
        elif sliding is not None and sliding[index]:
            window = int(meta.get("attention.sliding_window", _DEFAULT_SLIDING_WINDOW.get(meta.arch, 0)))
            if window < max_positions:
                attention = {**attention, "kind": "sliding", "sliding_window": window}
        definitions.append(attention)
        names.append(attention["kind"])

    shared = meta.integer("attention.shared_kv_layers", default=0, minimum=0)
    if shared:
        first_shared = num_layers - shared
        for index in range(first_shared, num_layers):
            if names[index] not in names[:first_shared]:
                raise SpecError(f"{meta.display}: layer {index} shares the KV cache of an earlier "
                                f"{names[index]} layer, but there is none")  # fmt: skip
            definitions[index] = {"kind": "shared", "reuses": names[index]}
            names[index] = f"shared_{names[index]}"
    return definitions, names


def model_fields_from_gguf(path: Path, model_id: str) -> dict[str, Any]:
    """Map a GGUF file's metadata and tensor table onto the fields of a kvsize model spec."""
    fields, tensors = read_gguf(path)
    display = str(path)
    meta = _Metadata(fields, display)
    for shard in _split_files(path, fields)[1:]:
        tensors.extend(read_gguf(shard)[1])
    if not tensors:
        raise SpecError(f"{display}: the file has no tensors; kvsize sizes the weights from the tensor table, "
                        "so give the model file itself, not a vocabulary-only or metadata-only GGUF")  # fmt: skip
    meta.require("block_count", "context_length", "embedding_length", "attention.head_count")

    notes: list[str] = []
    block_count = meta.integer("block_count")
    nextn = meta.integer("nextn_predict_layers", default=0, minimum=0)
    num_layers = block_count - nextn
    if nextn:
        notes.append(f"block_count {block_count} includes {nextn} multi-token-prediction layer(s), which are "
                     "not counted in num_layers.")  # fmt: skip
    max_positions = meta.integer("context_length")
    definitions, names = _layers(meta, num_layers, max_positions, notes)
    layer_types, sequence = assign_layer_names(definitions, names)

    weight_dtype = _weight_dtype(fields, tensors)
    notes.append(f"weights_bytes sums the {len(tensors)} tensors of the file; weight_dtype {weight_dtype} "
                 "only labels its quantization. llama.cpp stores the KV cache in f16 unless told otherwise "
                 "(--cache-type-k, --cache-type-v).")  # fmt: skip
    heads = meta.per_layer("attention.head_count", num_layers)
    vocab = meta.get("vocab_size")
    if not isinstance(vocab, int):
        vocab = fields.get("tokenizer.ggml.tokens#count")
    feed_forward = meta.get("feed_forward_length")
    if isinstance(feed_forward, list):
        feed_forward = max(feed_forward, default=None)

    name = fields.get("general.name")
    spec: dict[str, Any] = {
        "id": model_id,
        "name": name if isinstance(name, str) and name.strip() else path.stem,
        "family": meta.arch.lower().replace("_", "-"),
        "params_total": sum(elements for _, elements, _ in tensors),
        "params_exact": True,
        "weights_bytes": sum(size for _, _, size in tensors),
        "weight_dtype": weight_dtype,
        "max_position_embeddings": max_positions,
        "hidden_size": meta.integer("embedding_length"),
        "num_attention_heads": max(heads),
    }
    if isinstance(vocab, int) and vocab > 0:
        spec["vocab_size"] = vocab
    if isinstance(feed_forward, int) and feed_forward > 0:
        spec["intermediate_size"] = feed_forward
    spec["num_layers"] = num_layers
    spec["layer_types"] = layer_types
    spec.update(compress_layer_sequence(sequence))
    spec["source"] = [f"{display}: GGUF metadata (architecture {meta.arch}) and tensor table"]
    spec["notes"] = " ".join(notes)
    return spec
