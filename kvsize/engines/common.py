"""Settings, results and shared arithmetic for the serving-engine profiles.

An engine profile turns the theoretical sizing of `kvsize.sizing` into the
figures one serving engine prints at startup. These are the memory it gives
the KV cache, the blocks or pages it cuts that memory into, the token pool it
reports and the concurrency it derives. Everything here is pure arithmetic on
specs and integer bytes, and nothing prints or reads files.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

from kvsize.errors import InvalidInputError
from kvsize.layers import FullAttention, LatentAttention, Layer, RecurrentState, SharedKV
from kvsize.precision import Precision, parse_precision
from kvsize.sizing import Estimate, bits_to_bytes, default_kv_dtype
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import GiB, MiB

# ---------------------------------------------------------------------------
# Estimates of the memory that is neither weights nor KV cache. Each is an
# estimate, labelled as one wherever it is shown, and each can be replaced by
# a figure the user knows (--kv-cache-memory skips all of them).

# cudaMemGetInfo, which every engine reads, reports a total about 0.5 GiB below
# nvidia-smi's memory.total: an RTX 3090 sold as 24 GiB shows 23.58 GiB in vLLM's
# profile line, an A100-SXM4-40GB 39.49 GiB and an H100 80GB 79.10-79.18 GiB.
# The catalog records nvidia-smi's figure, so the engine profiles subtract this
# unless the engine's own total is given.
DRIVER_RESERVED_BYTES = GiB // 2

# Memory that the process uses outside PyTorch's allocator after profiling:
# cuBLAS workspaces on one GPU, plus NCCL and custom all-reduce buffers when
# GPUs communicate. vLLM's profile lines print 0.13-0.39 GiB on one GPU and
# 0.9-2.2 GiB per rank at tensor-parallel sizes of 4 and 8.
NON_TORCH_BYTES_SINGLE_GPU = GiB // 4
NON_TORCH_BYTES_MULTI_GPU = GiB * 9 // 10

# The CUDA context and allocator state that exist before weights load; SGLang
# measures its budget from the memory free at that point.
CUDA_CONTEXT_BYTES = GiB // 2

# CUDA-graph pools: vLLM's own estimate prints 0.1-0.65 GiB for one GPU.
CUDA_GRAPH_BYTES = GiB // 2

# When a spec has no intermediate_size or vocab_size, the activation estimate
# uses the Llama ratio (14336 / 4096 = 3.5) and a 32,000-token vocabulary.
FALLBACK_INTERMEDIATE_RATIO = Decimal("3.5")
FALLBACK_VOCAB_SIZE = 32000

LOGITS_BYTES_PER_ELEMENT = 4  # engines compute sampler logits in fp32


@dataclass(frozen=True)
class EngineSettings:
    """The engine flags that change how much KV cache an engine allocates.

    Fields mirror the engines' own option names. `None` means the engine's
    default, which each profile resolves and reports.
    """

    engine: str
    engine_version: str | None = None
    context_tokens: int = 4096
    batch_size: int = 1
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    block_size: int | None = None
    kv_cache_dtype: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    enable_dp_attention: bool = False
    gpu_memory_utilization: Decimal | None = None
    mem_fraction_static: Decimal | None = None
    free_gpu_memory_fraction: Decimal | None = None
    kv_cache_memory_bytes: int | None = None
    weights_bytes_per_gpu: int | None = None
    gpu_memory_bytes: int | None = None
    free_memory_before_weights_bytes: int | None = None
    free_memory_after_load_bytes: int | None = None
    enforce_eager: bool = False
    swa_full_tokens_ratio: Decimal | None = None
    ubatch_size: int | None = None
    flash_attn: bool = True
    swa_full: bool = False


@dataclass(frozen=True)
class BudgetTerm:
    """One line of an engine's memory arithmetic, in bytes per GPU.

    `sign` is +1 for memory the budget starts from and -1 for memory taken
    away. `is_estimate` is true when kvsize estimated the figure.
    """

    name: str
    bytes: int
    sign: int
    is_estimate: bool
    note: str = ""


@dataclass(frozen=True)
class EngineEstimate:
    """The KV cache one engine allocates for a model on a GPU, as the engine would report it.

    `kv_cache_tokens` is the token pool in the engine's own words (vLLM's "GPU
    KV cache size", SGLang's "#tokens", TensorRT-LLM's "max tokens in paged KV
    cache", llama.cpp's cells). Memory is per GPU, in bytes.
    """

    engine: str
    rules: str
    base: Estimate
    settings: EngineSettings
    kv_cache_dtype: str
    kv_bytes_per_token_per_gpu: int
    block_size: int
    max_model_len: int
    budget_terms: tuple[BudgetTerm, ...]
    kv_cache_memory_bytes: int
    kv_cache_memory_is_estimate: bool
    kv_cache_tokens: int
    max_concurrency: float
    num_gpu_blocks: int | None = None
    num_cpu_blocks: int | None = None
    sliding_window_tokens: int | None = None
    fits: bool = True
    details: tuple[tuple[str, str], ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    # The verdict for `settings.batch_size` requests of `max_model_len` tokens,
    # spread over `settings.data_parallel_size` DP ranks that each hold a pool.
    requests_per_dp_rank: int = 1
    max_requests_per_dp_rank: int = 0
    fit_reason: str = ""
    warnings: tuple[str, ...] = field(default=())
    kv_room_bytes: int | None = None  # llama.cpp: the memory free for its fixed-size cache

    @property
    def kv_budget_bytes(self) -> int:
        """Memory per GPU the engine has for its KV cache: the pool's memory, or llama.cpp's room."""
        return self.kv_room_bytes if self.kv_room_bytes is not None else self.kv_cache_memory_bytes

    @property
    def max_requests(self) -> int:
        """Requests of `max_model_len` tokens that the pools of all DP ranks hold at once."""
        return self.max_requests_per_dp_rank * self.settings.data_parallel_size


# ---------------------------------------------------------------------------
# Versions and settings


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """Return the leading numeric part of a version string, e.g. `0.10.1.1` -> (0, 10, 1, 1)."""
    if text is None:
        return None
    parts = []
    for piece in text.strip().lstrip("vV").split("."):
        digits = ""
        for character in piece:
            if not character.isdigit():
                break
            digits += character
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts) or None


# Release lines kvsize has rules for, as (lowest, highest) (major, minor), with
# the wording the error lists. The upper ends are the newest versions in
# the public logs kvsize is tested against (tests/data/engine_cases.yaml) or
# the source read for the profile.
KNOWN_VERSIONS = {
    "vllm": (((0, 1), (0, 29)),
             "v0 (the V0 engine), v1, or 0.1 to 0.29: V0 rules before 0.8, every layer sized as full attention "
             "before 0.10, the hybrid allocator from 0.10, CUDA-graph memory subtracted from 0.21"),
    "sglang": (((0, 4), (0, 5)), "0.4 to 0.5, which share one set of rules"),
    "trtllm": (((0, 5), (1, 999)), "0.5 to 1.x, which share one set of rules"),
}  # fmt: skip
_VERSION_PATTERN = re.compile(r"v?\d+(?:\.\d+)+(?:\.?(?:post|rc|dev|a|b)\d*)*(?:\+[\w.]+)?", re.ASCII)


def check_engine_version(engine: str, text: str) -> None:
    """Reject an `--engine-version` kvsize has no rules for, listing the versions it has rules for."""
    title = ENGINE_TITLES[engine]
    if engine not in KNOWN_VERSIONS:
        raise InvalidInputError(f"--engine-version is not used with {title}: kvsize applies one set of "
                                f"{title} rules (2025 builds); drop the option")  # fmt: skip
    (lowest, highest), wording = KNOWN_VERSIONS[engine]
    cleaned = text.strip()
    known = engine == "vllm" and cleaned.lower() in ("v0", "v1")
    if not known and _VERSION_PATTERN.fullmatch(cleaned):
        parsed = parse_version(cleaned)
        known = parsed is not None and lowest <= parsed[:2] <= highest
    if not known:
        raise InvalidInputError(f"invalid value for --engine-version: {text!r}; kvsize knows {title} {wording}")


def check_fraction(value: Decimal | None, option: str) -> None:
    """Reject a memory fraction outside (0, 1]."""
    if value is not None and not (value.is_finite() and 0 < value <= 1):
        raise InvalidInputError(f"invalid value for {option}: {value}; it must be greater than 0 and at most 1")


def requests_per_dp_rank(settings: EngineSettings) -> int:
    """Return the requests each data-parallel rank must hold: ceil(batch / dp)."""
    return -(-settings.batch_size // settings.data_parallel_size)


def pool_verdict(settings: EngineSettings, max_model_len: int, per_request: int, available: int,
                 unit: str) -> tuple[bool, int, str]:  # fmt: skip
    """Return whether the requests fit in one DP rank's pool, how many fit, and the reason in words.

    `per_request` and `available` count the same `unit` (blocks, pages or
    tokens): what one request of `max_model_len` tokens takes, and what the
    pool of one DP rank has. The result is (fits, requests the pool holds, reason).
    """
    requests = requests_per_dp_rank(settings)
    max_requests = available // per_request if per_request else 0
    needed = requests * per_request
    subject = f"{requests:,} request{'' if requests == 1 else 's'} of {max_model_len:,} tokens"
    if settings.data_parallel_size > 1:
        subject += f" per DP rank ({settings.batch_size:,} over {settings.data_parallel_size:,} DP ranks)"
    verb = "needs" if requests == 1 else "need"
    if needed <= available:
        return True, max_requests, f"yes: {subject} {verb} {needed:,} of the pool's {available:,} {unit}"
    return False, max_requests, (f"no: {subject} {verb} {needed:,} {unit}; the pool has {available:,}, "
                                 f"enough for {max_requests:,}")  # fmt: skip


def check_parallel_sizes(settings: EngineSettings) -> None:
    """Reject parallel sizes below 1."""
    for option, value in (
        ("--tensor-parallel-size", settings.tensor_parallel_size),
        ("--pipeline-parallel-size", settings.pipeline_parallel_size),
        ("--data-parallel-size", settings.data_parallel_size),
    ):
        if value < 1:
            raise InvalidInputError(f"invalid value for {option}: {value}; it must be at least 1")


# Engine spellings of cache dtypes that kvsize sizes under another name: vLLM's
# fp8_ds_mla is fp8 with its own layout (see engines.vllm), SGLang's fp4_e2m1
# stores 4-bit values with one 8-bit scale per 16, as nvfp4 does. SGLang logs
# name torch dtypes ("Using KV cache dtype: torch.float8_e4m3fn").
_ENGINE_DTYPE_ALIASES = {
    "fp8_ds_mla": "fp8",
    "fp8_inc": "fp8",
    "fp4_e2m1": "nvfp4",
    "float8_e4m3fn": "fp8_e4m3",
    "float8_e5m2": "fp8_e5m2",
    "float4_e2m1fn_x2": "nvfp4",
}


# The cache formats each engine stores, by kvsize's precision names, and the
# wording of the error that lists them. Every engine also stores the model's
# own dtype ("auto"). vLLM: vllm/config/cache.py CacheDType; SGLang:
# server_args.py --kv-cache-dtype; TensorRT-LLM: its fp8, int8 and nvfp4 KV
# cache quantization. llama.cpp's ggml types are checked in engines.llamacpp.
_FLOAT_DTYPES = frozenset({"fp32", "fp16", "bf16"})
_FP8_DTYPES = frozenset({"fp8", "fp8_e4m3", "fp8_e5m2"})
ENGINE_KV_DTYPES = {
    "vllm": (_FLOAT_DTYPES | _FP8_DTYPES | {"nvfp4"},
             "auto (the model's dtype), fp16, bf16, fp32, fp8, fp8_e4m3, fp8_e5m2, fp8_inc, fp8_ds_mla or nvfp4"),
    "sglang": (_FLOAT_DTYPES | _FP8_DTYPES | {"nvfp4"},
               "auto (the model's dtype), fp16, bf16, fp32, fp8_e4m3, fp8_e5m2 or fp4_e2m1 (nvfp4)"),
    "trtllm": (_FLOAT_DTYPES | _FP8_DTYPES | {"int8", "nvfp4"},
               "auto (the model's dtype), fp16, bf16, fp32, fp8, int8 or nvfp4"),
}  # fmt: skip
ENGINE_TITLES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM", "llama.cpp": "llama.cpp"}


def kv_precision_for(model: ModelSpec, name: str | None, engine: str | None = None) -> Precision:
    """Return the KV precision for an engine's `--kv-cache-dtype`; `auto` means the model's activation dtype.

    With `engine`, a format that engine cannot store is rejected.
    """
    if name is None or name.strip().lower() == "auto":
        return parse_precision(default_kv_dtype(model))
    cleaned = name.strip().lower().removeprefix("torch.")
    if engine not in ENGINE_KV_DTYPES:
        return parse_precision(_ENGINE_DTYPE_ALIASES.get(cleaned, cleaned))
    stored, wording = ENGINE_KV_DTYPES[engine]
    try:
        precision = parse_precision(_ENGINE_DTYPE_ALIASES.get(cleaned, cleaned))
    except InvalidInputError:
        precision = None
    if precision is None or precision.name not in stored:
        raise InvalidInputError(f"invalid KV cache dtype {name!r} for {ENGINE_TITLES[engine]}: it stores {wording}")
    return precision


# ---------------------------------------------------------------------------
# Layers per pipeline stage


def pipeline_stage_sizes(num_layers: int, pipeline_parallel_size: int) -> list[int]:
    """Split `num_layers` decoder layers into pipeline stages.

    Every stage gets `num_layers // pp` layers. The remainder goes one each to
    the stages before the last, counting backwards, because the last stage
    also carries the output head (vllm/distributed/utils.py get_pp_indices).
    92 layers on 8 stages: [11, 11, 11, 12, 12, 12, 12, 11].
    """
    pp = pipeline_parallel_size
    if pp > num_layers:
        raise InvalidInputError(f"invalid pipeline-parallel size {pp}: the model has only {num_layers} layers")
    sizes = [num_layers // pp] * pp
    for index in range(2, num_layers % pp + 2):
        sizes[-index] += 1
    return sizes


def pipeline_stages(model: ModelSpec, pipeline_parallel_size: int) -> list[list[int]]:
    """Return the decoder-layer indices of each pipeline stage."""
    stages = []
    start = 0
    for size in pipeline_stage_sizes(model.num_layers, pipeline_parallel_size):
        stages.append(list(range(start, start + size)))
        start += size
    return stages


# ---------------------------------------------------------------------------
# Bytes per token per layer


def plain_layer_bytes_per_token(layer: Layer, precision: Precision, attention_tp: int) -> int:
    """Return the bytes one token costs in one layer on one rank, as kvsize.layers sizes it.

    Engines allocate whole bytes per layer, so fractional bits (from formats
    whose scales cover several tokens) are rounded up first.
    """
    return bits_to_bytes(math.ceil(layer.bits_per_token(precision, attention_tp)))


def is_attention(layer: Layer) -> bool:
    """Return whether the layer keeps a per-token cache (full, sliding, chunked or MLA)."""
    return isinstance(layer, (FullAttention, LatentAttention))


def is_state(layer: Layer) -> bool:
    return isinstance(layer, RecurrentState)


def is_shared(layer: Layer) -> bool:
    return isinstance(layer, SharedKV)


def window_of(layer: Layer) -> int | None:
    """Return the sliding window or chunk size of a layer, or None when it keeps every token."""
    return getattr(layer, "sliding_window", None) or getattr(layer, "attention_chunk_size", None)


# ---------------------------------------------------------------------------
# Memory that is neither weights nor KV cache


def activation_peak_bytes(model: ModelSpec, num_tokens: int, num_seqs: int, tensor_parallel_size: int,
                          activation_bytes: int = 2) -> int:  # fmt: skip
    """Estimate the activation peak of one profiling forward pass on one GPU.

    The MLP of one layer over every batched token dominates the peak. It
    keeps the fused gate-and-up output (2 x intermediate), the activated
    product (1 x intermediate) and about three hidden-sized buffers (residual,
    hidden state, normalized input), all in the activation dtype. The sampler then
    keeps fp32 logits over the whole vocabulary for every sequence. The MLP
    width is split across tensor-parallel ranks; the hidden buffers and the
    gathered logits are not.

    Worked example, Llama 3.1 8B at 20,000 batched tokens and 256 sequences:
    20,000 x (3 x 14,336 + 3 x 4,096) x 2 B = 2,211,840,000 B, plus 256 x
    128,256 x 4 B = 131,334,144 B; 2.18 GiB in all, where vLLM printed 2.07 GiB.
    This is an estimate: the real peak depends on kernels, MoE routing and,
    for multimodal models, the vision encoder.
    """
    intermediate = model.intermediate_size
    if intermediate is None:
        intermediate = int(model.hidden_size * FALLBACK_INTERMEDIATE_RATIO)
    intermediate_per_rank = -(-intermediate // tensor_parallel_size)
    forward = num_tokens * (3 * intermediate_per_rank + 3 * model.hidden_size) * activation_bytes
    vocab = model.vocab_size or FALLBACK_VOCAB_SIZE
    sampler = num_seqs * vocab * LOGITS_BYTES_PER_ELEMENT
    return forward + sampler


def non_torch_bytes(num_gpus_communicating: int) -> int:
    """Estimate per-GPU memory held outside PyTorch's allocator after profiling."""
    return NON_TORCH_BYTES_MULTI_GPU if num_gpus_communicating > 1 else NON_TORCH_BYTES_SINGLE_GPU


