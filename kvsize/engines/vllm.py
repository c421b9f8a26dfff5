"""vLLM's KV-cache rules: the memory budget, block pool, token line and max concurrency.

Read from vLLM's own source (vllm-project/vllm):
- vllm/v1/worker/gpu_worker.py, determine_available_memory (V1 engine): the
  KV cache gets `total x gpu_memory_utilization` minus the weights, the
  profiled activation peak and the non-torch memory. From 0.21 the CUDA-graph
  memory is estimated and subtracted too (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS,
  added off by default in PR #30515; vLLM's startup message reads "default
  since v0.21.0"). `--kv-cache-memory` (PR #21489) replaces all of these.
- vllm/v1/core/kv_cache_utils.py (get_kv_cache_groups,
  _get_kv_cache_groups_uniform_page_size, get_kv_cache_config_from_groups,
  get_num_blocks, _report_kv_cache_config,
  get_max_concurrency_for_kv_cache_config, get_kv_cache_configs). Layers
  become groups of equal size, blocks are `available // page // layers per
  group`, and the smallest count over all workers wins. The token line is
  `num_blocks // num_groups x block_size`. Concurrency is num_blocks over
  the blocks one request of max_model_len needs, summed over groups.
- vllm/v1/kv_cache_interface.py: page sizes and the tokens each layer kind
  keeps. fp8 per-tensor scales add nothing per token, nvfp4 packs head_size
  / 2 + head_size / 16 bytes per head, and fp8_ds_mla is 656 bytes per token.
  A sliding-window layer keeps min(window - 1 + max_num_batched_tokens,
  max_model_len) tokens per request, plus one block.
- vllm/platforms/cuda.py: MLA models use 64-token blocks with FlashMLA
  (Hopper and Blackwell), 16 otherwise.
- tests/engine/test_arg_utils.py: `vllm serve` batches 8192 tokens and 1024
  sequences on GPUs of 70 GiB or more other than the A100, else 2048 and 256.
- The V0 engine, as its startup lines show: one block size for all layers,
  every layer sized as full attention, `num_gpu_blocks = available //
  (block_size x bytes per token)`, `num_cpu_blocks = 4 GiB // the same`, and
  concurrency = tokens / max_model_len.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvsize.engines.common import (
    CUDA_GRAPH_BYTES,
    BudgetTerm,
    EngineEstimate,
    EngineSettings,
    activation_peak_bytes,
    apply_fraction,
    check_fraction,
    engine_visible_memory,
    is_shared,
    is_state,
    kv_precision_for,
    non_torch_bytes,
    parse_version,
    pipeline_stages,
    plain_layer_bytes_per_token,
    pool_verdict,
    requests_per_dp_rank,
    weights_per_gpu,
)
from kvsize.errors import InvalidInputError
from kvsize.layers import LatentAttention, RecurrentState
from kvsize.precision import Precision
from kvsize.sizing import DEFAULT_GPU_MEMORY_UTILIZATION, Estimate, bits_to_bytes
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import GiB, format_bytes

DEFAULT_BLOCK_SIZE = 16
FLASHMLA_BLOCK_SIZE = 64
# GPUs on which vLLM picks the FlashMLA backend for MLA models (compute capability 9.0 and 10.x).
# NOTE: some vLLM versions default Blackwell GPUs to CUTLASS MLA, which forces 128-token blocks;
# pass --block-size 128 for those.
FLASHMLA_GPUS = frozenset({"h100-sxm", "h100-pcie", "h100-nvl", "h200", "b200", "b300", "gb200"})
CPU_SWAP_BYTES = 4 * GiB  # V0's default --swap-space per GPU
LARGE_GPU_BYTES = 70 * GiB
# First versions with each rule.
HYBRID_ALLOCATOR_VERSION = (0, 10)
CUDA_GRAPH_PROFILING_VERSION = (0, 21)
V1_DEFAULT_VERSION = (0, 8)
# DeepSeek V3.2's indexer keys are fp8 with one fp32 scale per 128 elements.
INDEXER_QUANT_BLOCK = 128


@dataclass(frozen=True)
class _LayerCache:
    """One decoder layer on one rank, as vLLM's KV-cache manager sizes it."""

    index: int
    kind: str  # full, sliding, chunked, mla, mamba
    bytes_per_token: int  # 0 for mamba layers
    state_bytes: int  # mamba layers only
    window: int | None

    @property
    def spec_key(self) -> tuple[str, int, int, int | None]:
        return (self.kind, self.bytes_per_token, self.state_bytes, self.window)


