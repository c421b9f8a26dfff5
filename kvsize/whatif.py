"""Architecture what-ifs: a changed copy of a model spec, without editing its YAML.

Each change returns a new ModelSpec whose `variant` names the change, so
every estimate made from it lists the technique applied.
"""

from __future__ import annotations

import dataclasses

from kvsize.errors import InvalidInputError
from kvsize.layers import FullAttention, SharedKV, SlidingWindowAttention
from kvsize.specs import ModelSpec


def _with_layers(model: ModelSpec, layer_types: dict, names: list[str], change: str) -> ModelSpec:
    return dataclasses.replace(model, layer_types=layer_types, layer_type_names=tuple(names),
                               variant=(*model.variant, change))  # fmt: skip


def with_kv_heads(model: ModelSpec, num_kv_heads: int) -> ModelSpec:
    """Give every attention layer `num_kv_heads` KV heads (1 is MQA); latent and state layers keep theirs."""
    if num_kv_heads < 1 or model.num_attention_heads % num_kv_heads:
        raise InvalidInputError(
            f"invalid value for --kv-heads: {num_kv_heads}; it must divide the {model.num_attention_heads} "
            f"attention heads of {model.id} (1 means multi-query attention)"
        )
    if not any(isinstance(layer, FullAttention) for layer in model.layer_types.values()):
        raise InvalidInputError(f"--kv-heads does not apply to {model.id}: it has no layer with KV heads (MLA or state only)")
    layer_types = {
        name: dataclasses.replace(layer, num_kv_heads=num_kv_heads) if isinstance(layer, FullAttention) else layer
        for name, layer in model.layer_types.items()
    }
    return _with_layers(model, layer_types, list(model.layer_type_names), f"{num_kv_heads} KV head{'' if num_kv_heads == 1 else 's'} per attention layer")


def with_cross_layer_sharing(model: ModelSpec, factor: int) -> ModelSpec:
    """Share each KV cache across `factor` adjacent attention layers (Cross-Layer Attention).

    Attention layers are taken in order, state and already-shared layers
    skipped; the first of every `factor` keeps its cache and the others read
    it, so `n` attention layers keep `ceil(n / factor)` caches.
    """
    if factor < 1:
        raise InvalidInputError(f"invalid value for --cross-layer-share: {factor}; it must be at least 1")
    layer_types = dict(model.layer_types)
    names = list(model.layer_type_names)
    position = 0
    for index, name in enumerate(names):
        layer = model.layer_types[name]
        if layer.kind in ("state", "shared"):
            continue
        if position % factor:
            shared_name = f"{name}_shared"
            layer_types.setdefault(shared_name, SharedKV(reuses=name))
            names[index] = shared_name
        position += 1
    if position == 0:
        raise InvalidInputError(f"--cross-layer-share does not apply to {model.id}: it has no attention layer")
    return _with_layers(model, layer_types, names, f"cross-layer KV sharing, factor {factor}")


def with_sliding_window(model: ModelSpec, window: int, layers: str = "all") -> ModelSpec:
    """Make attention layers sliding-window layers of `window` tokens: all of them, or every other one.

    With "alternate", layers at even indices (0, 2, ...) slide and odd ones keep
    their kind, the layout of Gemma 2 and gpt-oss. Latent, state and shared
    layers are left as they are.
    """
    if window < 1:
        raise InvalidInputError(f"invalid value for --sliding-window: {window}; it must be at least 1 token")
    if layers not in ("all", "alternate"):
        raise InvalidInputError(f"invalid value for --sliding-window-layers: {layers!r}; expected all or alternate")
    layer_types = dict(model.layer_types)
    names = list(model.layer_type_names)
    for index, name in enumerate(names):
        layer = model.layer_types[name]
        if not isinstance(layer, FullAttention) or (layers == "alternate" and index % 2):
            continue
        slid_name = f"{name}_window{window}"
        layer_types.setdefault(slid_name, SlidingWindowAttention(layer.num_kv_heads, layer.k_head_dim,
                                                                  layer.v_head_dim, window))  # fmt: skip
        names[index] = slid_name
    if names == list(model.layer_type_names):
        raise InvalidInputError(f"--sliding-window does not apply to {model.id}: it has no attention layer with KV heads")
    which = "every attention layer" if layers == "all" else "alternate attention layers"
    return _with_layers(model, layer_types, names, f"sliding window of {window:,} tokens on {which}")
