"""Command-line options of `kvsize estimate --engine`, and their parsing into EngineSettings.

Option names mirror the engines' own flags where one exists. Values arrive as
strings and are parsed here, so every invalid value gets kvsize's one-line
error and exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Optional

import typer

from kvsize.errors import InvalidInputError

_PANEL = "Serving engine"
EngineOption = Annotated[Optional[str], typer.Option("--engine", rich_help_panel=_PANEL, help="Predict what vllm, sglang, trtllm or llama.cpp allocates, by that engine's rules. Default: the engine-neutral model.")]
EngineVersionOption = Annotated[Optional[str], typer.Option("--engine-version", rich_help_panel=_PANEL, help="vLLM, SGLang or TensorRT-LLM version whose rules apply, e.g. 0.10.1 (vLLM 'v0' for the V0 engine). Default: the newest rules kvsize knows.")]
MaxModelLenOption = Annotated[Optional[str], typer.Option("--max-model-len", rich_help_panel=_PANEL, help="Request length in tokens for max concurrency and the fit verdict (not llama.cpp). Default: --ctx.")]
MaxBatchedTokensOption = Annotated[Optional[str], typer.Option("--max-num-batched-tokens", rich_help_panel=_PANEL, help="vLLM and TensorRT-LLM: tokens per scheduler step; sets the activation estimate and vLLM's window allowance. Default: the engine's.")]
MaxNumSeqsOption = Annotated[Optional[str], typer.Option("--max-num-seqs", rich_help_panel=_PANEL, help="vLLM and TensorRT-LLM: sequences per scheduler step (sampler memory). Default: the engine's.")]
BlockSizeOption = Annotated[Optional[str], typer.Option("--block-size", "--page-size", rich_help_panel=_PANEL, help="Tokens per KV block or page: vLLM 1, 8, 16, 32, 64, 128 or 256; TensorRT-LLM a power of 2; SGLang any. Default: vLLM 16 (64 for MLA on FlashMLA GPUs), TensorRT-LLM 32, SGLang 1.")]
MemFractionOption = Annotated[Optional[str], typer.Option("--mem-fraction-static", rich_help_panel=_PANEL, help="SGLang: fraction of the memory free at start kept for weights and KV cache. Default: 0.88, an estimate of SGLang's choice.")]
FreeFractionOption = Annotated[Optional[str], typer.Option("--free-gpu-memory-fraction", rich_help_panel=_PANEL, help="TensorRT-LLM: fraction of the memory free after loading given to the KV cache. Default: 0.9.")]
PipelineParallelOption = Annotated[Optional[str], typer.Option("--pipeline-parallel-size", "--pp", "-pp", rich_help_panel=_PANEL, help="Pipeline stages. Each GPU stores only the layers of its stage. Default: 1.")]
DataParallelOption = Annotated[Optional[str], typer.Option("--data-parallel-size", "--dp", "-dp", rich_help_panel=_PANEL, help="vLLM and SGLang: data-parallel replicas, each with its own pool, sharing --batch; with --enable-dp-attention (SGLang) attention TP is tp / dp. Default: 1.")]
DpAttentionOption = Annotated[bool, typer.Option("--enable-dp-attention", rich_help_panel=_PANEL, help="SGLang: split attention by data parallelism, so each rank stores kv_heads / (tp / dp) heads.")]
KvCacheMemoryOption = Annotated[Optional[str], typer.Option("--kv-cache-memory", rich_help_panel=_PANEL, help="KV memory per GPU you already know, e.g. 35.65GiB; skips the overhead estimate (llama.cpp: the memory free for its cache).")]
EnforceEagerOption = Annotated[bool, typer.Option("--enforce-eager", rich_help_panel=_PANEL, help="vLLM: no CUDA graphs, so none of their memory is subtracted.")]


@dataclass(frozen=True)
class EngineFlags:
    """Raw engine option values as typed on the command line."""

    engine: str | None
    engine_version: str | None = None
    max_model_len: str | None = None
    max_num_batched_tokens: str | None = None
    max_num_seqs: str | None = None
    block_size: str | None = None
    mem_fraction_static: str | None = None
    free_gpu_memory_fraction: str | None = None
    pipeline_parallel_size: str | None = None
    data_parallel_size: str | None = None
    enable_dp_attention: bool = False
    kv_cache_memory: str | None = None
    enforce_eager: bool = False

    def options_in_use(self) -> dict[str, object]:
        """Map each engine option given on the command line to its value, by its long name."""
        options = {
            "--engine-version": self.engine_version, "--max-model-len": self.max_model_len,
            "--max-num-batched-tokens": self.max_num_batched_tokens, "--max-num-seqs": self.max_num_seqs,
            "--block-size": self.block_size, "--mem-fraction-static": self.mem_fraction_static,
            "--free-gpu-memory-fraction": self.free_gpu_memory_fraction,
            "--pipeline-parallel-size": self.pipeline_parallel_size, "--data-parallel-size": self.data_parallel_size,
            "--enable-dp-attention": self.enable_dp_attention, "--kv-cache-memory": self.kv_cache_memory,
            "--enforce-eager": self.enforce_eager,
        }  # fmt: skip
        return {name: value for name, value in options.items() if value not in (None, False)}


_NO_FRACTION = "llama.cpp has no memory fraction because it allocates the cache for --ctx x --batch whole"

# Options that some engines do not read, with what each of those engines uses instead.
_UNUSED_BY = {
    "--gpu-memory-utilization": {
        "sglang": "SGLang's fraction is --mem-fraction-static",
        "trtllm": "TensorRT-LLM's fraction is --free-gpu-memory-fraction",
        "llama.cpp": _NO_FRACTION,
    },
    "--mem-fraction-static": {
        "vllm": "vLLM's fraction is --gpu-memory-utilization",
        "trtllm": "TensorRT-LLM's fraction is --free-gpu-memory-fraction",
        "llama.cpp": _NO_FRACTION,
    },
    "--free-gpu-memory-fraction": {
        "vllm": "vLLM's fraction is --gpu-memory-utilization",
        "sglang": "SGLang's fraction is --mem-fraction-static",
        "llama.cpp": _NO_FRACTION,
    },
    "--enforce-eager": {
        "sglang": "SGLang's switch is --disable-cuda-graph, and kvsize's SGLang budget has no CUDA-graph term",
        "trtllm": "it is vLLM's switch, and kvsize's TensorRT-LLM budget has no CUDA-graph term",
        "llama.cpp": "it is vLLM's switch, and kvsize's llama.cpp budget has no CUDA-graph term",
    },
    "--enable-dp-attention": {
        "vllm": "it is SGLang's switch; with --data-parallel-size each vLLM replica keeps its own pool",
        "trtllm": "kvsize does not model TensorRT-LLM's attention data parallelism (enable_attention_dp)",
        "llama.cpp": "llama.cpp has no data parallelism",
    },
    "--data-parallel-size": {
        "trtllm": "kvsize's TensorRT-LLM profile sizes one replica of TP x PP",
        "llama.cpp": "a llama.cpp server is one replica",
    },
    "--max-model-len": {
        "llama.cpp": "llama.cpp's context per sequence is --ctx, and its -c is --ctx x --batch",
    },
    "--max-num-batched-tokens": {
        "sglang": "SGLang's budget has no activation term, so its --chunked-prefill-size does not change the pool",
        "llama.cpp": "llama.cpp's batch is --ubatch-size, which kvsize takes as 512",
    },
    "--max-num-seqs": {
        "sglang": "SGLang's --max-running-requests does not change its pool",
        "llama.cpp": "llama.cpp's parallel sequences (-np) are --batch",
    },
    "--block-size": {
        "llama.cpp": "llama.cpp has no blocks and pads its cells to 256 with flash attention, 32 without",
    },
}

# vllm/config/cache.py BlockSize: 1 to 128 in vLLM 0.9 and 0.10, 256 added later.
VLLM_BLOCK_SIZES = (1, 8, 16, 32, 64, 128, 256)


def _positive_int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    from kvsize.options import parse_positive_int

    return parse_positive_int(text, option)


def _fraction(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    from kvsize.options import parse_fraction

    return parse_fraction(text, option)


def reject_options_without_engine_meaning(options: dict[str, object]) -> None:
    """Reject estimate options that an engine profile would silently ignore.

    `options` maps each option name to its value, or to None (or False) when
    the user did not set it.
    """
    used = [name for name, value in options.items() if value not in (None, False)]
    if used:
        raise InvalidInputError(f"{', '.join(used)} cannot be combined with --engine: the engine profiles model "
                                "the engine's own cache formats and budget; drop the option or the --engine flag")  # fmt: skip


def reject_engine_options_without_engine(flags: EngineFlags) -> None:
    """Reject engine options given without --engine, which the engine-neutral estimate would ignore."""
    in_use = list(flags.options_in_use())
    if in_use:
        names = in_use[0] if len(in_use) == 1 else f"{', '.join(in_use[:-1])} and {in_use[-1]}"
        verb = "needs" if len(in_use) == 1 else "need"
        raise InvalidInputError(f"{names} {verb} --engine vllm, sglang, trtllm or llama.cpp; without "
                                "an engine kvsize sizes the engine-neutral budget of --gpu-memory-utilization "
                                "and --reserve")  # fmt: skip


def reject_options_unused_by_engine(engine: str, flags: EngineFlags, gpu_memory_utilization: str | None) -> None:
    """Reject an option the chosen engine's profile does not read, naming what that engine uses instead."""
    from kvsize.engines.common import ENGINE_TITLES

    in_use = dict(flags.options_in_use())
    if gpu_memory_utilization is not None:
        in_use["--gpu-memory-utilization"] = gpu_memory_utilization
    for option in in_use:
        reason = _UNUSED_BY.get(option, {}).get(engine)
        if reason is not None:
            raise InvalidInputError(f"{option} is not used with --engine {engine}: {reason}; "
                                    f"drop {option} to size {ENGINE_TITLES[engine]}")  # fmt: skip


