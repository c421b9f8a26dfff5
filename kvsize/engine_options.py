"""Command-line options of `kvsize estimate --engine`, and their parsing into EngineSettings.

Option names mirror the engines' own flags where one exists. Values arrive as
strings and are parsed here, so every invalid value gets kvsize's one-line
error and exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Optional

import typer

from kvsize.errors import InvalidInputError

_PANEL = "Serving engine"
EngineOption = Annotated[Optional[str], typer.Option("--engine", rich_help_panel=_PANEL, help="Predict what vllm, sglang, trtllm or llama.cpp allocates, by that engine's rules. Default: the engine-neutral model.")]
EngineVersionOption = Annotated[Optional[str], typer.Option("--engine-version", rich_help_panel=_PANEL, help="Engine version whose rules apply, e.g. 0.10.1 (vLLM 'v0' for the V0 engine). Default: the newest rules kvsize knows.")]
MaxModelLenOption = Annotated[Optional[str], typer.Option("--max-model-len", rich_help_panel=_PANEL, help="Maximum request length in tokens, for max concurrency. Default: --ctx.")]
MaxBatchedTokensOption = Annotated[Optional[str], typer.Option("--max-num-batched-tokens", rich_help_panel=_PANEL, help="Tokens per scheduler step; sets the activation estimate and vLLM's window allowance. Default: the engine's.")]
MaxNumSeqsOption = Annotated[Optional[str], typer.Option("--max-num-seqs", rich_help_panel=_PANEL, help="Sequences per scheduler step (sampler memory). Default: the engine's.")]
BlockSizeOption = Annotated[Optional[str], typer.Option("--block-size", "--page-size", rich_help_panel=_PANEL, help="Tokens per KV block or page. Default: vLLM 16 (64 for MLA on FlashMLA GPUs), TensorRT-LLM 32, SGLang 1.")]
MemFractionOption = Annotated[Optional[str], typer.Option("--mem-fraction-static", rich_help_panel=_PANEL, help="SGLang: fraction of the memory free at start kept for weights and KV cache. Default: 0.88, an estimate of SGLang's choice.")]
FreeFractionOption = Annotated[Optional[str], typer.Option("--free-gpu-memory-fraction", rich_help_panel=_PANEL, help="TensorRT-LLM: fraction of the memory free after loading given to the KV cache. Default: 0.9.")]
PipelineParallelOption = Annotated[str, typer.Option("--pipeline-parallel-size", "--pp", "-pp", rich_help_panel=_PANEL, help="Pipeline stages. Each GPU stores only the layers of its stage.")]
DataParallelOption = Annotated[str, typer.Option("--data-parallel-size", "--dp", "-dp", rich_help_panel=_PANEL, help="Data-parallel replicas; with --enable-dp-attention (SGLang) attention TP is tp / dp.")]
DpAttentionOption = Annotated[bool, typer.Option("--enable-dp-attention", rich_help_panel=_PANEL, help="SGLang: split attention by data parallelism, so each rank stores kv_heads / (tp / dp) heads.")]
KvCacheMemoryOption = Annotated[Optional[str], typer.Option("--kv-cache-memory", rich_help_panel=_PANEL, help="KV memory per GPU you already know, e.g. 35.65GiB; skips the overhead estimate.")]
EnforceEagerOption = Annotated[bool, typer.Option("--enforce-eager", rich_help_panel=_PANEL, help="vLLM: no CUDA graphs, so none of their memory is subtracted.")]


@dataclass(frozen=True)
class EngineFlags:
    """Raw engine option values as typed on the command line."""

    engine: str
    engine_version: str | None = None
    max_model_len: str | None = None
    max_num_batched_tokens: str | None = None
    max_num_seqs: str | None = None
    block_size: str | None = None
    mem_fraction_static: str | None = None
    free_gpu_memory_fraction: str | None = None
    pipeline_parallel_size: str = "1"
    data_parallel_size: str = "1"
    enable_dp_attention: bool = False
    kv_cache_memory: str | None = None
    enforce_eager: bool = False


def _positive_int(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    cleaned = text.strip()
    if not cleaned.isascii() or not cleaned.isdigit() or int(cleaned) < 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a whole number of at least 1")
    return int(cleaned)


def _fraction(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a number in (0, 1], e.g. 0.9") from None
    if not value.is_finite() or not 0 < value <= 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be greater than 0 and at most 1")
    return value


def reject_options_without_engine_meaning(options: dict[str, object]) -> None:
    """Reject estimate options that an engine profile would silently ignore.

    `options` maps each option name to its value, or to None (or False) when
    the user did not set it.
    """
    used = [name for name, value in options.items() if value not in (None, False)]
    if used:
        raise InvalidInputError(f"{', '.join(used)} cannot be combined with --engine: the engine profiles model "
                                "the engine's own cache formats and budget; drop the option or the --engine flag")  # fmt: skip


def engine_settings(flags: EngineFlags, ctx: str, batch: str, kv_cache_dtype: str | None,
                    tensor_parallel_size: str, gpu_memory_utilization: str):  # type: ignore[no-untyped-def]  # fmt: skip
    """Parse the engine flags and the shared estimate options into EngineSettings."""
    from kvsize.engines import EngineSettings, parse_engine_name
    from kvsize.units import parse_byte_size, parse_token_count

    max_model_len = parse_token_count(flags.max_model_len, "--max-model-len") if flags.max_model_len else None
    batched = parse_token_count(flags.max_num_batched_tokens, "--max-num-batched-tokens") if flags.max_num_batched_tokens else None
    kv_memory = parse_byte_size(flags.kv_cache_memory, "--kv-cache-memory") if flags.kv_cache_memory else None
    return EngineSettings(
        engine=parse_engine_name(flags.engine),
        engine_version=flags.engine_version,
        context_tokens=parse_token_count(ctx, "--ctx"),
        batch_size=_positive_int(batch, "--batch") or 1,
        max_model_len=max_model_len,
        max_num_batched_tokens=batched,
        max_num_seqs=_positive_int(flags.max_num_seqs, "--max-num-seqs"),
        block_size=_positive_int(flags.block_size, "--block-size"),
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
