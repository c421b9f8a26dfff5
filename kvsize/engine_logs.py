"""Reading serving-engine startup logs and checking their KV-cache figures against kvsize.

`parse_log` finds, in a vLLM, SGLang, TensorRT-LLM or llama.cpp startup log,
the model, the parallel layout, the memory settings and the figures the engine
printed. `compare_log` runs the same configuration through the engine profile
and pairs every printed figure with kvsize's prediction.

Units as the engines print them: vLLM V1 prints GiB; vLLM V0 ("Loading model
weights took 14.9888 GB") and SGLang ("avail mem=6.09 GB") print GB but divide
by 2^30, so both are read as GiB; TensorRT-LLM prints GiB, MiB or bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal

from kvsize.engines.common import EngineEstimate, EngineSettings
from kvsize.errors import InvalidInputError
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import GiB, KiB, MiB

# Engine logs divide by powers of 1024 whatever unit they print. Llama 3.1 8B's
# bf16 weights, 16.06 GB in decimal units, print as "14.9888 GB" in vLLM V0:
# 14.96 GiB plus a little allocator overhead.
_BINARY_UNITS = {"b": 1, "kib": KiB, "kb": KiB, "mib": MiB, "mb": MiB, "gib": GiB, "gb": GiB}


@dataclass(frozen=True)
class PrintedSize:
    """A memory size as printed: bytes, and the bytes of half a unit in the last printed digit."""

    bytes: int
    half_step_bytes: int

    @classmethod
    def parse(cls, number: str, unit: str) -> PrintedSize:
        factor = _BINARY_UNITS[unit.lower()]
        value = Decimal(number)
        decimals = max(0, -value.as_tuple().exponent)  # type: ignore[operator]
        half_step = Decimal(5) / Decimal(10) ** (decimals + 1) * factor
        return cls(int(value * factor), int(half_step))


@dataclass
class LogFacts:
    """Everything kvsize found in one startup log. Sizes in bytes per GPU."""

    engine: str | None = None
    engine_version: str | None = None
    vllm_v0: bool = False
    model_name: str | None = None
    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    data_parallel_size: int | None = None
    enable_dp_attention: bool = False
    gpu_memory_utilization: Decimal | None = None
    mem_fraction_static: Decimal | None = None
    free_gpu_memory_fraction: Decimal | None = None
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_dtype: str | None = None
    block_size: int | None = None
    n_seq: int | None = None
    n_ubatch: int | None = None
    flash_attn: bool | None = None
    # Figures the engine printed.
    total_gpu_memory: PrintedSize | None = None
    weights: PrintedSize | None = None
    available_kv_memory: PrintedSize | None = None
    free_before_weights: PrintedSize | None = None
    free_after_weights: PrintedSize | None = None
    cuda_graph_memory: PrintedSize | None = None
    activation_peak: PrintedSize | None = None
    non_torch_memory: PrintedSize | None = None
    kv_size: PrintedSize | None = None
    kv_cache_tokens: int | None = None
    gpu_blocks: int | None = None
    cpu_blocks: int | None = None
    max_concurrency: Decimal | None = None
    concurrency_tokens: int | None = None
    swa_cells: int | None = None
    lines: list[str] = field(default_factory=list)
    # Engine startups in the log; only the last one is read, from line `startup_line` (1-based).
    startups: int = 1
    startup_line: int = 1


def _number(text: str) -> int:
    return int(text.replace(",", ""))


# Each engine's patterns: (regex, name of the handler in _apply). A line may match several.
_VLLM_PATTERNS = [
    (r"vLLM API server version v?([0-9][\w.+]*)", "version"),
    (r"Initializing an? (V1 )?LLM engine \(v?([0-9][\w.+]*)\) with config: model='([^']+)'", "engine_init"),
    (r"'model': '([^']+)'", "model"),
    (r"[\s,{(]model='([^']+)'", "model"),
    (r"tensor_parallel_size'?[=:]\s*(\d+)", "tp"),
    (r"pipeline_parallel_size'?[=:]\s*(\d+)", "pp"),
    (r"data_parallel_size'?[=:]\s*(\d+)", "dp"),
    (r"'gpu_memory_utilization': ([0-9.]+)", "utilization"),
    (r"gpu_memory_utilization[ =(]+([0-9.]+)", "utilization"),
    (r"'max_model_len': (\d+)", "max_model_len"),
    (r"max_seq_len=(\d+)", "max_model_len"),
    (r"max_num_batched_tokens'?[=:]\s*(\d+)", "batched_tokens"),
    (r"'max_num_seqs': (\d+)", "max_num_seqs"),
    (r"kv_cache_dtype'?[=:]\s*'?([\w.]+)", "kv_cache_dtype"),
    (r"'block_size': (\d+)", "block_size"),
    (r"Forcing kv cache block size to (\d+)", "block_size"),
    (r"Setting attention block size to (\d+) tokens", "block_size"),
    (r"(?:Loading model weights|Model loading) took ([0-9.]+) ?(GiB|GB|MiB|MB)", "weights"),
    (r"model weights take ([0-9.]+) ?(GiB|GB)", "weights"),
    (r"total_gpu_memory[ =(]+([0-9.]+) ?(GiB|GB)", "total"),
    (r"Available KV cache memory: (-?[0-9.]+) ?(GiB|GB)", "available"),
    (r"kv_cache_size=([0-9.]+)(GiB|GB)", "available"),
    (r"the rest of the memory reserved for KV Cache is ([0-9.]+) ?(GiB|GB)", "available"),
    (r"GPU KV cache size: ([\d,]+) tokens", "tokens"),
    (r"Maximum concurrency for ([\d,]+) tokens per request: ([0-9.]+)x", "concurrency"),
    (r"# (?:GPU|cuda) blocks: (\d+), # CPU blocks: (\d+)", "blocks_v0"),
    (r"num_gpu_blocks is: (\d+)", "gpu_blocks"),
    (r"Estimated CUDA graph memory: ([0-9.]+) ?(GiB|GB)", "cuda_graphs"),
    (r"Free memory on device \(([0-9.]+)/([0-9.]+) ?GiB\)", "free_of_total"),
    (r"([0-9.]+) ?GiB for peak activation, ([0-9.]+) ?GiB for non-torch memory", "profile_v1"),
    (r"non_torch_memory takes ([0-9.]+) ?(GiB|GB); PyTorch activation peak memory takes ([0-9.]+) ?(GiB|GB)", "profile_v0"),
    (r"peak_torch_memory=([0-9.]+)(GiB|GB).*non_torch_memory=([0-9.]+)(GiB|GB)", "profile_v0_early"),
]

_SGLANG_PATTERNS = [
    (r"model_path='([^']+)'", "model"),
    (r"tp_size=(\d+)", "tp"),
    (r"pp_size=(\d+)", "pp"),
    (r"dp_size=(\d+)", "dp"),
    (r"enable_dp_attention=True", "dp_attention"),
    (r"mem_fraction_static=([0-9.]+)", "fraction_static"),
    (r"context_length=(\d+)", "max_model_len"),
    (r"context_len=(\d+)", "max_model_len"),
    (r"page_size=(\d+)", "block_size"),
    (r"kv_cache_dtype='([\w.]+)'", "kv_cache_dtype"),
    (r"Load weight begin\. avail mem=([0-9.]+) ?(GB|GiB)", "free_before"),
    (r"Load weight end\..*avail mem=([0-9.]+) ?(GB|GiB), mem usage=([0-9.]+) ?(GB|GiB)", "free_after"),
    (r"KV Cache is allocated\. #tokens: (\d+)", "sglang_tokens"),
    (r"KV Cache is allocated\..*KV size: ([0-9.]+) ?(GB|GiB)", "kv_size"),
    (r"KV Cache is allocated\..*K size: ([0-9.]+) ?(GB|GiB), V size: ([0-9.]+) ?(GB|GiB)", "kv_size_kv"),
    (r"Using KV cache dtype: torch\.(\w+)", "kv_cache_dtype"),
]

_TRTLLM_PATTERNS = [
    (r"TensorRT-LLM version: ([0-9][\w.]*)", "version"),
    (r"Engine version ([0-9][\w.]*)", "version"),
    (r"total: ([0-9.]+) ?(GiB|GB), available: ([0-9.]+) ?(GiB|GB)", "trt_memory"),
    (r"Number of blocks in KV cache primary pool: (\d+)", "gpu_blocks"),
    (r"Number of tokens per block: (\d+)", "block_size"),
    (r"Allocated ([0-9.]+) ?(GiB|MiB) for max tokens in paged KV cache \((\d+)\)", "trt_allocated"),
    (r"Allocate (\d+) bytes for k/v cache", "trt_bytes"),
    (r"Using (\d+) tokens in paged KV cache", "tokens"),
    (r"Loaded engine size: (\d+) ?(MiB)", "weights"),
    (r"(?:free_gpu_memory_fraction|kv_cache_free_gpu_mem_fraction)[=: ]+([0-9.]+)", "fraction_free"),
    (r"KV Memory Percentage ([0-9.]+)%", "fraction_percent"),
    (r"tp_size[=: ]+(\d+)", "tp"),
    (r"pp_size[=: ]+(\d+)", "pp"),
]

_LLAMACPP_PATTERNS = [
    (r"general\.name\s+(?:str\s+)?=\s+(.+?)\s*$", "model"),
    (r"build: (\d+) \(", "version"),
    (r"n_ctx\s+=\s+(\d+)", "n_ctx"),
    (r"n_seq_max\s+=\s+(\d+)", "n_seq"),
    (r"n_ubatch\s+=\s+(\d+)", "n_ubatch"),
    (r"flash_attn\s+=\s+(\w+)", "flash_attn"),
    (r"type_k = '(\w+)'", "kv_cache_dtype"),
    (r"size =\s+([0-9.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*(\d+)(?:/\d+)? seqs\), K \((\w+)\)", "llama_size"),
    (r"KV self size\s+=\s+([0-9.]+) MiB, K \((\w+)\)", "llama_self_size"),
    (r"creating\s+SWA KV cache, size = (\d+) cells", "swa_cells"),
]

_ENGINE_MARKERS = [
    ("llama.cpp", re.compile(r"llama_(?:kv_cache|context|model_loader|new_context)|print_info:|ggml_")),
    ("sglang", re.compile(r"KV Cache is allocated|ServerArgs\(|Load weight end\.|sglang")),
    ("trtllm", re.compile(r"\[TRT-LLM\]|TensorRT-LLM|paged kv cache|paged KV cache")),
    ("vllm", re.compile(r"vllm|vLLM|GPU KV cache size|# (?:GPU|cuda) blocks|Available KV cache memory")),
]

_PATTERNS = {
    "vllm": [(re.compile(regex), name) for regex, name in _VLLM_PATTERNS],
    "sglang": [(re.compile(regex), name) for regex, name in _SGLANG_PATTERNS],
    "trtllm": [(re.compile(regex), name) for regex, name in _TRTLLM_PATTERNS],
    "llama.cpp": [(re.compile(regex), name) for regex, name in _LLAMACPP_PATTERNS],
}


# Lines each engine prints once per startup, most specific first. A log is cut
# at the first kind found in it (vLLM's API-server line, else its engine line),
# so one startup's lines are never read together with another's.
_STARTUP_MARKERS = {
    "vllm": [re.compile(r"vLLM API server version"), re.compile(r"Initializing an? (?:V1 )?LLM engine")],
    "sglang": [re.compile(r"server_args=ServerArgs\(")],
    "trtllm": [re.compile(r"TensorRT-LLM version: ")],
    "llama.cpp": [re.compile(r"(?:^|\s)build: \d+ \("), re.compile(r"llama_model_loader: loaded meta data")],
}


def startup_starts(lines: list[str], engine: str) -> list[int]:
    """Return the index of the first line of every engine startup in `lines`.

    A marker line opens a new startup only once the current one has printed a
    line kvsize reads, so the marker each rank of a multi-GPU server prints
    (TensorRT-LLM's version line under MPI) does not split one startup.
    """
    markers = next((kind for kind in _STARTUP_MARKERS[engine] if any(kind.search(line) for line in lines)), None)
    if markers is None:
        return [0]
    starts = [0]
    read_since_start = False
    for index, line in enumerate(lines):
        if markers.search(line):
            if read_since_start:
                starts.append(index)
                read_since_start = False
        elif any(pattern.search(line) for pattern, _ in _PATTERNS[engine]):
            read_since_start = True
    return starts


def detect_engine(text: str) -> str | None:
    """Return the engine whose log markers appear first in priority order, or None."""
    for engine, marker in _ENGINE_MARKERS:
        if marker.search(text):
            return engine
    return None


def _apply(facts: LogFacts, name: str, match: re.Match[str]) -> None:
    groups = match.groups()
    if name == "version":
        facts.engine_version = groups[0]
    elif name == "engine_init":
        facts.engine_version = groups[1]
        facts.vllm_v0 = facts.vllm_v0 or not groups[0]
        facts.model_name = facts.model_name or groups[2]
    elif name == "model":
        facts.model_name = facts.model_name or groups[0].strip()
    elif name == "tp":
        facts.tensor_parallel_size = int(groups[0])
    elif name == "pp":
        facts.pipeline_parallel_size = int(groups[0])
    elif name == "dp":
        facts.data_parallel_size = int(groups[0])
    elif name == "dp_attention":
        facts.enable_dp_attention = True
    elif name == "utilization":
        facts.gpu_memory_utilization = Decimal(groups[0])
    elif name == "fraction_static":
        facts.mem_fraction_static = Decimal(groups[0])
    elif name == "fraction_free":
        facts.free_gpu_memory_fraction = Decimal(groups[0])
    elif name == "fraction_percent":
        facts.free_gpu_memory_fraction = Decimal(groups[0]) / 100
    elif name == "max_model_len":
        facts.max_model_len = int(groups[0])
    elif name == "batched_tokens":
        facts.max_num_batched_tokens = int(groups[0])
    elif name == "max_num_seqs":
        facts.max_num_seqs = int(groups[0])
    elif name == "kv_cache_dtype":
        facts.kv_cache_dtype = groups[0]
    elif name == "block_size":
        facts.block_size = int(groups[0])
    elif name == "weights":
        facts.weights = PrintedSize.parse(groups[0], groups[1])
    elif name == "total":
        facts.total_gpu_memory = PrintedSize.parse(groups[0], groups[1])
    elif name == "available":
        facts.available_kv_memory = PrintedSize.parse(groups[0].lstrip("-"), groups[1])
        if groups[0].startswith("-"):
            facts.available_kv_memory = PrintedSize(-facts.available_kv_memory.bytes, facts.available_kv_memory.half_step_bytes)
    elif name == "tokens":
        facts.kv_cache_tokens = _number(groups[0])
    elif name == "concurrency":
        facts.concurrency_tokens = _number(groups[0])
        facts.max_concurrency = Decimal(groups[1])
    elif name == "blocks_v0":
        facts.vllm_v0 = True
        facts.gpu_blocks = int(groups[0])
        facts.cpu_blocks = int(groups[1])
    elif name == "gpu_blocks":
        facts.gpu_blocks = int(groups[0])
    elif name == "cuda_graphs":
        facts.cuda_graph_memory = PrintedSize.parse(groups[0], groups[1])
    elif name == "free_of_total":
        facts.total_gpu_memory = PrintedSize.parse(groups[1], "GiB")
    elif name == "profile_v1":
        facts.activation_peak = PrintedSize.parse(groups[0], "GiB")
        facts.non_torch_memory = PrintedSize.parse(groups[1], "GiB")
    elif name == "profile_v0":
        facts.non_torch_memory = PrintedSize.parse(groups[0], groups[1])
        facts.activation_peak = PrintedSize.parse(groups[2], groups[3])
    elif name == "profile_v0_early" and facts.weights is not None:
        # Early V0 printed the torch peak with the weights in it.
        peak = PrintedSize.parse(groups[0], groups[1])
        weights = facts.weights
        facts.activation_peak = PrintedSize(peak.bytes - weights.bytes, peak.half_step_bytes + weights.half_step_bytes)
        facts.non_torch_memory = PrintedSize.parse(groups[2], groups[3])
    elif name == "free_before":
        facts.free_before_weights = PrintedSize.parse(groups[0], groups[1])
    elif name == "free_after":
        facts.free_after_weights = PrintedSize.parse(groups[0], groups[1])
        facts.weights = PrintedSize.parse(groups[2], groups[3])
    elif name == "sglang_tokens":
        facts.kv_cache_tokens = int(groups[0])
    elif name == "kv_size":
        facts.kv_size = PrintedSize.parse(groups[0], groups[1])
    elif name == "kv_size_kv":
        k_size = PrintedSize.parse(groups[0], groups[1])
        v_size = PrintedSize.parse(groups[2], groups[3])
        facts.kv_size = PrintedSize(k_size.bytes + v_size.bytes, k_size.half_step_bytes + v_size.half_step_bytes)
    elif name == "trt_memory":
        facts.total_gpu_memory = PrintedSize.parse(groups[0], groups[1])
        facts.available_kv_memory = PrintedSize.parse(groups[2], groups[3])
    elif name == "trt_allocated":
        facts.kv_size = PrintedSize.parse(groups[0], groups[1])
        facts.kv_cache_tokens = int(groups[2])
    elif name == "trt_bytes":
        facts.kv_size = PrintedSize(int(groups[0]), 0)
    elif name == "n_ctx":
        facts.max_model_len = int(groups[0])
    elif name == "n_seq":
        facts.n_seq = int(groups[0])
    elif name == "n_ubatch":
        facts.n_ubatch = int(groups[0])
    elif name == "flash_attn":
        facts.flash_attn = groups[0].lower() in ("1", "true", "enabled", "on", "auto")
    elif name == "llama_size":
        facts.kv_size = PrintedSize.parse(groups[0], "MiB")
        facts.kv_cache_tokens = int(groups[1])
        facts.n_seq = int(groups[3])
        facts.kv_cache_dtype = groups[4]
    elif name == "llama_self_size":
        facts.kv_size = PrintedSize.parse(groups[0], "MiB")
        facts.kv_cache_dtype = groups[1]
    elif name == "swa_cells":
        facts.swa_cells = int(groups[0])


def parse_log(text: str, engine: str | None = None) -> LogFacts:
    """Read the settings and printed KV-cache figures from a startup log.

    Raises InvalidInputError when the engine is not recognised or the log
    contains no KV-cache figure.
    """
    if not text.strip():
        raise InvalidInputError("the log is empty")
    detected = engine or detect_engine(text)
    if detected is None:
        raise InvalidInputError("the log matches no known engine (vLLM, SGLang, TensorRT-LLM, llama.cpp); "
                                "pass --engine to name it")  # fmt: skip
    lines = text.splitlines()
    starts = startup_starts(lines, detected)
    facts = LogFacts(engine=detected, startups=len(starts), startup_line=starts[-1] + 1)
    for line in lines[starts[-1]:]:
        matched = False
        for pattern, name in _PATTERNS[detected]:
            for match in pattern.finditer(line):
                _apply(facts, name, match)
                matched = True
        if matched:
            facts.lines.append(line.strip())
    printed = (facts.kv_cache_tokens, facts.gpu_blocks, facts.available_kv_memory, facts.kv_size)
    if all(value is None for value in printed):
        where = f"the {detected} log"
        if facts.startups > 1:
            where = (f"the last of the {facts.startups} {detected} startups in the log (from line {facts.startup_line}), "
                     "which may have stopped before allocating the cache,")  # fmt: skip
        raise InvalidInputError(f"no KV-cache figure found in {where}: expected a line such as "
                                f"{_EXAMPLE_LINES[detected]!r}")  # fmt: skip
    return facts


_EXAMPLE_LINES = {
    "vllm": "GPU KV cache size: 42,656 tokens",
    "sglang": "KV Cache is allocated. #tokens: 46611, K size: 1.42 GB, V size: 1.42 GB",
    "trtllm": "Number of blocks in KV cache primary pool: 631",
    "llama.cpp": "llama_kv_cache: size = 72.00 MiB (2048 cells, 36 layers, 4/1 seqs), K (f16): ...",
}


# ---------------------------------------------------------------------------
# Comparing printed and predicted figures


@dataclass(frozen=True)
class ComparisonRow:
    """One figure the engine printed next to kvsize's prediction of it."""

    figure: str
    printed: float
    predicted: float
    unit: str
    tolerance: float | None  # None for a figure shown for information, not judged
    basis: str
    # "check" for a prediction judged against the print, "term" for kvsize's
    # estimate of one budget term, "restated" for a figure kvsize worked out
    # from other printed figures rather than predicted.
    kind: str = "check"

    @property
    def difference(self) -> float:
        return self.predicted - self.printed

    @property
    def relative_difference(self) -> float | None:
        return None if self.printed == 0 else self.difference / abs(self.printed)

    @property
    def within_tolerance(self) -> bool | None:
        if self.tolerance is None:
            return None
        return abs(self.difference) <= self.tolerance


@dataclass(frozen=True)
class LogComparison:
    """The rows of a log check and the engine estimates behind them."""

    facts: LogFacts
    rows: tuple[ComparisonRow, ...]
    pool_estimate: EngineEstimate | None
    budget_estimate: EngineEstimate | None
    notes: tuple[str, ...]
    unchecked_reason: str | None = None  # why no printed figure could be checked, when none could

    @property
    def checked_rows(self) -> tuple[ComparisonRow, ...]:
        return tuple(row for row in self.rows if row.tolerance is not None)


def settings_from_log(facts: LogFacts, context_tokens: int | None = None) -> EngineSettings:
    """Build engine settings from what the log printed; unprinted settings keep the engine defaults."""
    assert facts.engine is not None
    version = facts.engine_version
    if facts.engine == "vllm" and facts.vllm_v0:
        version = "v0"
    batch = 1
    max_model_len = facts.concurrency_tokens or facts.max_model_len
    context = context_tokens or max_model_len or 4096
    if facts.engine == "llama.cpp":
        # llama.cpp's n_ctx is the total of cells, shared by n_seq sequences.
        batch = facts.n_seq or 1
        context = max(1, (facts.kv_cache_tokens or facts.max_model_len or 4096) // batch)
        max_model_len = None
    return EngineSettings(
        engine=facts.engine,
        engine_version=version,
        context_tokens=context,
        batch_size=batch,
        max_model_len=max_model_len,
        max_num_batched_tokens=facts.max_num_batched_tokens,
        max_num_seqs=facts.max_num_seqs,
        block_size=facts.block_size,
        kv_cache_dtype=facts.kv_cache_dtype,
        tensor_parallel_size=facts.tensor_parallel_size or 1,
        pipeline_parallel_size=facts.pipeline_parallel_size or 1,
        data_parallel_size=facts.data_parallel_size or 1,
        enable_dp_attention=facts.enable_dp_attention,
        gpu_memory_utilization=facts.gpu_memory_utilization,
        mem_fraction_static=facts.mem_fraction_static,
        free_gpu_memory_fraction=facts.free_gpu_memory_fraction,
        ubatch_size=facts.n_ubatch,
        flash_attn=facts.flash_attn if facts.flash_attn is not None else True,
    )


def _pool_settings(facts: LogFacts, settings: EngineSettings, memory: int) -> EngineSettings:
    if facts.engine == "trtllm" and facts.available_kv_memory is not None:
        return replace(settings, free_memory_after_load_bytes=memory)
    return replace(settings, kv_cache_memory_bytes=memory)


def printed_pool_memory(facts: LogFacts) -> PrintedSize | None:
    """Return the memory the log printed for the KV pool.

    That is vLLM's available KV memory; SGLang's rest, worked from its two
    "avail mem" figures; TensorRT-LLM's free memory, or, in logs that print no
    free memory, the bytes it allocated for the cache.
    """
    if facts.engine == "sglang" and facts.free_after_weights and facts.free_before_weights:
        fraction = facts.mem_fraction_static
        if fraction is None:
            return None
        rest = facts.free_after_weights.bytes - int(facts.free_before_weights.bytes * (1 - fraction))
        return PrintedSize(rest, facts.free_after_weights.half_step_bytes + facts.free_before_weights.half_step_bytes)
    if facts.engine == "trtllm" and facts.available_kv_memory is None:
        return facts.kv_size
    return facts.available_kv_memory


def compare_log(facts: LogFacts, model: ModelSpec, gpu: GpuSpec, settings: EngineSettings | None = None,
                gpu_is_known: bool = True) -> LogComparison:  # fmt: skip
    """Run the log's configuration through kvsize and pair each printed figure with its prediction.

    The token pool is predicted from the KV memory the log printed, so it
    tests the engine's block and page rules alone. Its tolerance is one block
    plus the blocks hidden by the rounding of the printed memory. The
    available KV memory is predicted from the weights (printed, else kvsize's
    estimate) and the settings, with kvsize's overhead estimates, within 5%.
    That needs the GPU's total memory, printed in the log or known
    (`gpu_is_known`). A log that prints a pool but no KV memory gets its pool
    checked against that budget prediction, within 5%.
    """
    from kvsize.engines import estimate_engine

    settings = settings or settings_from_log(facts)
    rows: list[ComparisonRow] = []
    notes: list[str] = []
    if facts.startups > 1:
        notes.append(f"the log holds {facts.startups} engine startups; kvsize read the last one, from line "
                     f"{facts.startup_line}, and ignored the earlier ones")  # fmt: skip

    if facts.engine == "llama.cpp":
        pool_estimate = estimate_engine(model, gpu, settings)
        if facts.kv_size is not None:
            rows.append(ComparisonRow("KV cache size", facts.kv_size.bytes / MiB, pool_estimate.kv_cache_memory_bytes / MiB,
                                      "MiB", facts.kv_size.half_step_bytes / MiB, "cells x bytes per cell"))  # fmt: skip
        if facts.kv_cache_tokens is not None:
            rows.append(ComparisonRow("cells", facts.kv_cache_tokens, pool_estimate.kv_cache_tokens, "cells", 0,
                                      "context x sequences, padded"))  # fmt: skip
        if facts.swa_cells is not None and pool_estimate.sliding_window_tokens is not None:
            rows.append(ComparisonRow("SWA cells", facts.swa_cells, pool_estimate.sliding_window_tokens, "cells", 0,
                                      "window x sequences + n_ubatch, padded"))  # fmt: skip
        return LogComparison(facts, tuple(rows), pool_estimate, None, tuple(notes))

    pool_memory = printed_pool_memory(facts)
    pool_estimate = None
    pool_rows: list[ComparisonRow] = []
    if pool_memory is not None:
        pool_estimate, pool_rows = _pool_rows(facts, model, gpu, settings, pool_memory)
        rows.extend(pool_rows)
        if not pool_rows:
            notes.append(f"the log prints no token pool, blocks or concurrency; from the printed "
                         f"{pool_memory.bytes / GiB:.2f} GiB kvsize predicts {_pool_summary(pool_estimate)}")  # fmt: skip
    if facts.cpu_blocks is not None and pool_estimate is not None and pool_estimate.num_cpu_blocks is not None:
        rows.append(ComparisonRow("CPU blocks", facts.cpu_blocks, pool_estimate.num_cpu_blocks, "blocks", 0,
                                  "4 GiB swap / block bytes: checks the bytes per token"))  # fmt: skip

    budget_estimate = None
    gpu_memory_known = gpu_is_known or facts.total_gpu_memory is not None
    budget_possible = gpu_memory_known or (facts.weights is not None and facts.free_before_weights is not None)
    if facts.engine != "trtllm" and budget_possible:
        budget_estimate, budget_rows = _budget_rows(facts, model, gpu, settings, gpu_is_known, pool_memory)
        rows.extend(budget_rows)
    elif facts.weights is not None and facts.engine != "trtllm" and pool_memory is not None and pool_rows:
        notes.append("the log prints the weights but not the GPU's memory; pass --gpu to predict the available memory")
    if facts.engine == "trtllm" and facts.available_kv_memory is not None and facts.kv_size is not None \
            and pool_estimate is not None:  # fmt: skip
        predicted = pool_estimate.kv_cache_memory_bytes / GiB
        rows.append(ComparisonRow("KV cache memory", facts.kv_size.bytes / GiB, predicted, "GiB",
                                  facts.kv_size.half_step_bytes / GiB + 0.005, "fraction x printed free memory"))  # fmt: skip

    if not gpu_is_known and facts.engine == "vllm":
        assumed = _assumed_vllm_defaults(facts, model, budget_estimate is not None)
        if assumed:
            notes.append(f"without --gpu, kvsize takes vLLM's defaults on {gpu.name} for {' and '.join(assumed)}, "
                         "which the log does not print")  # fmt: skip
    comparison = LogComparison(facts, tuple(rows), pool_estimate, budget_estimate, tuple(notes))
    if not comparison.checked_rows:
        comparison = replace(comparison, unchecked_reason=_unchecked_reason(facts, pool_memory, gpu_memory_known))
    return comparison


def _pool_rows(facts: LogFacts, model: ModelSpec, gpu: GpuSpec, settings: EngineSettings,
               pool_memory: PrintedSize) -> tuple[EngineEstimate, list[ComparisonRow]]:  # fmt: skip
    """Predict the pool from the printed KV memory and pair it with each pool figure the log printed."""
    from kvsize.engines import estimate_engine

    pool_estimate = estimate_engine(model, gpu, _pool_settings(facts, settings, pool_memory.bytes))
    low_memory = max(0, pool_memory.bytes - pool_memory.half_step_bytes)
    low = estimate_engine(model, gpu, _pool_settings(facts, settings, low_memory))
    high = estimate_engine(model, gpu, _pool_settings(facts, settings, pool_memory.bytes + pool_memory.half_step_bytes))
    rounding = max(high.kv_cache_tokens - pool_estimate.kv_cache_tokens, pool_estimate.kv_cache_tokens - low.kv_cache_tokens)
    basis = "from the printed KV memory"
    rows = []
    if facts.kv_cache_tokens is not None:
        rows.append(ComparisonRow("KV cache tokens", facts.kv_cache_tokens, pool_estimate.kv_cache_tokens, "tokens",
                                  rounding + pool_estimate.block_size, basis))  # fmt: skip
    if facts.gpu_blocks is not None and pool_estimate.num_gpu_blocks is not None:
        block_rounding = max(high.num_gpu_blocks or 0, 0) - (low.num_gpu_blocks or 0)
        rows.append(ComparisonRow("GPU blocks", facts.gpu_blocks, pool_estimate.num_gpu_blocks, "blocks",
                                  block_rounding + 1, basis))  # fmt: skip
    if facts.max_concurrency is not None:
        spread = max(abs(high.max_concurrency - pool_estimate.max_concurrency),
                     abs(pool_estimate.max_concurrency - low.max_concurrency))  # fmt: skip
        one_block = pool_estimate.max_concurrency / max(1, pool_estimate.num_gpu_blocks or pool_estimate.kv_cache_tokens)
        rows.append(ComparisonRow("max concurrency", float(facts.max_concurrency), pool_estimate.max_concurrency, "x",
                                  spread + one_block + 0.005, basis))  # fmt: skip
    return pool_estimate, rows


def _budget_rows(facts: LogFacts, model: ModelSpec, gpu: GpuSpec, settings: EngineSettings, gpu_is_known: bool,
                 pool_memory: PrintedSize | None) -> tuple[EngineEstimate, list[ComparisonRow]]:  # fmt: skip
    """Predict the available KV memory from the weights and settings, and pair it with what the log printed.

    Without a printed KV memory, the pool kvsize cuts from its predicted
    memory is paired with the printed pool instead.
    """
    from kvsize.engines import estimate_engine

    budget_settings = settings
    weights_origin = "kvsize's weights estimate"
    if facts.weights is not None:
        budget_settings = replace(budget_settings, weights_bytes_per_gpu=facts.weights.bytes)
        weights_origin = "the printed weights"
    if facts.total_gpu_memory is not None:
        budget_settings = replace(budget_settings, gpu_memory_bytes=facts.total_gpu_memory.bytes)
    restated = False
    if facts.engine == "sglang" and facts.free_before_weights is not None and not gpu_is_known:
        # With no GPU spec, SGLang's printed free memory replaces the GPU's total. The
        # prediction then repeats the printed free-memory arithmetic, so it is not judged.
        budget_settings = replace(budget_settings, free_memory_before_weights_bytes=facts.free_before_weights.bytes)
        restated = facts.weights is not None
    budget_estimate = estimate_engine(model, gpu, budget_settings)

    rows = []
    terms = {term.name: term.bytes for term in budget_estimate.budget_terms}
    for figure, printed_term, term_name in (("activation peak", facts.activation_peak, "activation peak"),
                                            ("non-torch memory", facts.non_torch_memory, "non-torch memory"),
                                            ("CUDA graph memory", facts.cuda_graph_memory, "CUDA graphs")):  # fmt: skip
        if printed_term is not None and term_name in terms:
            rows.append(ComparisonRow(figure, printed_term.bytes / GiB, terms[term_name] / GiB, "GiB", None,
                                      "kvsize's estimate of this term", kind="term"))  # fmt: skip
    predicted = budget_estimate.kv_cache_memory_bytes / GiB
    if pool_memory is not None and restated:
        rows.append(ComparisonRow("available KV memory", pool_memory.bytes / GiB, predicted, "GiB", None,
                                  "restated from the printed free memory and weights, not predicted; "
                                  "pass --gpu for kvsize's own prediction", kind="restated"))  # fmt: skip
    elif pool_memory is not None:
        rows.append(ComparisonRow("available KV memory", pool_memory.bytes / GiB, predicted, "GiB",
                                  abs(pool_memory.bytes) * 0.05 / GiB, f"from {weights_origin} and the settings"))  # fmt: skip
    else:
        # No KV memory printed: check the printed pool against the pool of the predicted memory.
        basis = f"from kvsize's budget estimate ({weights_origin}); the log prints no KV memory"
        if facts.kv_cache_tokens is not None:
            rows.append(ComparisonRow("KV cache tokens", facts.kv_cache_tokens, budget_estimate.kv_cache_tokens,
                                      "tokens", facts.kv_cache_tokens * 0.05 + budget_estimate.block_size, basis))  # fmt: skip
        if facts.gpu_blocks is not None and budget_estimate.num_gpu_blocks is not None:
            rows.append(ComparisonRow("GPU blocks", facts.gpu_blocks, budget_estimate.num_gpu_blocks, "blocks",
                                      facts.gpu_blocks * 0.05 + 1, basis))  # fmt: skip
        if facts.max_concurrency is not None:
            rows.append(ComparisonRow("max concurrency", float(facts.max_concurrency), budget_estimate.max_concurrency,
                                      "x", float(facts.max_concurrency) * 0.05 + 0.005, basis))  # fmt: skip
    return budget_estimate, rows


def _pool_summary(estimate: EngineEstimate) -> str:
    parts = [f"{estimate.kv_cache_tokens:,} tokens"]
    if estimate.num_gpu_blocks is not None:
        parts.append(f"{estimate.num_gpu_blocks:,} blocks")
    parts.append(f"{estimate.max_concurrency:.2f}x at {estimate.max_model_len:,} tokens per request")
    return ", ".join(parts)


def _assumed_vllm_defaults(facts: LogFacts, model: ModelSpec, budget_predicted: bool) -> list[str]:
    """Name the vLLM defaults that depend on the GPU and that the log leaves to kvsize."""
    from kvsize.layers import LatentAttention

    assumed = []
    if facts.block_size is None and any(isinstance(layer, LatentAttention) for layer in model.layers):
        assumed.append("the MLA block size")
    if facts.vllm_v0:
        # V0's scheduler defaults depend on max_model_len alone.
        return assumed
    windowed = any(getattr(layer, "sliding_window", None) or getattr(layer, "attention_chunk_size", None)
                   for layer in model.layers)  # fmt: skip
    if facts.max_num_batched_tokens is None and (windowed or budget_predicted):
        assumed.append("max_num_batched_tokens")
    if facts.max_num_seqs is None and budget_predicted:
        assumed.append("max_num_seqs")
    return assumed


def _unchecked_reason(facts: LogFacts, pool_memory: PrintedSize | None, gpu_memory_known: bool) -> str:
    """Say why no printed figure could be checked, naming what the log does print."""
    pool_printed = any(value is not None for value in (facts.kv_cache_tokens, facts.gpu_blocks, facts.max_concurrency))
    if facts.engine == "trtllm":
        if pool_memory is not None:
            return ("the log prints the KV memory but not the blocks or tokens it became, and kvsize does not "
                    "predict TensorRT-LLM's free memory")  # fmt: skip
        return "the log prints the pool but not the free memory it was cut from"
    if pool_memory is not None and not gpu_memory_known:
        return (f"the log prints the KV memory ({pool_memory.bytes / GiB:.2f} GiB) but no token pool, blocks or "
                "concurrency to check against it, and not the GPU's memory to predict it from; pass --gpu "
                "to predict the KV memory")  # fmt: skip
    if pool_printed and not gpu_memory_known:
        return ("the log prints the pool but not the KV memory behind it or the GPU's memory; "
                "pass --gpu to predict the pool from kvsize's budget estimate")  # fmt: skip
    return "the log prints no figure kvsize can predict independently"


_MODEL_NAME_SUFFIXES = {"instruct", "chat", "it", "hf", "gguf", "fp8", "awq", "gptq", "base"}


def model_name_candidates(name: str) -> list[str]:
    """Return the names to try in the catalog for a model named in a log, most specific first.

    A path keeps its last component, and trailing release words (Instruct,
    Chat, GGUF, AWQ, ...) are dropped one at a time: `/srv/Qwen2.5-7B-Instruct`
    tries `Qwen2.5-7B-Instruct`, then `Qwen2.5-7B`.
    """
    cleaned = name.strip().strip("'\"")
    candidates = [cleaned]
    base = cleaned.rstrip("/").split("/")[-1]
    if base != cleaned:
        candidates.append(base)
    words = re.split(r"([-_ ])", base)
    while len(words) > 2 and words[-1].lower() in _MODEL_NAME_SUFFIXES:
        words = words[:-2]
        candidates.append("".join(words))
    return candidates


def resolve_log_model(facts: LogFacts, override: str | None) -> ModelSpec:
    """Load the model named by `--model`, or else the one the log names."""
    from kvsize.catalog import load_model
    from kvsize.errors import NotFoundError

    if override is not None:
        return load_model(override)
    if facts.model_name is None:
        raise InvalidInputError("the log does not name its model; pass --model with a catalog id or a spec file")
    for candidate in model_name_candidates(facts.model_name):
        try:
            return load_model(candidate)
        except NotFoundError:
            continue
    raise InvalidInputError(
        f"model {facts.model_name!r} from the log is not in the catalog; pass --model with a catalog id "
        "or a spec file (run 'kvsize models' to list the catalog)"
    )


__all__ = [
    "ComparisonRow",
    "LogComparison",
    "LogFacts",
    "PrintedSize",
    "compare_log",
    "detect_engine",
    "parse_log",
    "resolve_log_model",
    "settings_from_log",
]