def engine_visible_memory(gpu: GpuSpec, settings: EngineSettings) -> tuple[int, BudgetTerm | None]:
    """Return the GPU total an engine reads, and the estimated driver reserve subtracted to get it."""
    if settings.gpu_memory_bytes is not None:
        return settings.gpu_memory_bytes, None
    reserve = BudgetTerm("driver reserve", DRIVER_RESERVED_BYTES, -1, True,
                         "cudaMemGetInfo total sits about 0.5 GiB below nvidia-smi's")  # fmt: skip
    return gpu.memory_reported_bytes - DRIVER_RESERVED_BYTES, reserve


def weights_per_gpu(base: Estimate, settings: EngineSettings) -> tuple[int, bool]:
    """Return the weights on one GPU and whether the figure is kvsize's estimate.

    Weights split over tensor-parallel ranks (as in the base estimate) and
    over pipeline stages.
    """
    if settings.weights_bytes_per_gpu is not None:
        return settings.weights_bytes_per_gpu, False
    pp = settings.pipeline_parallel_size
    return -(-base.weights_bytes_per_gpu // pp), not base.weights_from_checkpoint


def apply_fraction(num_bytes: int, fraction: Decimal) -> int:
    """Return floor(num_bytes x fraction), exact for decimal fractions such as 0.9."""
    return int(Decimal(num_bytes) * fraction)


def format_gib(num_bytes: int) -> str:
    return f"{num_bytes / GiB:.2f} GiB"


def format_mib(num_bytes: int) -> str:
    return f"{num_bytes / MiB:.2f} MiB"