def uses_v0(settings: EngineSettings) -> bool:
    """Return whether the settings name vLLM's V0 engine (`v0`, or a version before 0.8)."""
    version = settings.engine_version
    if version is not None and version.strip().lower() == "v0":
        return True
    parsed = parse_version(version)
    return parsed is not None and parsed < V1_DEFAULT_VERSION


def _version_at_least(settings: EngineSettings, minimum: tuple[int, ...]) -> bool:
    """Return whether the engine version is at least `minimum`; an unknown version means the newest rules."""
    version = settings.engine_version
    if version is not None and version.strip().lower() == "v1":
        return True
    parsed = parse_version(version)
    return parsed is None or parsed >= minimum


def default_block_size(model: ModelSpec, gpu: GpuSpec) -> int:
    """Return vLLM's block size: 64 tokens for MLA models on FlashMLA GPUs, else 16."""
    uses_mla = any(isinstance(layer, LatentAttention) for layer in model.layers)
    if uses_mla and gpu.id in FLASHMLA_GPUS:
        return FLASHMLA_BLOCK_SIZE
    return DEFAULT_BLOCK_SIZE


def default_scheduler_limits(gpu: GpuSpec, gpu_memory_bytes: int) -> tuple[int, int]:
    """Return `vllm serve`'s default (max_num_batched_tokens, max_num_seqs) for a GPU."""
    if gpu_memory_bytes >= LARGE_GPU_BYTES and not gpu.id.startswith("a100"):
        return 8192, 1024
    return 2048, 256


def scheduler_limits(gpu: GpuSpec, settings: EngineSettings) -> tuple[int, int]:
    """Return the (max_num_batched_tokens, max_num_seqs) vLLM runs with: the settings, else its defaults."""
    total, _ = engine_visible_memory(gpu, settings)
    default_tokens, default_seqs = default_scheduler_limits(gpu, total)
    if uses_v0(settings):
        max_model_len = settings.max_model_len or settings.context_tokens
        default_tokens = 2048 if max_model_len > 32768 else max(max_model_len, 2048)
        default_seqs = 256
    return settings.max_num_batched_tokens or default_tokens, settings.max_num_seqs or default_seqs


def check_scheduler_limits(gpu: GpuSpec, settings: EngineSettings) -> None:
    """Reject what vLLM's SchedulerConfig rejects at startup: fewer batched tokens than sequences.

    Only for settings a user typed: a log's settings passed this check when
    the server started, and kvsize's defaults for the ones a log does not
    print can differ from the server's.
    """
    batched, seqs = scheduler_limits(gpu, settings)
    if batched < seqs:
        seqs_origin = "" if settings.max_num_seqs else f", vLLM's default on {gpu.name}"
        raise InvalidInputError(f"invalid value for --max-num-batched-tokens: {batched:,} is below max_num_seqs "
                                f"({seqs:,}{seqs_origin}); vLLM requires at least one token per sequence, "
                                "so raise it or lower --max-num-seqs")  # fmt: skip