def _block_size(text: str | None, engine: str) -> int | None:
    """Parse --block-size and check it against the sizes the engine accepts."""
    value = _positive_int(text, "--block-size")
    if value is None:
        return None
    if engine == "vllm" and value not in VLLM_BLOCK_SIZES:
        choices = ", ".join(str(size) for size in VLLM_BLOCK_SIZES)
        raise InvalidInputError(f"invalid value for --block-size: {value}; vLLM's --block-size takes one of {choices} "
                                "(256 only in recent versions)")  # fmt: skip
    if engine == "trtllm" and value & (value - 1):
        raise InvalidInputError(f"invalid value for --block-size: {value}; TensorRT-LLM's tokens_per_block must be "
                                "a power of 2, such as 32 or 64")  # fmt: skip
    return value


def engine_settings(flags: EngineFlags, ctx: str, batch: str, kv_cache_dtype: str | None,
                    tensor_parallel_size: str, gpu_memory_utilization: str | None):  # type: ignore[no-untyped-def]  # fmt: skip
    """Parse the engine flags and the shared estimate options into EngineSettings.

    Options the chosen engine does not read are rejected, and so are versions
    and block sizes it does not have.
    """
    from kvsize.engines import EngineSettings, parse_engine_name
    from kvsize.engines.common import check_engine_version
    from kvsize.units import parse_byte_size, parse_token_count

    assert flags.engine is not None
    engine = parse_engine_name(flags.engine)
    reject_options_unused_by_engine(engine, flags, gpu_memory_utilization)
    if flags.engine_version is not None:
        check_engine_version(engine, flags.engine_version)
    max_model_len = parse_token_count(flags.max_model_len, "--max-model-len") if flags.max_model_len is not None else None
    batched = (parse_token_count(flags.max_num_batched_tokens, "--max-num-batched-tokens")
               if flags.max_num_batched_tokens is not None else None)  # fmt: skip
    kv_memory = parse_byte_size(flags.kv_cache_memory, "--kv-cache-memory") if flags.kv_cache_memory is not None else None
    return EngineSettings(
        engine=engine,
        engine_version=flags.engine_version.strip() if flags.engine_version is not None else None,
        context_tokens=parse_token_count(ctx, "--ctx"),
        batch_size=_positive_int(batch, "--batch") or 1,
        max_model_len=max_model_len,
        max_num_batched_tokens=batched,
        max_num_seqs=_positive_int(flags.max_num_seqs, "--max-num-seqs"),
        block_size=_block_size(flags.block_size, engine),
        kv_cache_dtype=kv_cache_dtype,
        tensor_parallel_size=_positive_int(tensor_parallel_size, "--tensor-parallel-size") or 1,
        pipeline_parallel_size=_positive_int(flags.pipeline_parallel_size, "--pipeline-parallel-size") or 1,
        data_parallel_size=_positive_int(flags.data_parallel_size, "--data-parallel-size") or 1,
        enable_dp_attention=flags.enable_dp_attention,
        gpu_memory_utilization=_fraction(gpu_memory_utilization, "--gpu-memory-utilization"),
        mem_fraction_static=_fraction(flags.mem_fraction_static, "--mem-fraction-static"),
        free_gpu_memory_fraction=_fraction(flags.free_gpu_memory_fraction, "--free-gpu-memory-fraction"),
        kv_cache_memory_bytes=kv_memory,
        enforce_eager=flags.enforce_eager,
    )
