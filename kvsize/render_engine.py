"""Human-readable engine results: the `estimate --engine` table and the `kvsize log` comparison.

Rich is imported here and in kvsize.render only; the engine core never prints.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from kvsize.engine_logs import ComparisonRow, LogComparison
from kvsize.engines.common import ENGINE_TITLES, BudgetTerm, EngineEstimate
from kvsize.render import print_table
from kvsize.units import format_bytes

_WINDOW_LABELS = {
    "vllm": "Window tokens per request",
    "sglang": "Window pool tokens",
    "trtllm": "Window tokens",
    "llama.cpp": "Window cells",
}


def _term_text(term: BudgetTerm) -> str:
    sign = {1: "", -1: "- ", 0: "= "}[term.sign]
    text = f"{sign}{format_bytes(term.bytes)}"
    extras = [part for part in (term.note, "estimate" if term.is_estimate else "") if part]
    if extras:
        text += f" ({'; '.join(extras)})"
    return text


def _layout(result: EngineEstimate) -> str:
    """Name the parallel layout and the GPU, e.g. `TP 2 x PP 2 x NVIDIA H100 SXM5 80GB (4 GPUs)`."""
    settings = result.settings
    tp, pp, dp = settings.tensor_parallel_size, settings.pipeline_parallel_size, settings.data_parallel_size
    parts = [f"TP {tp}", f"PP {pp}"]
    num_gpus = tp * pp
    extra = ""
    if dp > 1 and settings.enable_dp_attention:
        extra = f", DP attention {dp}"
    elif dp > 1:
        parts.append(f"DP {dp:,}")
        num_gpus *= dp
    plural = "" if num_gpus == 1 else "s"
    return f"{' x '.join(parts)} x {result.base.gpu.name} ({num_gpus:,} GPU{plural}{extra})"


def engine_title(result: EngineEstimate) -> str:
    """Return the two title lines of `kvsize estimate --engine`: the layout, then the request."""
    settings = result.settings
    version = f" {settings.engine_version}" if settings.engine_version else ""
    engine_title = ENGINE_TITLES[result.engine]
    rules = f" ({result.rules})" if result.rules != engine_title else ""
    batch = settings.batch_size
    if result.engine == "llama.cpp":
        request = f"{batch:,} sequence{'' if batch == 1 else 's'} of {settings.context_tokens:,} tokens"
    else:
        request = f"{batch:,} request{'' if batch == 1 else 's'} of max_model_len {result.max_model_len:,} tokens"
    return (
        f"{result.base.model.name} on {_layout(result)}, as {engine_title}{version} allocates it{rules}\n"
        f"{request}, KV cache {result.kv_cache_dtype}"
    )


def engine_table(result: EngineEstimate) -> Table:
    """Build the table `kvsize estimate --engine` prints under `engine_title`."""
    table = Table(box=box.SIMPLE, show_header=False, pad_edge=False)
    table.add_column("quantity", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")

    table.add_row("KV per token per GPU", f"{result.kv_bytes_per_token_per_gpu:,} bytes in the engine's layout")
    for label, value in result.details:
        table.add_row(f"  {label}", value)
    for term in result.budget_terms:
        table.add_row(f"  {term.name}", _term_text(term))
    estimate_note = " (estimate)" if result.kv_cache_memory_is_estimate else ""
    table.add_row("KV cache memory", f"{format_bytes(result.kv_cache_memory_bytes)} per GPU{estimate_note}")
    unit = "cells" if result.engine == "llama.cpp" else "tokens"
    table.add_row("KV cache size", f"{result.kv_cache_tokens:,} {unit}")
    if result.num_gpu_blocks is not None:
        table.add_row("GPU blocks", f"{result.num_gpu_blocks:,} of {result.block_size} tokens")
    if result.num_cpu_blocks is not None:
        table.add_row("CPU blocks", f"{result.num_cpu_blocks:,} (4 GiB swap space)")
    if result.sliding_window_tokens is not None:
        table.add_row(_WINDOW_LABELS[result.engine], f"{result.sliding_window_tokens:,}")
    concurrency = f"{result.max_concurrency:.2f}x at {result.max_model_len:,} tokens per request"
    replicas = result.settings.data_parallel_size
    if replicas > 1:
        concurrency += f" per DP rank, {result.max_concurrency * replicas:.2f}x over {replicas:,} DP ranks"
    table.add_row("Max concurrency", concurrency)
    table.add_row("Fits", result.fit_reason)
    for note in result.notes:
        table.add_row("Note", note)
    return table


def print_titled_table(console: Console, title: str, table: Table) -> None:
    """Print title lines unwrapped, then the table: at its natural width off a terminal, with no trailing spaces."""
    for line in title.splitlines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    print_table(console, table)


def _format_value(row: ComparisonRow, value: float) -> str:
    if row.unit in ("tokens", "blocks", "cells"):
        return f"{value:,.0f}"
    if row.unit == "x":
        return f"{value:.2f}x"
    return f"{value:.2f} {row.unit}"


def _difference(row: ComparisonRow) -> str:
    relative = row.relative_difference
    absolute = _format_value(row, abs(row.difference))
    sign = "-" if row.difference < 0 else "+"
    text = f"{sign}{absolute}"
    if relative is not None:
        text += f" ({relative * 100:+.2f}%)"
    return text


def log_title(comparison: LogComparison, model_name: str, gpu_name: str) -> str:
    """Return the title line of `kvsize log`: engine, model, GPU and parallel layout."""
    facts = comparison.facts
    engine = ENGINE_TITLES.get(facts.engine or "", facts.engine or "?")
    version = f" {facts.engine_version}" if facts.engine_version else ""
    if facts.engine == "llama.cpp" and facts.engine_version:
        version = f" build {facts.engine_version}"
    layout = f"TP {facts.tensor_parallel_size or 1}, PP {facts.pipeline_parallel_size or 1}"
    return f"{engine}{version} log: {model_name} on {gpu_name}, {layout}"


def log_table(comparison: LogComparison) -> Table:
    """Build the printed-versus-predicted table `kvsize log` prints under `log_title`."""
    table = Table(box=box.SIMPLE, pad_edge=False)
    for column in ("figure", "printed", "kvsize", "difference", "agrees", "basis"):
        table.add_column(column, no_wrap=column != "basis", justify="right" if column in ("printed", "kvsize") else "left")
    for row in comparison.rows:
        agrees = {True: "yes", False: "no", None: "-"}[row.within_tolerance]
        if row.kind == "restated":
            agrees = "restated"
        table.add_row(row.figure, _format_value(row, row.printed), _format_value(row, row.predicted),
                      _difference(row), agrees, row.basis)  # fmt: skip
    return table