def mla_bytes_per_token(layer: LatentAttention, precision: Precision) -> int:
    """Return the bytes one token costs in one MLA layer, including DeepSeek V3.2's indexer key.

    With an fp8 cache, DeepSeek V3.2 (a layer with indexer keys) uses the
    fp8_ds_mla layout: the 512-element latent in fp8 with one fp32 scale per
    128 elements, plus the 64-element RoPE key kept in bf16: 512 + 16 + 128 =
    656 bytes. The indexer key is always fp8 with one fp32 scale per 128
    elements: 128 + 4 = 132 bytes.
    """
    if layer.indexer_head_dim and precision.element_bits == 8 and precision.group_size is None:
        latent = layer.kv_lora_rank + layer.kv_lora_rank // INDEXER_QUANT_BLOCK * 4 + layer.qk_rope_head_dim * 2
    else:
        latent = bits_to_bytes(precision.vector_bits(layer.kv_lora_rank + layer.qk_rope_head_dim))
    indexer = 0
    if layer.indexer_head_dim:
        indexer = layer.indexer_head_dim + -(-layer.indexer_head_dim // INDEXER_QUANT_BLOCK) * 4
    return latent + indexer


def _layer_caches(model: ModelSpec, precision: Precision, tp: int, hybrid: bool) -> list[_LayerCache]:
    caches = []
    for index, layer in enumerate(model.layers):
        if is_shared(layer):
            continue
        if is_state(layer):
            assert isinstance(layer, RecurrentState)
            caches.append(_LayerCache(index, "mamba", 0, bits_to_bytes(layer.state_bits(tp)), None))
            continue
        if isinstance(layer, LatentAttention):
            caches.append(_LayerCache(index, "mla", mla_bytes_per_token(layer, precision), 0, None))
            continue
        kind = layer.kind if hybrid else "full"
        window = getattr(layer, "sliding_window", None) or getattr(layer, "attention_chunk_size", None)
        caches.append(_LayerCache(index, kind, plain_layer_bytes_per_token(layer, precision, tp), 0,
                                  window if hybrid else None))  # fmt: skip
    return caches


def _blocks_per_request(cache: _LayerCache, block_size: int, max_model_len: int, max_num_batched_tokens: int) -> int:
    """Return the blocks one request of max_model_len takes in one layer group (kv_cache_interface.py)."""
    if cache.kind == "mamba":
        # NOTE: one state page per request, vLLM's default Mamba cache mode; its
        # "align" mode for prefix caching keeps two, and "all" one per block.
        return 1
    if cache.kind == "sliding":
        assert cache.window is not None
        tokens = min(cache.window - 1 + max_num_batched_tokens, max_model_len)
        # One more block because the window need not start at a block boundary.
        return -(-tokens // block_size) + 1
    if cache.kind == "chunked":
        assert cache.window is not None
        tokens = min(cache.window + max_num_batched_tokens, max_model_len)
        return -(-tokens // block_size)
    return -(-max_model_len // block_size)


@dataclass(frozen=True)
class _Pool:
    num_blocks: int
    num_groups: int
    min_block_size: int
    blocks_per_request: int
    bytes_per_token_per_gpu: int  # over every layer slot, padding included, as the token line counts
    group_bytes_per_token: int  # one token in one layer of every group slot: page / block x layers per group
    group_layout: str
    sliding_tokens: int | None


def _v1_pool(caches: list[_LayerCache], stages: list[list[int]], available: int, block_size: int,
             max_model_len: int, max_num_batched_tokens: int) -> _Pool:  # fmt: skip
    """Cut `available` bytes into blocks the way vLLM V1's KV-cache manager does."""
    by_spec: dict[tuple, list[_LayerCache]] = {}
    for cache in caches:
        by_spec.setdefault(cache.spec_key, []).append(cache)
    stage_of = {index: number for number, stage in enumerate(stages) for index in stage}

    if len({(key[0], key[3]) for key in by_spec}) == 1:
        # One layer kind with one window: a single group holding every layer, each
        # layer with its own page per block, even when head sizes differ.
        key = next(iter(by_spec))
        per_stage = [sum(cache.bytes_per_token for cache in caches if stage_of[cache.index] == number)
                     for number in range(len(stages))]  # fmt: skip
        worst = max(per_stage)
        if key[0] == "mamba":
            num_blocks = available // max(1, sum(cache.state_bytes for cache in caches))
        else:
            num_blocks = available // (worst * block_size) if worst else 0
        blocks = _blocks_per_request(by_spec[key][0], block_size, max_model_len, max_num_batched_tokens)
        sliding = None
        if key[0] in ("sliding", "chunked"):
            sliding = (blocks - (1 if key[0] == "sliding" else 0)) * block_size
        return _Pool(num_blocks, 1, block_size, blocks, worst, worst, f"1 group of {len(caches)} layers", sliding)

    # Page sizes must match across groups, so vLLM enlarges the block size of
    # the layers with smaller pages. With Mamba layers it enlarges the attention
    # block until one attention page fits a whole state, then pads the state.
    block_sizes: dict[tuple, int] = {}
    attention_specs = [key for key in by_spec if key[0] != "mamba"]
    mamba_specs = [key for key in by_spec if key[0] == "mamba"]
    if mamba_specs and attention_specs:
        largest_state = max(key[2] for key in mamba_specs)
        attention_page_per_token = max(key[1] for key in attention_specs)
        block_size = DEFAULT_BLOCK_SIZE * -(-largest_state // (DEFAULT_BLOCK_SIZE * attention_page_per_token))
        block_size = max(block_size, DEFAULT_BLOCK_SIZE)
    pages = {key: (key[1] * block_size if key[0] != "mamba" else key[2]) for key in by_spec}
    page = max(pages.values())
    for key, key_page in pages.items():
        if key[0] == "mamba":
            block_sizes[key] = max_model_len
            continue
        if page % key_page:
            raise InvalidInputError(
                "vLLM cannot unify the KV page sizes of this model's layer types "
                f"({', '.join(str(value) for value in sorted(set(pages.values())))} bytes); "
                "it rejects such hybrid models"
            )
        block_sizes[key] = block_size * (page // key_page)
    min_block_size = min(size for key, size in block_sizes.items() if key[0] != "mamba") if attention_specs else block_size

    counts = {key: len(members) for key, members in by_spec.items()}
    group_size = min(counts.values())
    if max(counts.values()) < group_size * 1.5:
        group_size = max(counts.values())
    groups: list[tuple[tuple, list[_LayerCache]]] = []
    for key, members in by_spec.items():
        num_groups = -(-len(members) // group_size)
        for offset in range(num_groups):
            groups.append((key, members[offset::num_groups]))

    pool_blocks: int | None = None
    worst_bytes = 0
    for number in range(len(stages)):
        layers_here = max(sum(1 for cache in members if stage_of[cache.index] == number) for _, members in groups)
        if layers_here == 0:
            continue
        stage_blocks = available // page // layers_here
        pool_blocks = stage_blocks if pool_blocks is None else min(pool_blocks, stage_blocks)
        worst_bytes = max(worst_bytes, page * layers_here // block_size)
    blocks_per_request = sum(
        _blocks_per_request(members[0], block_sizes[key], max_model_len, max_num_batched_tokens) for key, members in groups
    )
    sliding_tokens = None
    for key, members in groups:
        if key[0] == "sliding":
            blocks = _blocks_per_request(members[0], block_sizes[key], max_model_len, max_num_batched_tokens)
            sliding_tokens = (blocks - 1) * block_sizes[key]
    layout = ", ".join(f"{-(-count // group_size)} x {key[0]}" for key, count in counts.items())
    return _Pool(pool_blocks or 0, len(groups), min_block_size, blocks_per_request, worst_bytes * len(groups),
                 worst_bytes, f"{len(groups)} groups of {group_size} layers ({layout})", sliding_tokens)  # fmt: skip


def estimate_vllm(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, base: Estimate) -> EngineEstimate:
    """Predict the KV cache vLLM allocates for `model` on `gpu` with `settings`."""
    check_fraction(settings.gpu_memory_utilization, "--gpu-memory-utilization")
    v0 = uses_v0(settings)
    tp = settings.tensor_parallel_size
    precision = kv_precision_for(model, settings.kv_cache_dtype)
    max_model_len = settings.max_model_len or settings.context_tokens
    block_size = settings.block_size or default_block_size(model, gpu)
    hybrid = not v0 and _version_at_least(settings, HYBRID_ALLOCATOR_VERSION)
    caches = _layer_caches(model, precision, tp, hybrid)
    stages = pipeline_stages(model, settings.pipeline_parallel_size)

    total, driver_term = engine_visible_memory(gpu, settings)
    max_num_batched_tokens, max_num_seqs = scheduler_limits(gpu, settings)

    terms: list[BudgetTerm] = []
    notes: list[str] = []
    if settings.kv_cache_memory_bytes is not None:
        available = settings.kv_cache_memory_bytes
        terms.append(BudgetTerm("KV cache memory (given)", available, 1, False))
        is_estimate = False
    else:
        utilization = settings.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        if driver_term is not None:
            terms.append(BudgetTerm("GPU memory (nvidia-smi)", gpu.memory_reported_bytes, 1, gpu.memory_reported_estimated))
            terms.append(driver_term)
        else:
            terms.append(BudgetTerm("GPU memory (as the engine reports it)", total, 1, False))
        requested = apply_fraction(total, utilization)
        terms.append(BudgetTerm(f"x gpu_memory_utilization {utilization}", requested, 0, False,
                                "memory vLLM may use"))  # fmt: skip
        weights, weights_estimated = weights_per_gpu(base, settings)
        terms.append(BudgetTerm("weights", weights, -1, weights_estimated))
        activation = activation_peak_bytes(model, max_num_batched_tokens, min(max_num_seqs, max_num_batched_tokens), tp)
        terms.append(BudgetTerm("activation peak", activation, -1, True,
                                f"{max_num_batched_tokens:,} batched tokens, {max_num_seqs:,} sequences"))  # fmt: skip
        non_torch = non_torch_bytes(tp * settings.pipeline_parallel_size)
        terms.append(BudgetTerm("non-torch memory", non_torch, -1, True))
        cuda_graphs = 0
        if not v0 and not settings.enforce_eager and _version_at_least(settings, CUDA_GRAPH_PROFILING_VERSION):
            cuda_graphs = CUDA_GRAPH_BYTES
            terms.append(BudgetTerm("CUDA graphs", cuda_graphs, -1, True, "subtracted by default since vLLM 0.21"))
        available = requested - weights - activation - non_torch - cuda_graphs
        is_estimate = True

    usable = max(available, 0)
    num_cpu_blocks = None
    if v0:
        stage_bytes = max(sum(cache.bytes_per_token for cache in caches if cache.index in stage) for stage in stages)
        cache_block_bytes = block_size * stage_bytes
        num_gpu_blocks = usable // cache_block_bytes
        num_cpu_blocks = CPU_SWAP_BYTES // cache_block_bytes
        tokens = num_gpu_blocks * block_size
        max_concurrency = tokens / max_model_len
        blocks_per_request = -(-max_model_len // block_size)
        bytes_per_token = stage_bytes
        details = [("block pool", f"{num_gpu_blocks:,} blocks x {block_size} tokens; every layer sized as full attention")]
        rules = "vLLM V0"
        sliding_tokens = None
    else:
        pool = _v1_pool(caches, stages, usable, block_size, max_model_len, max_num_batched_tokens)
        num_gpu_blocks = pool.num_blocks
        # NOTE: pull requests #38364 and #40694 proposed printing int(max_concurrency x
        # max_model_len) as the token line; the kv_cache_utils.py read here still prints the line below.
        tokens = num_gpu_blocks // pool.num_groups * pool.min_block_size
        max_concurrency = num_gpu_blocks / pool.blocks_per_request if pool.blocks_per_request else 0.0
        blocks_per_request = pool.blocks_per_request
        bytes_per_token = pool.bytes_per_token_per_gpu
        block_size = pool.min_block_size
        sliding_tokens = pool.sliding_tokens
        details = [
            ("KV cache groups", pool.group_layout),
            ("blocks per request", f"{pool.blocks_per_request:,} at max_model_len {max_model_len:,}"),
        ]
        rules = "vLLM V1, hybrid allocator" if hybrid else "vLLM V1, every layer sized as full attention"
        if pool.num_groups > 1:
            notes.append(
                f"the token line counts every layer as full attention ({num_gpu_blocks:,} blocks // "
                f"{pool.num_groups} groups x {pool.min_block_size}); sliding-window and state layers need fewer "
                "blocks per request, so max concurrency is larger than tokens / max_model_len"
            )
    if settings.pipeline_parallel_size > 1:
        sizes = [len(stage) for stage in stages]
        details.append(("pipeline stages", f"{sizes} layers; the pool follows the stage with the most KV per token"))
    if settings.data_parallel_size > 1:
        # NOTE: every DP rank is sized with a whole copy of the weights. With expert
        # parallelism vLLM spreads MoE experts over all DP x TP GPUs, leaving more for the cache.
        details.append(("data parallel", f"{settings.data_parallel_size:,} replicas of TP x PP, each with this pool"))
    fits, max_requests, reason = pool_verdict(settings, max_model_len, blocks_per_request, num_gpu_blocks,
                                      f"blocks of {block_size} tokens")  # fmt: skip
    if available <= 0:
        fits = False
        reason = (f"no: the weights and overhead exceed the memory vLLM may use by {format_bytes(-available)} "
                  "per GPU; vLLM stops with 'No available memory for the cache blocks'")  # fmt: skip
    elif max_requests < 1:
        reason += "; vLLM refuses to start when one request of max_model_len does not fit, so lower --max-model-len"

    return EngineEstimate(
        engine="vllm",
        rules=rules,
        base=base,
        settings=settings,
        kv_cache_dtype=precision.name,
        kv_bytes_per_token_per_gpu=bytes_per_token,
        block_size=block_size,
        max_model_len=max_model_len,
        budget_terms=tuple(terms),
        kv_cache_memory_bytes=available,
        kv_cache_memory_is_estimate=is_estimate,
        kv_cache_tokens=tokens,
        max_concurrency=max_concurrency,
        num_gpu_blocks=num_gpu_blocks,
        num_cpu_blocks=num_cpu_blocks,
        sliding_window_tokens=sliding_tokens,
        fits=fits,
        details=tuple(details),
        notes=tuple(notes),
        requests_per_dp_rank=requests_per_dp_rank(settings),
        max_requests_per_dp_rank=max_requests,
        fit_reason=reason,
    )


def needed_bytes_for_one_request(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings) -> int:
    """Return the KV bytes per GPU that vLLM V1 reserves for one request of max_model_len.

    This is the figure of vLLM's "... GiB KV cache is needed" start-up error:
    the blocks one request needs in every group, times the page size and the
    layers per group.
    """
    tp = settings.tensor_parallel_size
    precision = kv_precision_for(model, settings.kv_cache_dtype)
    max_model_len = settings.max_model_len or settings.context_tokens
    block_size = settings.block_size or default_block_size(model, gpu)
    caches = _layer_caches(model, precision, tp, hybrid=_version_at_least(settings, HYBRID_ALLOCATOR_VERSION))
    stages = pipeline_stages(model, settings.pipeline_parallel_size)
    total, _ = engine_visible_memory(gpu, settings)
    max_num_batched_tokens = settings.max_num_batched_tokens or default_scheduler_limits(gpu, total)[0]
    pool = _v1_pool(caches, stages, GiB, block_size, max_model_len, max_num_batched_tokens)
    return pool.blocks_per_request * pool.group_bytes_per_token * block_size


def estimate_max_model_len(model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, available_bytes: int) -> int:
    """Return the longest max_model_len whose request fits in `available_bytes`, as vLLM's error estimates it.

    vLLM binary-searches the lengths from 1 to the configured max_model_len;
    0 means not even one token fits.
    """
    from dataclasses import replace

    def fits(length: int) -> bool:
        return needed_bytes_for_one_request(model, gpu, replace(settings, max_model_len=length)) <= available_bytes

    high = settings.max_model_len or settings.context_tokens
    if not fits(1):
        return 0
    low = 1
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


__all__ = [
    "default_block_size",
    "estimate_max_model_len",
    "estimate_vllm",
    "check_scheduler_limits",
    "mla_bytes_per_token",
    "needed_bytes_for_one_request",
    "uses_v0",
]
