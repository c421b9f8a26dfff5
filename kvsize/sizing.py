"""The sizing engine: KV-cache memory, the per-GPU budget, and what fits.

Pure arithmetic on specs: no printing, no I/O, no CLI imports. All memory is
integer bytes. Sizes are summed in bits over the layers of one sequence and
converted to bytes once, rounding up. One sequence therefore costs a whole
number of bytes, and a batch costs exactly `batch x` that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from kvsize.errors import InvalidInputError
from kvsize.layers import Bits, FullAttention, LatentAttention, Layer
from kvsize.precision import Precision, parse_precision, parse_weight_precision
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import GiB, format_bytes

DEFAULT_GPU_MEMORY_UTILIZATION = Decimal("0.9")

# Memory held back on each GPU for what is neither weights nor KV cache:
# activations of the largest forward pass, the CUDA context and allocator
# slack, and CUDA graphs. Public vLLM startup logs show these summing to
# roughly 1-3 GiB per GPU for dense models at the default 8192 batched tokens.
# 2 GiB is therefore an estimate, not a measurement: pass --reserve to override it.
DEFAULT_RESERVE_BYTES = 2 * GiB

_FLOAT_KV_DEFAULTS = ("fp32", "fp16", "bf16")


def bits_to_bytes(bits: int) -> int:
    """Convert bits to whole bytes, rounding up (a partial byte still occupies a byte)."""
    return -(-bits // 8)


def default_kv_dtype(model: ModelSpec) -> str:
    """Return the KV dtype an engine uses when none is given.

    Engines store the cache in the model's activation dtype: the weight dtype
    for fp32/fp16/bf16 checkpoints, and bf16 for checkpoints whose weights are
    quantized (fp8, int4, mxfp4), whose activations stay in bf16.
    """
    return model.weight_dtype if model.weight_dtype in _FLOAT_KV_DEFAULTS else "bf16"


@dataclass(frozen=True)
class TokenPolicy:
    """Token eviction for layers whose cache grows with context (H2O, SnapKV, StreamingLLM).

    Each such layer keeps `ceil(keep_ratio x context)` tokens, or at most
    `token_budget`, plus the last `keep_recent_tokens` of the prompt left
    uncompressed (SnapKV's observation window), and never more than the
    context. Sliding-window, chunked and state layers are bounded already and
    are left alone.
    """

    keep_ratio: Fraction | None = None
    token_budget: int | None = None
    keep_recent_tokens: int = 0

    def kept_tokens(self, context_tokens: int) -> int:
        if self.keep_ratio is not None:
            kept = math.ceil(self.keep_ratio * context_tokens)
        elif self.token_budget is not None:
            kept = self.token_budget
        else:
            kept = context_tokens
        return min(context_tokens, kept + self.keep_recent_tokens)

    def describe(self) -> str:
        if self.keep_ratio is not None:
            text = f"keep {float(self.keep_ratio) * 100:.4g}% of tokens"
        elif self.token_budget is not None:
            text = f"token budget {self.token_budget:,} per sequence per layer"
        else:
            text = "no eviction"
        if self.keep_recent_tokens:
            text += f" + last {self.keep_recent_tokens:,} tokens kept"
        return text + " (layers that grow with context only)"


@dataclass(frozen=True)
class SizingRequest:
    """A sizing request: context, batch, precisions, parallel layout and what-if options."""

    context_tokens: int
    batch_size: int = 1
    kv_precision: Precision | None = None
    weight_precision: Precision | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: Decimal = DEFAULT_GPU_MEMORY_UTILIZATION
    reserve_bytes: int = DEFAULT_RESERVE_BYTES
    reserve_is_default: bool = True
    token_policy: TokenPolicy | None = None
    cpu_offload_bytes: int = 0


@dataclass(frozen=True)
class KindUsage:
    """KV use of the layers of one kind (full, sliding, chunked, mla, state, shared)."""

    kind: str
    num_layers: int
    bytes_per_token: int
    bytes_per_token_per_gpu: int
    cached_tokens_per_layer: int
    state_bytes_per_sequence_per_gpu: int
    kv_cache_bytes_per_gpu: int


@dataclass(frozen=True)
class Estimate:
    """The result of sizing one model, GPU and request, with memory in bytes."""

    model: ModelSpec
    gpu: GpuSpec
    request: SizingRequest
    kv_precision: Precision
    weight_precision: Precision
    kv_bytes_per_token: int
    kv_bytes_per_token_per_gpu: int
    sequence_kv_bytes_per_gpu: int
    kv_cache_bytes_per_gpu: int
    kv_cache_bytes: int
    breakdown: tuple[KindUsage, ...]
    weights_bytes: int
    weights_bytes_per_gpu: int
    weights_from_checkpoint: bool
    gpu_memory_bytes: int
    usable_memory_bytes: int
    kv_budget_bytes_per_gpu: int
    weights_fit: bool
    fits: bool
    max_context_tokens: int | None
    max_batch_size: int
    kv_effective_bits: float = 0.0
    techniques: tuple[str, ...] = ()
    kv_on_gpu_bytes_per_gpu: int = 0
    kv_on_host_bytes: int = 0
    gpu_tokens_per_sequence: int = 0
    host_tokens_per_sequence: int = 0
    max_context_tokens_gpu_only: int | None = None
    max_batch_size_gpu_only: int = 0
    warnings: tuple[str, ...] = field(default=())

    @property
    def num_gpus(self) -> int:
        return self.request.tensor_parallel_size


# ---------------------------------------------------------------------------
# Per-sequence KV arithmetic


def _type_counts(model: ModelSpec) -> tuple[tuple[Layer, int], ...]:
    return model.layer_type_counts


def kv_bits_per_token(model: ModelSpec, precision: Precision, tensor_parallel_size: int = 1) -> Bits:
    """Return the bits one token costs on one rank when every layer stores it."""
    return sum(layer.bits_per_token(precision, tensor_parallel_size) * count for layer, count in _type_counts(model))


def kv_elements_per_token(model: ModelSpec) -> int:
    """Return the cached elements (K, V or latent values) one token has over all layers, unsharded."""
    total = 0
    for layer, count in _type_counts(model):
        if isinstance(layer, FullAttention):
            total += count * layer.num_kv_heads * (layer.k_head_dim + layer.v_head_dim)
        elif isinstance(layer, LatentAttention):
            total += count * (layer.kv_lora_rank + layer.qk_rope_head_dim + layer.indexer_head_dim)
    return total


def _layer_tokens(layer: Layer, context_tokens: int, policy: TokenPolicy | None) -> int:
    if policy is not None and layer.max_cached_tokens() is None:
        return policy.kept_tokens(context_tokens)
    return layer.cached_tokens(context_tokens)


def sequence_kv_bits(model: ModelSpec, precision: Precision, context_tokens: int, tensor_parallel_size: int = 1,
                     policy: TokenPolicy | None = None) -> Bits:  # fmt: skip
    """Return the bits one sequence of `context_tokens` holds on one rank, states included."""
    total: Bits = 0
    for layer, count in _type_counts(model):
        tokens = _layer_tokens(layer, context_tokens, policy)
        per_layer = layer.cache_bits(precision, tokens, tensor_parallel_size) + layer.state_bits(tensor_parallel_size)
        total += per_layer * count
    return total


def sequence_kv_bytes(model: ModelSpec, precision: Precision, context_tokens: int, tensor_parallel_size: int = 1,
                      policy: TokenPolicy | None = None) -> int:  # fmt: skip
    """Return the bytes one sequence of `context_tokens` holds on one rank."""
    return bits_to_bytes(sequence_kv_bits(model, precision, context_tokens, tensor_parallel_size, policy))


def _affine_max_context(model: ModelSpec, precision: Precision, budget_bytes: int, batch_size: int,
                        tensor_parallel_size: int, policy: TokenPolicy | None) -> int | None:  # fmt: skip
    """Solve for the longest context directly where memory is affine in the context, else None.

    Past the longest window every bounded layer is full, so one sequence
    costs `ceil((G x L + C) / 8)` bytes, with G the bits per token of the
    layers that grow and C the fixed bits; `batch x` that fits a budget B
    exactly when `G x L + C <= 8 x floor(B / batch)`. Eviction policies and
    per-channel quantization groups are not affine, so the caller searches.
    """
    if policy is not None or (precision.group_size is not None and precision.group_axis == "channel"):
        return None
    growing_bits: Bits = 0
    fixed_bits: Bits = 0
    longest_window = 1
    for layer, count in _type_counts(model):
        bound = layer.max_cached_tokens()
        if bound is None:
            growing_bits += count * layer.bits_per_token(precision, tensor_parallel_size)
        else:
            longest_window = max(longest_window, bound)
            fixed_bits += count * (layer.cache_bits(precision, bound, tensor_parallel_size)
                                   + layer.state_bits(tensor_parallel_size))  # fmt: skip
    if not growing_bits:
        return None
    context = math.floor((8 * (budget_bytes // batch_size) - fixed_bits) / growing_bits)
    if context < longest_window or context > MAX_CONTEXT_TOKENS:
        return None
    return context


def max_context_tokens(
    model: ModelSpec,
    precision: Precision,
    budget_bytes: int,
    batch_size: int = 1,
    tensor_parallel_size: int = 1,
    policy: TokenPolicy | None = None,
) -> int | None:
    """Return the longest context that `batch_size` sequences can each reach within `budget_bytes`.

    Memory is non-decreasing in the context but not linear when sliding,
    chunked, state or evicting layers are present, so the result is found by
    search over whole tokens: doubling until the cost exceeds the budget, then
    bisecting, so that the result fits and one more token does not. Returns
    None (unbounded) when even MAX_CONTEXT_TOKENS fits, which is the case when
    no layer grows past a fixed size; returns 0 when not even one token fits.
    """
    def fits(context_tokens: int) -> bool:
        cost = batch_size * sequence_kv_bytes(model, precision, context_tokens, tensor_parallel_size, policy)
        return cost <= budget_bytes

    if budget_bytes < 0 or not fits(1):
        return 0
    closed_form = _affine_max_context(model, precision, budget_bytes, batch_size, tensor_parallel_size, policy)
    if closed_form is not None and fits(closed_form) and not fits(closed_form + 1):
        return closed_form
    low, high = 1, 2
    while fits(high):
        if high >= MAX_CONTEXT_TOKENS:
            return None
        low, high = high, min(high * 2, MAX_CONTEXT_TOKENS)
    # Invariant: fits(low) is true and fits(high) is false.
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


# ---------------------------------------------------------------------------
# Request validation


def _tensor_parallel_problem(model: ModelSpec, tensor_parallel_size: int) -> str | None:
    tp = tensor_parallel_size
    if model.num_attention_heads % tp:
        return f"it does not divide the {model.num_attention_heads} attention heads"
    for name, layer in model.layer_types.items():
        if not isinstance(layer, FullAttention):
            continue
        heads = layer.num_kv_heads
        if (heads >= tp and heads % tp) or (heads < tp and tp % heads):
            return (f"layer type {name!r} has {heads} KV heads, which can be neither split evenly "
                    "nor replicated evenly across that many GPUs")  # fmt: skip
    return None


def valid_tensor_parallel_sizes(model: ModelSpec, limit: int = 64) -> list[int]:
    """Return the tensor-parallel sizes up to `limit` that the model's heads allow."""
    return [size for size in range(1, limit + 1) if _tensor_parallel_problem(model, size) is None]


def check_tensor_parallel_size(model: ModelSpec, tensor_parallel_size: int) -> None:
    """Reject a tensor-parallel size that the model's heads cannot be split by.

    Query heads must divide evenly across ranks. KV heads must divide evenly
    too, or, when there are fewer KV heads than ranks, the rank count must be
    a multiple of the KV heads so that each head is replicated equally (the
    rule vLLM enforces).
    """
    if tensor_parallel_size < 1:
        raise InvalidInputError(f"invalid tensor-parallel size {tensor_parallel_size}: it must be at least 1")
    problem = _tensor_parallel_problem(model, tensor_parallel_size)
    if problem is not None:
        valid = ", ".join(map(str, valid_tensor_parallel_sizes(model)))
        raise InvalidInputError(
            f"invalid tensor-parallel size {tensor_parallel_size} for {model.id}: {problem}; valid sizes up to 64: {valid}"
        )


# Limits far beyond any deployment, which keep a typo such as an extra three
# zeros from producing a meaningless number instead of an error.
MAX_CONTEXT_TOKENS = 2**40
MAX_BATCH_SIZE = 10**9
MAX_TENSOR_PARALLEL_SIZE = 4096


def _check_request(request: SizingRequest) -> None:
    if not 1 <= request.context_tokens <= MAX_CONTEXT_TOKENS:
        raise InvalidInputError(f"invalid context length {request.context_tokens:,}: it must be from 1 to "
                                f"{MAX_CONTEXT_TOKENS:,} tokens (2^40)")  # fmt: skip
    if not 1 <= request.batch_size <= MAX_BATCH_SIZE:
        raise InvalidInputError(f"invalid batch size {request.batch_size:,}: it must be from 1 to {MAX_BATCH_SIZE:,} sequences")
    if request.tensor_parallel_size > MAX_TENSOR_PARALLEL_SIZE:
        raise InvalidInputError(f"invalid tensor-parallel size {request.tensor_parallel_size:,}: "
                                f"it must be at most {MAX_TENSOR_PARALLEL_SIZE:,}")  # fmt: skip
    utilization = request.gpu_memory_utilization
    if not (utilization.is_finite() and 0 < utilization <= 1):
        raise InvalidInputError(
            f"invalid GPU memory utilization {utilization}: it must be a fraction in (0, 1], e.g. 0.9"
        )
    if request.reserve_bytes < 0:
        raise InvalidInputError(f"invalid reserve {request.reserve_bytes} bytes: it must not be negative")


# ---------------------------------------------------------------------------
# The estimate


def weights_size(model: ModelSpec, precision: Precision) -> tuple[int, bool]:
    """Return the weight bytes and whether they come from the published checkpoint's size.

    When the model's own dtype is kept and the spec records the checkpoint's
    byte size, that size is exact. Otherwise every parameter, including every
    expert of a mixture-of-experts model since all must be resident, is stored
    at `precision`, except that a quantized checkpoint keeps
    `params_unquantized` (embeddings, attention, norms) at 16 bits.
    """
    published = precision.name == model.weight_dtype
    if model.weights_bytes is not None and published:
        return model.weights_bytes, True
    if published and model.params_unquantized is not None and precision.element_bits < 16:
        quantized = model.params_total - model.params_unquantized
        return bits_to_bytes(precision.vector_bits(quantized) + 16 * model.params_unquantized), False
    return bits_to_bytes(precision.vector_bits(model.params_total)), False


def _breakdown(model: ModelSpec, precision: Precision, request: SizingRequest) -> tuple[KindUsage, ...]:
    tp = request.tensor_parallel_size
    policy = request.token_policy
    grouped: dict[str, list[tuple[Layer, int]]] = {}
    for layer, count in _type_counts(model):
        grouped.setdefault(layer.kind, []).append((layer, count))

    usages = []
    for kind, members in grouped.items():
        sequence_bits = sum(
            (layer.cache_bits(precision, _layer_tokens(layer, request.context_tokens, policy), tp)
             + layer.state_bits(tp)) * count
            for layer, count in members
        )  # fmt: skip
        usages.append(
            KindUsage(
                kind=kind,
                num_layers=sum(count for _, count in members),
                bytes_per_token=bits_to_bytes(sum(layer.bits_per_token(precision) * count for layer, count in members)),
                bytes_per_token_per_gpu=bits_to_bytes(
                    sum(layer.bits_per_token(precision, tp) * count for layer, count in members)
                ),
                cached_tokens_per_layer=max(_layer_tokens(layer, request.context_tokens, policy) for layer, _ in members),
                state_bytes_per_sequence_per_gpu=bits_to_bytes(sum(layer.state_bits(tp) * count for layer, count in members)),
                kv_cache_bytes_per_gpu=request.batch_size * bits_to_bytes(sequence_bits),
            )
        )
    return tuple(usages)


def _techniques(model: ModelSpec, precision: Precision, request: SizingRequest) -> tuple[str, ...]:
    """Name every what-if technique applied to this estimate, for people and for JSON."""
    applied = [f"architecture: {change}" for change in model.variant]
    if precision.group_size is not None or precision.outlier_fraction:
        applied.append(f"KV quantization: {precision.describe()}")
    if request.token_policy is not None:
        applied.append(f"token eviction: {request.token_policy.describe()}")
    if request.cpu_offload_bytes:
        applied.append(f"CPU offload: {format_bytes(request.cpu_offload_bytes)} of host memory for KV")
    return tuple(applied)


def _warnings(model: ModelSpec, gpu: GpuSpec, request: SizingRequest, kv_precision: Precision) -> list[str]:
    warnings = []
    if request.context_tokens > model.max_position_embeddings:
        warnings.append(
            f"context of {request.context_tokens:,} tokens exceeds {model.id}'s max_position_embeddings "
            f"({model.max_position_embeddings:,}); the model was not trained for it"
        )
    if kv_precision.name.startswith("int") and kv_precision.element_bits <= 8 and kv_precision.group_size is None:
        warnings.append(
            f"{kv_precision.name} KV cache without --kv-group-size: no quantization scales are counted, but real "
            "integer caches store a scale per group of values; add --kv-group-size (e.g. 32 or 128)"
        )
    if gpu.memory_reported_estimated:
        warnings.append(f"{gpu.id}: the reported capacity is an estimate from the marketed figure, not a driver reading")
    if request.cpu_offload_bytes:
        warnings.append(
            "CPU offload trades latency for capacity: KV held in host memory crosses PCIe or NVLink-C2C "
            "whenever attention reads it"
        )
    return warnings


def estimate(model: ModelSpec, gpu: GpuSpec, request: SizingRequest) -> Estimate:
    """Size the KV cache and weights for `request` and work out what fits on `gpu`.

    The KV budget per GPU is `capacity x utilization - weights per GPU -
    reserve`, where capacity is the memory the driver reports. Weights are
    split evenly across the tensor-parallel group; KV heads are split or
    replicated (see `kv_heads_per_rank`); an MLA latent is replicated on every
    rank; a recurrent state is split. With CPU offload, each rank may also
    keep KV in its share of the host memory (`cpu_offload_bytes / tp`), but
    weights must stay on the GPU.
    """
    _check_request(request)
    check_tensor_parallel_size(model, request.tensor_parallel_size)
    tp = request.tensor_parallel_size
    policy = request.token_policy

    kv_precision = request.kv_precision or parse_precision(default_kv_dtype(model))
    weight_precision = request.weight_precision or parse_weight_precision(model.weight_dtype)

    sequence_bytes = sequence_kv_bytes(model, kv_precision, request.context_tokens, tp, policy)
    kv_cache_bytes_per_gpu = request.batch_size * sequence_bytes

    weights_bytes, weights_from_checkpoint = weights_size(model, weight_precision)
    weights_bytes_per_gpu = -(-weights_bytes // tp)

    # Decimal keeps 0.9 exact, so 0.9 x capacity floors to the byte vLLM would compute.
    usable = int(Decimal(gpu.memory_reported_bytes) * request.gpu_memory_utilization)
    budget = usable - weights_bytes_per_gpu - request.reserve_bytes
    weights_fit = budget >= 0
    host_bytes_per_gpu = request.cpu_offload_bytes // tp
    capacity = budget + host_bytes_per_gpu if weights_fit else budget

    def batch_within(limit: int) -> int:
        return limit // sequence_bytes if limit >= 0 and sequence_bytes > 0 else 0

    gpu_only_context = max_context_tokens(model, kv_precision, budget, request.batch_size, tp, policy)
    # Without a host tier every byte of KV is on the GPU, whether or not it fits there.
    offloading = request.cpu_offload_bytes > 0
    on_gpu_bytes = min(kv_cache_bytes_per_gpu, max(budget, 0)) if offloading else kv_cache_bytes_per_gpu
    if not offloading or gpu_only_context is None or gpu_only_context >= request.context_tokens:
        gpu_tokens = request.context_tokens
    else:
        gpu_tokens = gpu_only_context

    elements = kv_elements_per_token(model)
    effective_bits = float(kv_bits_per_token(model, kv_precision) / elements) if elements else 0.0

    return Estimate(
        model=model,
        gpu=gpu,
        request=request,
        kv_precision=kv_precision,
        weight_precision=weight_precision,
        kv_bytes_per_token=bits_to_bytes(kv_bits_per_token(model, kv_precision)),
        kv_bytes_per_token_per_gpu=bits_to_bytes(kv_bits_per_token(model, kv_precision, tp)),
        sequence_kv_bytes_per_gpu=sequence_bytes,
        kv_cache_bytes_per_gpu=kv_cache_bytes_per_gpu,
        kv_cache_bytes=kv_cache_bytes_per_gpu * tp,
        breakdown=_breakdown(model, kv_precision, request),
        weights_bytes=weights_bytes,
        weights_bytes_per_gpu=weights_bytes_per_gpu,
        weights_from_checkpoint=weights_from_checkpoint,
        gpu_memory_bytes=gpu.memory_reported_bytes,
        usable_memory_bytes=usable,
        kv_budget_bytes_per_gpu=budget,
        weights_fit=weights_fit,
        fits=weights_fit and kv_cache_bytes_per_gpu <= capacity,
        max_context_tokens=(
            gpu_only_context if capacity == budget
            else max_context_tokens(model, kv_precision, capacity, request.batch_size, tp, policy)
        ),
        max_batch_size=batch_within(capacity),
        kv_effective_bits=effective_bits,
        techniques=_techniques(model, kv_precision, request),
        kv_on_gpu_bytes_per_gpu=on_gpu_bytes,
        kv_on_host_bytes=(kv_cache_bytes_per_gpu - on_gpu_bytes) * tp,
        gpu_tokens_per_sequence=gpu_tokens,
        host_tokens_per_sequence=request.context_tokens - gpu_tokens,
        max_context_tokens_gpu_only=gpu_only_context,
        max_batch_size_gpu_only=batch_within(budget),
        warnings=tuple(_warnings(model, gpu, request, kv_precision)),
    )


__all__ = [
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_RESERVE_BYTES",
    "Estimate",
    "KindUsage",
    "SizingRequest",
    "TokenPolicy",
    "bits_to_bytes",
    "check_tensor_parallel_size",
    "valid_tensor_parallel_sizes",
    "default_kv_dtype",
    "estimate",
    "kv_bits_per_token",
    "max_context_tokens",
    "sequence_kv_bytes",
    "weights_size",
]

